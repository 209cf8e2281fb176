"""pytest-benchmark smoke tests of gm_affinity (CI runs them once, ``--benchmark-disable``)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_gm_affinity as bench
from benchmarks._harness import run_case

CPU = torch.device("cpu")


def tiny_inputs(device: torch.device, dtype: torch.dtype = torch.float32) -> dict[str, object]:
    return bench.make_inputs_fn(2, 5, 4, 3, 6)(device, dtype)


def _fwd_bwd(fn, inputs):
    out = fn(**inputs)
    leaves = [v for v in inputs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    grads = torch.autograd.grad(out.square().sum(), leaves)
    return out, grads


@pytest.mark.parametrize("provider", ["torch", "dense"])
def test_bench_reference_providers_cpu(benchmark, provider):
    fn = {"torch": bench.torch_provider, "dense": bench.dense_provider}[provider]
    inputs = tiny_inputs(CPU)
    out, grads = benchmark(_fwd_bwd, fn, inputs)
    assert out.shape == (2, 5, 4) and len(grads) == 5
    assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out, bench.torch_provider(**inputs), atol=1e-5, rtol=1e-5)


def test_cases_cover_providers_and_groups():
    for device in (CPU, torch.device("cuda")):
        cs = bench.cases(device)
        assert {c.group for c in cs} == {"model", "sweep"}
        model = [c for c in cs if c.group == "model"]
        assert len(model) == 1
        assert set(model[0].providers) == {"torch", "torch.compile", "triton", "dense"}
        for c in cs:  # every provider present or explained
            for p in ("torch", "torch.compile", "triton", "dense"):
                assert p in c.providers or p in c.notes, (c.shape, p)
            assert c.baseline in c.providers
    gpu_model = [c for c in bench.cases(torch.device("cuda")) if c.group == "model"][0]
    assert "n1=32 n2=32" in gpu_model.shape


def test_run_case_smoke_cpu():
    case = bench.Case(
        op="gm_affinity",
        shape="tiny",
        make_inputs=bench.make_inputs_fn(2, 4, 3, 5, 3),
        providers={"torch": bench.torch_provider, "dense": bench.dense_provider},
    )
    rows = run_case(case, CPU, torch.float32, reps=1, warmup=0)
    assert {(r["provider"], r["mode"]) for r in rows} == {
        ("torch", "fwd"),
        ("torch", "fwd+bwd"),
        ("dense", "fwd"),
        ("dense", "fwd+bwd"),
    }
    dense = [r for r in rows if r["provider"] == "dense"]
    assert all(r["max_err"] < 1e-5 for r in dense)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bench_triton_gpu(benchmark, dtype):
    device = torch.device("cuda")
    inputs = bench.make_inputs_fn(4, 32, 32, 16, 256)(device, dtype)
    out, _ = benchmark(_fwd_bwd, bench.triton_provider, inputs)
    ref = bench.torch_provider(**inputs)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
