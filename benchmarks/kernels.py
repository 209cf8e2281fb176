"""Time every kernel for every provider: ``python -m benchmarks.kernels`` (or ``make bench``).

Prints a table (median ms, speedup over the baseline, peak memory, achieved bandwidth and
% of the device's peak for the memory-bound kernels (MSDA forward, sinkhorn; "unmeasured"
on a CPU), max error against the baseline) and writes ``benchmarks/results/<device>.csv``
and ``.json``. On a CPU only the reference providers run (Triton is timed on GPUs only: the
interpreter says nothing about speed); the skipped providers are listed with the reason.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import platform
import sys
from pathlib import Path

import torch

from benchmarks._harness import run_case

OPS = ["ms_deform_attn", "deform_conv2d", "sinkhorn", "gm_affinity"]
RESULTS_DIR = Path(__file__).parent / "results"
COLUMNS = ["op", "group", "shape", "dtype", "provider", "mode", "ms", "speedup", "peak_mib"]
COLUMNS += ["gb_s", "pct_peak", "max_err", "note"]


def device_name(device: torch.device) -> str:
    """A file-name-friendly device label, e.g. ``cpu`` or ``nvidia-h100-80gb-hbm3``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace(" ", "-")
    return "cpu"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def print_table(rows: list[dict]) -> None:
    cols = [c for c in COLUMNS if c != "note"]
    table = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r, t in zip(rows, table, strict=True):
        line = "  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True))
        print(line + (f"  # {r['note']}" if r.get("note") else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="*", default=OPS, choices=OPS)
    parser.add_argument("--group", choices=["model", "sweep", "all"], default="all")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=10, help="CPU repetitions per timing")
    parser.add_argument("--out", type=Path, default=None, help="CSV path (default by device)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type != "cuda":
        print(
            "No CUDA device: timing the reference providers only. Triton figures need a GPU "
            "(the CPU interpreter checks correctness, not speed); they stay unmeasured here."
        )
    rows: list[dict] = []
    for op in args.ops:
        module = importlib.import_module(f"benchmarks.bench_{op}")
        for case in module.cases(device):
            if args.group != "all" and case.group != args.group:
                continue
            dtypes = [getattr(torch, args.dtype)] if args.dtype else list(case.dtypes)
            for dtype in dtypes:
                rows.extend(run_case(case, device, dtype, reps=args.reps))
                if case.notes:
                    for provider, note in case.notes.items():
                        rows.append(
                            {
                                "op": case.op,
                                "shape": case.shape,
                                "group": case.group,
                                "provider": provider,
                                "note": note,
                            }
                        )
    print_table(rows)

    out = args.out or RESULTS_DIR / f"{device_name(device)}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join(["python -m benchmarks.kernels", *(argv or sys.argv[1:])]),
        "rows": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
