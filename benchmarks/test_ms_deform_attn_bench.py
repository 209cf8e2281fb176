"""pytest-benchmark smoke tests of ms_deform_attn (CI runs them once, ``--benchmark-disable``)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_ms_deform_attn as bench
from benchmarks._harness import run_case

CPU = torch.device("cpu")
PROVIDER_NAMES = {"torch", "torch.compile", "triton"}


def tiny_inputs(fused: bool, device=CPU, dtype=torch.float32) -> dict[str, object]:
    return bench.make_inputs_fn(2, 7, 2, 12, [(5, 6), (3, 3), (1, 2)], 2, fused)(device, dtype)


def _fwd_bwd(fn, inputs):
    out = fn(**inputs)
    leaves = [v for v in inputs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    grads = torch.autograd.grad(out.square().sum(), leaves)
    return out, grads


@pytest.mark.parametrize("fused", [False, True], ids=["weights", "fused"])
def test_bench_reference_cpu(benchmark, fused):
    inputs = tiny_inputs(fused)
    fn = bench.PROVIDERS[fused]["torch"]
    out, grads = benchmark(_fwd_bwd, fn, inputs)
    assert out.shape == (2, 7, 2 * 12) and len(grads) == 3
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_cases_cover_providers_and_groups():
    for device in (CPU, torch.device("cuda")):
        cs = bench.cases(device)
        assert {c.group for c in cs} == {"model", "sweep"}
        assert {c.op for c in cs if c.group == "model"} == {
            "ms_deform_attn",
            "ms_deform_attn_fused",
            "ms_deform_attn_offsets",
        }
        for c in cs:
            assert set(c.providers) == PROVIDER_NAMES and c.baseline == "torch"
            assert "not installable" in c.notes["deformable_detr_cuda"]
    gpu_model = [c.shape for c in bench.cases(torch.device("cuda")) if c.group == "model"]
    assert any("encoder B=5 Q=4820 H=8 D=32 L=4 P=4" in s for s in gpu_model)
    assert any("decoder B=5 Q=100" in s for s in gpu_model)


def test_offsets_case_inputs_and_bandwidth_rows_cpu():
    """The model's path: reference points in float32, offsets in the case's dtype; forward
    rows carry bandwidth columns, "unmeasured" on a CPU."""
    case = bench._case("model", "tiny", 1, 5, 2, 8, [(4, 3), (2, 2)], 2, True, (torch.float32,),
                       offsets=True)  # fmt: skip
    inputs = case.make_inputs(CPU, torch.float16)
    assert inputs["reference_points"].dtype == torch.float32
    assert inputs["sampling_offsets"].dtype == torch.float16
    case.providers.pop("torch.compile")
    rows = run_case(case, CPU, torch.float32, reps=1, warmup=0)
    fwd = [r for r in rows if r["provider"] == "torch" and r["mode"] == "fwd"]
    assert fwd and fwd[0]["gb_s"] == "unmeasured" == fwd[0]["pct_peak"]
    out = torch.empty(1, 5, 16)
    want = sum(t.numel() * t.element_size() for t in inputs.values()) + out.numel() * 4
    assert bench.min_bytes(inputs, out) == want


def test_run_case_smoke_cpu():
    case = bench._case("sweep", "tiny", 1, 5, 2, 8, [(4, 3), (2, 2)], 2, True, (torch.float32,))
    case.providers.pop("torch.compile")  # compiling takes longer than this smoke test should
    rows = run_case(case, CPU, torch.float32, reps=1, warmup=0)
    assert {(r["provider"], r["mode"]) for r in rows if r.get("ms")} == {
        ("torch", "fwd"),
        ("torch", "fwd+bwd"),
    }
    triton_rows = [r for r in rows if r["provider"] == "triton"]
    assert triton_rows and all(r["ms"] is None for r in triton_rows)  # GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("fused", [False, True], ids=["weights", "fused"])
def test_bench_triton_gpu(benchmark, fused, dtype):
    device = torch.device("cuda")
    shapes = bench.level_shapes(360, 640)
    inputs = bench.make_inputs_fn(5, None, 8, 32, shapes, 4, fused)(device, dtype)
    out, _ = benchmark(_fwd_bwd, bench.PROVIDERS[fused]["triton"], inputs)
    ref = bench.PROVIDERS[fused]["torch"](**inputs)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
