"""pytest-benchmark smoke tests of sinkhorn (CI runs them once, ``--benchmark-disable``)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_sinkhorn as bench
from benchmarks._harness import run_case

CPU = torch.device("cpu")


def _fwd_bwd(fn, inputs):
    out = fn(**inputs)
    (grad,) = torch.autograd.grad(out.square().sum(), inputs["scores"])
    return out, grad


@pytest.mark.parametrize("dustbin", [None, 0.0])
def test_bench_reference_provider_cpu(benchmark, dustbin):
    inputs = bench.make_inputs_fn(3, 5, 4, 6, tau=0.5, dustbin=dustbin, masked=True)(
        CPU, torch.float32
    )
    out, grad = benchmark(_fwd_bwd, bench.torch_provider, inputs)
    extra = dustbin is not None
    assert out.shape == (3, 5 + extra, 4 + extra)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    # the last half step normalises the columns: each real one sums to 1, masked ones to 0
    cols = out[:, :, :4].sum(1)
    torch.testing.assert_close(cols, inputs["col_mask"].float(), atol=1e-5, rtol=0)
    if extra:  # the dustbin column holds the mass of the real rows
        real_rows = inputs["row_mask"].sum(1).float()
        torch.testing.assert_close(out[:, :, 4].sum(1), real_rows, atol=1e-4, rtol=0)


def test_cases_cover_providers_and_groups():
    for device in (CPU, torch.device("cuda")):
        cs = bench.cases(device)
        assert {c.group for c in cs} == {"model", "sweep"}
        for c in cs:  # every provider present or explained
            for p in ("torch", "torch.compile", "triton"):
                assert p in c.providers or p in c.notes, (c.shape, p)
            assert c.baseline in c.providers
    gpu = bench.cases(torch.device("cuda"))
    shapes = {c.shape for c in gpu if c.group == "model"}
    assert "B=64 n1=64 n2=64 iters=50" in shapes  # the 20x target case
    sweep = [c.shape for c in gpu if c.group == "sweep"]
    assert any("n1=16 " in s for s in sweep) and any("n1=128 " in s for s in sweep)
    assert any("iters=10" in s for s in sweep) and any("iters=100" in s for s in sweep)


def test_run_case_smoke_cpu():
    case = bench.Case(
        op="sinkhorn",
        shape="tiny",
        make_inputs=bench.make_inputs_fn(2, 4, 3, 3, dustbin=0.5),
        providers={"torch": bench.torch_provider},
    )
    rows = run_case(case, CPU, torch.float32, reps=1, warmup=0)
    assert {(r["provider"], r["mode"]) for r in rows} == {("torch", "fwd"), ("torch", "fwd+bwd")}
    assert all(r["ms"] > 0 for r in rows)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bench_triton_gpu(benchmark, dtype):
    device = torch.device("cuda")
    inputs = bench.make_inputs_fn(64, 64, 64, 50)(device, dtype)
    out, _ = benchmark(_fwd_bwd, bench.triton_provider, inputs)
    ref = bench.torch_provider(**inputs)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out, ref, atol=tol, rtol=0)
