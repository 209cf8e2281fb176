"""gmpvis.kernels._launch: the device guard, the target architecture, launch recording."""

from __future__ import annotations

import contextlib

import pytest
import torch

from gmpvis import kernels
from gmpvis.kernels import _launch, use_backend
from gmpvis.kernels.ops import sinkhorn as sk


class _Kernel:
    """Stands for a JIT function: ``kernel[grid](*args)`` records the current device."""

    def __init__(self, current):
        self.calls = []
        self.current = current

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((grid, self.current(), args, kwargs))


def test_launch_runs_under_the_tensors_cuda_device(monkeypatch):
    """Triton launches on torch.cuda.current_device(): launch() sets the tensors' device
    around the launch (checked without a GPU by stubbing torch.cuda.device)."""
    current = ["cuda:0"]

    @contextlib.contextmanager
    def fake_device(device):
        previous = current[0]
        current[0] = str(device)
        try:
            yield
        finally:
            current[0] = previous

    monkeypatch.setattr(torch.cuda, "device", fake_device)
    kernel = _Kernel(lambda: current[0])
    _launch.launch(kernel, (3,), 1, 2, device=torch.device("cuda:1"), BLOCK=4)
    assert kernel.calls == [((3,), "cuda:1", (1, 2), {"BLOCK": 4})]
    assert current[0] == "cuda:0"  # restored
    _launch.launch(kernel, (1,), device=torch.device("cpu"))  # no guard on the CPU
    assert kernel.calls[-1][1] == "cuda:0"


def test_recording_answers_the_arch_and_runs_nothing():
    arch = _launch.ARCHS[89]
    meta = torch.empty(1, 100, 100, device="meta")
    with _launch.recording(arch) as launches:
        assert _launch.arch_for(torch.device("cuda:3")) is arch
        sk._forward(meta, 5, 1.0, None, None, 0.0)
    assert [lc.kernel.__name__ for lc in launches] == ["_sinkhorn_fwd_kernel"]
    assert launches[0].grid == (1,) and launches[0].kwargs["BLOCK_M"] == 128
    assert _launch.arch_for(torch.device("cpu")) is _launch.INTERPRETER  # restored


def test_arch_table_shared_memory_limits():
    """The limits the compile report checks against (bytes a block may opt in to)."""
    assert {c: a.smem_per_block // 1024 for c, a in _launch.ARCHS.items()} == {
        80: 163,
        89: 99,
        90: 227,
    }


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_gpu_every_op_on_a_non_default_device():
    """Every op on cuda:1 while cuda:0 is current matches the same op on the CPU reference."""
    device = torch.device("cuda:1")
    torch.cuda.set_device(0)
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    with use_backend("triton"):
        scores = rand(2, 5, 7)
        out = kernels.sinkhorn(scores, 5, dustbin=0.0)
        torch.testing.assert_close(
            out.cpu(), kernels.reference.sinkhorn(scores.cpu(), 5, dustbin=0.0)
        )
        value, shapes = rand(1, 6, 2, 8), torch.tensor([[2, 3]], device=device)
        starts = torch.zeros(1, dtype=torch.int64, device=device)
        loc, attn = torch.rand(1, 4, 2, 1, 2, 2, generator=g).to(device), rand(1, 4, 2, 1, 2)
        got = kernels.ms_deform_attn_fused(value, shapes, starts, loc, attn)
        want = kernels.reference.ms_deform_attn_fused(
            value.cpu(), shapes.cpu(), starts.cpu(), loc.cpu(), attn.cpu()
        )
        torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-4)
        x, off, w = rand(1, 4, 5, 5), rand(1, 18, 5, 5), rand(3, 4, 3, 3)
        got = kernels.deform_conv2d(x, off, w, padding=1)
        want = kernels.reference.deform_conv2d(x.cpu(), off.cpu(), w.cpu(), padding=1)
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)
    assert torch.cuda.current_device() == 0
