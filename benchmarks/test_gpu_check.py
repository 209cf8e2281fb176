"""make gpu-check: the dry run without a GPU, and the summary of the kernel benchmark rows."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is for machines without CUDA")
def test_without_a_gpu_says_what_it_would_run_and_fails(capsys):
    assert gpu_check.main([]) == 2
    out = capsys.readouterr().out
    assert "no CUDA device" in out and "pytest -q -m gpu" in out
    assert "benchmarks.kernels --group model" in out and "bf16+compile+graphs" in out


def test_kernel_summary_speedups_and_bandwidth():
    rows = [
        {"op": "x", "shape": "s", "dtype": "float32", "mode": "fwd", "provider": "torch",
         "ms": 4.0},
        {"op": "x", "shape": "s", "dtype": "float32", "mode": "fwd", "provider": "torchvision",
         "ms": 2.0},
        {"op": "x", "shape": "s", "dtype": "float32", "mode": "fwd", "provider": "triton",
         "ms": 0.5, "gb_s": 900.0, "pct_peak": 27.0},
        {"op": "x", "shape": "s", "dtype": "float32", "mode": "fwd+bwd", "provider": "torch",
         "ms": 8.0},
        {"op": "y", "shape": "s", "dtype": "float32", "mode": "fwd", "provider": "triton",
         "ms": None, "note": "needs a CUDA GPU"},
    ]  # fmt: skip
    [row] = gpu_check.kernel_summary(rows)
    assert row["vs_torch"] == 8.0 and row["vs_torchvision"] == 4.0
    assert row["gb_s"] == 900.0 and row["pct_peak"] == 27.0
    text = gpu_check.markdown([], [row], [{"config": "bf16", "fps": 30.0}], "gpu")
    assert "| x | s | float32 | fwd | 0.5 | 8 | 4 | 900 | 27 |" in text and "| bf16 | 30 |" in text
