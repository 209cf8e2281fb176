"""Training step time: ``python -m experiments.train_step``.

Median seconds per optimisation step (forward, losses with Hungarian matching and L_match,
backward, gradient clipping, AdamW) of :meth:`gmpvis.train.Trainer.train_step`,
the exact step ``train.py`` runs, on a fixed set of real batches from the synthetic dataset
(warm-up steps left out; batches cycle so data loading is not timed).

* CPU: the ``tiny`` preset (batch 2, 3-frame clips at 128 px) with 1 and with 2 intra-op
  threads (``--threads``): the tiny model's tensors are small, so a second thread buys little.
* CUDA (when available): the ``r50`` preset on the same synthetic videos resized to 360 px
  short side (batch 2, 3-frame clips), fp32 / AMP bf16 / AMP bf16 + ``torch.compile``.
  Where no GPU is present these rows are written with ``"measured": false``.

Results: ``experiments/results/train_step_<cpu|cuda>.json`` and a printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "experiments" / "results"

# (name, preset, overrides); the r50 rows read the synthetic videos at 360p
CPU_CASES = [("tiny fp32", "tiny", [])]
R50_DATA = ["data.root=data/synthetic", "data.scales=360", "data.max_size=640"]
CUDA_CASES = [
    ("r50 fp32", "r50", R50_DATA),
    ("r50 bf16", "r50", [*R50_DATA, "train.amp=bf16"]),
    ("r50 bf16 + compile", "r50", [*R50_DATA, "train.amp=bf16", "train.compile=true"]),
]


def ensure_synthetic() -> None:
    """The tiny preset's synthetic dataset under data/synthetic (generated once, as train.py
    does); the r50 rows read the same videos."""
    from gmpvis.config import get_config
    from gmpvis.train import prepare_data

    prepare_data(get_config("tiny"), is_main=True)


def measure(preset: str, overrides: list[str], device: torch.device, steps: int, warmup: int):
    """-> (median, p10, p90) seconds per step of ``Trainer.train_step``."""
    from gmpvis.config import get_config, set_field
    from gmpvis.data import build_dataset, collate_clips
    from gmpvis.train import DistInfo, Trainer

    cfg = get_config(preset, [*overrides, "train.output_dir=outputs/bench_train_step"])
    ensure_synthetic()
    train_set = build_dataset(cfg.data, "train")
    set_field(cfg, "model.num_classes", train_set.num_classes)
    bs = cfg.train.batch_size
    batches = [
        collate_clips([train_set[(i * bs + j) % len(train_set)] for j in range(bs)])
        for i in range(4)
    ]
    trainer = Trainer(cfg, DistInfo(device=device), train_set, None)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        trainer.train_step(batches[i % len(batches)])
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
    return statistics.median(times), q[0], q[-1]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cpu-only", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for (name, preset, ov), threads in [(c, n) for c in CPU_CASES for n in args.threads]:
        torch.set_num_threads(threads)
        med, p10, p90 = measure(preset, ov, torch.device("cpu"), args.steps, args.warmup)
        rows.append(
            {
                "case": f"{name}, {threads} thread{'s' if threads > 1 else ''}",
                "device": "cpu",
                "threads": threads,
                "measured": True,
                "median_s": med,
                "p10_s": p10,
                "p90_s": p90,
                "steps": args.steps,
            }
        )
    cuda = torch.cuda.is_available() and not args.cpu_only
    for name, preset, ov in CUDA_CASES:
        row = {"case": name, "device": "cuda", "overrides": ov, "measured": cuda}
        torch.set_num_threads(max(args.threads))
        if cuda:
            med, p10, p90 = measure(preset, ov, torch.device("cuda"), args.steps, args.warmup)
            row |= {"median_s": med, "p10_s": p10, "p90_s": p90, "steps": args.steps}
            row["gpu"] = torch.cuda.get_device_name()
        else:
            row["note"] = "no CUDA device here: code path written, not measured"
        rows.append(row)
    record = {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "rows": rows,
    }
    out = RESULTS_DIR / f"train_step_{'cuda' if cuda else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print("| case | device | median s/step | p10 | p90 |\n| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        if r["measured"]:
            print(
                f"| {r['case']} | {r['device']} | {r['median_s']:.3f} | {r['p10_s']:.3f} | "
                f"{r['p90_s']:.3f} |"
            )
        else:
            print(f"| {r['case']} | {r['device']} | unmeasured | | |")
    print(f"-> {out.relative_to(ROOT)}")
    return record


if __name__ == "__main__":
    main()
