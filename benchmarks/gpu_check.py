"""The first run on a CUDA GPU in one command: ``make gpu-check``.

``python -m benchmarks.gpu_check`` runs these steps on a machine with a CUDA GPU, in about
8 minutes in all, each with its own time limit:

1. ``pytest -m gpu`` over the kernel tests and benchmarks (Triton against the references on
   the GPU, bf16 included, and the non-default-device test when there are two GPUs);
2. the kernel benchmark's model group (``python -m benchmarks.kernels --group model``);
3. ``r50`` online inference at 360p with bf16 + torch.compile + CUDA graphs through
   ``gmpvis.infer.predict_videos`` (``experiments.e2e``), and plain bf16 next to it.

Everything goes to ``benchmarks/results/<gpu name>/`` (``pytest.xml``, ``kernels.csv`` /
``.json``, ``e2e.json``, ``summary.md`` / ``.json``), and one summary table is printed:
speedups of Triton over the references (and torchvision for deform_conv2d), the achieved
bandwidth of the memory-bound kernels, FPS and peak memory. Without a GPU it prints what
it would run and exits 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LIMITS_S = {"pytest": 200, "kernels": 180, "e2e": 100}  # 8 minutes in all
E2E_CONFIGS = {  # (name, overrides) of the r50 360p online runs
    "bf16": ["infer.amp=bf16"],
    "bf16+compile+graphs": ["infer.amp=bf16", "infer.compile=true", "infer.cuda_graphs=true"],
}


def gpu_dir(device: torch.device) -> Path:
    name = torch.cuda.get_device_name(device).lower().replace(" ", "-")
    return RESULTS / name


def plan(out: str) -> list[str]:
    """What the check runs, as shell commands (for the dry run and the log)."""
    return [
        f"pytest -q -m gpu tests/kernels benchmarks --junitxml {out}/pytest.xml",
        f"python -m benchmarks.kernels --group model --out {out}/kernels.csv",
        "python -m benchmarks.gpu_check --e2e-only "
        f"(r50, 640x360, online: {', '.join(E2E_CONFIGS)}) -> {out}/e2e.json",
    ]


def _run(cmd: list[str], limit: int) -> dict:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=limit, capture_output=True, text=True)
        status, tail = proc.returncode, (proc.stdout + proc.stderr)[-4000:]
    except subprocess.TimeoutExpired as err:
        status, tail = "timeout", f"stopped after {limit} s\n{(err.stdout or b'')[-2000:]!r}"
    return {"cmd": " ".join(cmd), "status": status, "s": time.perf_counter() - start, "tail": tail}


def e2e_rows(frames: int) -> list[dict]:
    """r50 online inference at 360p per config: FPS, latency and peak CUDA memory."""
    from experiments.e2e import measure

    rows = []
    size = ["data.scales=360", "data.max_size=640", "runtime.device=cuda"]
    for name, over in E2E_CONFIGS.items():
        torch.cuda.reset_peak_memory_stats()
        warmup = 10 if "compile" in name or "graphs" in name else 5
        try:
            row = measure("r50", size + over, (360, 640), frames + warmup, warmup)
        except Exception as err:  # one configuration failing does not lose the other
            row = {"error": f"{err!r}"[:300]}
        row["config"] = name
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
    return rows


def kernel_summary(rows: list[dict]) -> list[dict]:
    """Per (op, shape, dtype, mode): Triton's time, its speedup over the reference (and
    over torchvision), and the bandwidth columns of the forward rows."""
    by_key: dict[tuple, dict] = {}
    for r in rows:
        if not r.get("ms"):
            continue
        key = (r["op"], r["shape"], r["dtype"], r["mode"])
        by_key.setdefault(key, {})[r["provider"]] = r
    out = []
    for (op, shape, dtype, mode), provs in by_key.items():
        tri = provs.get("triton")
        if tri is None:
            continue
        row = {"op": op, "shape": shape, "dtype": dtype, "mode": mode, "triton_ms": tri["ms"]}
        for base in ("torch", "torchvision"):
            if base in provs:
                row[f"vs_{base}"] = provs[base]["ms"] / tri["ms"]
        for col in ("gb_s", "pct_peak", "peak_mib"):
            if tri.get(col) is not None:
                row[col] = tri[col]
        out.append(row)
    return out


def markdown(steps: list[dict], kernels: list[dict], e2e: list[dict], gpu: str) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else ("-" if v is None else str(v))

    lines = [f"# gpu-check on {gpu}", "", "| step | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {s['cmd'][:60]} | {s['status']} | {s['s']:.0f} |" for s in steps]
    cols = ["op", "shape", "dtype", "mode", "triton_ms", "vs_torch", "vs_torchvision", "gb_s"]
    cols += ["pct_peak", "peak_mib"]
    lines += ["", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in kernels]
    ecols = ["config", "fps", "model_fps", "model_p50_ms", "total_p50_ms", "peak_cuda_mib"]
    lines += ["", "| " + " | ".join(ecols) + " |", "|" + " --- |" * len(ecols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in ecols) + " |" for r in e2e]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="timed frames per e2e config")
    parser.add_argument("--e2e-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here. On a machine with a CUDA GPU it runs:")
        for cmd in plan("benchmarks/results/<gpu name>"):
            print(f"  {cmd}")
        print("and prints one summary table (speedups vs the references and torchvision, GB/s,")
        print("FPS, peak memory). Nothing was run; the GPU figures stay unmeasured.")
        return 2
    device = torch.device("cuda")
    out = gpu_dir(device)
    out.mkdir(parents=True, exist_ok=True)
    if args.e2e_only:
        rows = e2e_rows(args.frames)
        (out / "e2e.json").write_text(json.dumps(rows, indent=1) + "\n")
        return 0 if all("error" not in r for r in rows) else 1
    steps = []
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/kernels", "benchmarks"]
    steps.append(_run(pytest_cmd + ["--junitxml", str(out / "pytest.xml")], LIMITS_S["pytest"]))
    kernels_cmd = [sys.executable, "-m", "benchmarks.kernels", "--group", "model"]
    steps.append(_run(kernels_cmd + ["--out", str(out / "kernels.csv")], LIMITS_S["kernels"]))
    e2e_cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--e2e-only"]
    steps.append(_run(e2e_cmd + ["--frames", str(args.frames)], LIMITS_S["e2e"]))
    kernel_rows = []
    if (out / "kernels.json").exists():
        kernel_rows = kernel_summary(json.loads((out / "kernels.json").read_text())["rows"])
    e2e = json.loads((out / "e2e.json").read_text()) if (out / "e2e.json").exists() else []
    gpu = torch.cuda.get_device_name(device)
    summary = {"gpu": gpu, "torch": torch.__version__, "steps": steps, "kernels": kernel_rows}
    summary["e2e"] = e2e
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = markdown(steps, kernel_rows, e2e, gpu)
    (out / "summary.md").write_text(text)
    print(text)
    for s in steps:
        if s["status"] != 0:
            print(f"FAILED: {s['cmd']}\n{s['tail']}")
    return 0 if all(s["status"] == 0 for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
