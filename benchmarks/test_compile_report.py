"""The ahead-of-time compile report: its pass/fail rule, the committed report, a CI run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import compile_report

ROOT = Path(__file__).resolve().parents[1]
FORWARD_KERNELS = {
    "_sinkhorn_fwd_kernel",
    "_gm_quad_kernel",
    "_ms_deform_attn_fwd_kernel",
    "_fwd_kernel",  # deform_conv2d
}


def _row(**kw):
    row = dict(kernel="k", shape="s", dtype="float32", arch="sm_89", registers=100,
               spill_bytes=0, shared_bytes=1024, smem_limit=99 * 1024, backward=False)  # fmt: skip
    row.update(kw)
    return row


def test_failures_flag_forward_spills_and_shared_memory_only():
    assert compile_report.failures([_row()]) == []
    assert compile_report.failures([_row(spill_bytes=8, backward=True)]) == []
    assert len(compile_report.failures([_row(spill_bytes=8)])) == 1
    assert len(compile_report.failures([_row(shared_bytes=99 * 1024 + 1, backward=True)])) == 1


def test_committed_report_covers_every_kernel_and_passes():
    """benchmarks/results/compile_report.json (the full run) holds on sm_80/89/90."""
    rows = json.loads((ROOT / "benchmarks/results/compile_report.json").read_text())
    assert {r["arch"] for r in rows} == {"sm_80", "sm_89", "sm_90"}
    assert FORWARD_KERNELS <= {r["kernel"] for r in rows if not r["backward"]}
    assert any(r["backward"] for r in rows)
    assert compile_report.failures(rows) == []
    assert {"float32", "bfloat16", "float16"} <= {r["dtype"] for r in rows}


def test_quick_report_compiles_every_forward_kernel_for_every_arch(tmp_path):
    """The CI run: forward kernels at the model's shapes for sm_80/89/90 (about a minute on
    two cores); exits non-zero on a forward spill or a shared-memory excess."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_report", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {r["arch"] for r in rows} == {"sm_80", "sm_89", "sm_90"}
    assert {r["kernel"] for r in rows} == FORWARD_KERNELS
    assert all(r["registers"] > 0 and r["num_warps"] >= 1 for r in rows)
    assert out.with_suffix(".md").read_text().count("| yes |") == len(rows)
