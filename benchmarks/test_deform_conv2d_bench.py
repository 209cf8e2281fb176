"""pytest-benchmark smoke tests of deform_conv2d (CI runs them once, ``--benchmark-disable``)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_deform_conv2d as bench
from benchmarks._harness import run_case

CPU = torch.device("cpu")
PROVIDER_NAMES = {"torchvision", "torch", "torch.compile", "triton"}


def tiny_inputs(device=CPU, dtype=torch.float32, **conv) -> dict[str, object]:
    return bench.make_inputs_fn(2, 6, 7, 9, 4, **conv)(device, dtype)


def _fwd_bwd(fn, inputs):
    out = fn(**inputs)
    leaves = [v for v in inputs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    grads = torch.autograd.grad(out.square().sum(), leaves)
    return out, grads


@pytest.mark.parametrize("provider", ["torch", "torchvision"])
def test_bench_cpu_providers(benchmark, provider):
    inputs = tiny_inputs(groups=2, g_off=3, stride=2)
    out, grads = benchmark(_fwd_bwd, bench.PROVIDERS[provider], inputs)
    assert out.shape == (2, 4, 4, 5) and len(grads) == 5
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    if provider == "torch":  # the reference agrees with torchvision on the benchmark inputs
        expected = bench.PROVIDERS["torchvision"](**inputs)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_cases_cover_providers_and_groups():
    for device in (CPU, torch.device("cuda")):
        cs = bench.cases(device)
        assert {c.group for c in cs} == {"model", "sweep"}
        for c in cs:
            assert set(c.providers) == PROVIDER_NAMES and c.baseline == "torchvision"
            assert next(iter(c.providers)) == "torchvision"  # errors are measured against it
    gpu_model = [c.shape for c in bench.cases(torch.device("cuda")) if c.group == "model"]
    assert any("pixdec s8 N=5 C=256->256 45x80 k=3" in s for s in gpu_model)
    assert any("pixdec s4 N=5 C=256->256 90x160 k=3" in s for s in gpu_model)


def test_run_case_smoke_cpu():
    case = bench._case("sweep", "tiny", 1, 6, 5, 7, 5, (torch.float32,), g_off=2)
    case.providers.pop("torch.compile")  # compiling takes longer than this smoke test should
    rows = run_case(case, CPU, torch.float32, reps=1, warmup=0)
    timed = {(r["provider"], r["mode"]) for r in rows if r.get("ms")}
    assert timed == {(p, m) for p in ("torchvision", "torch") for m in ("fwd", "fwd+bwd")}
    torch_fwd = next(r for r in rows if r["provider"] == "torch" and r["mode"] == "fwd")
    assert torch_fwd["max_err"] < 1e-5  # against torchvision, the baseline
    triton_rows = [r for r in rows if r["provider"] == "triton"]
    assert triton_rows and all(r["ms"] is None for r in triton_rows)  # GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_bench_triton_gpu(benchmark, dtype):
    device = torch.device("cuda")
    inputs = bench.make_inputs_fn(5, 256, 45, 80, 256)(device, dtype)
    out, _ = benchmark(_fwd_bwd, bench.PROVIDERS["triton"], inputs)
    ref = bench.PROVIDERS["torchvision"](**inputs)
    tol = 1e-3 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
