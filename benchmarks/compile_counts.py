"""torch.compile recompilations: ``python -m benchmarks.compile_counts [--out FILE]``.

Counts what ``torch._dynamo`` compiles (``counters["stats"]["unique_graphs"]``, graph
breaks, compile seconds) in the code paths ``train.py`` and ``infer.py`` run:

* training: ``gmpvis.train.Trainer.train_step`` with ``train.compile=true`` for 20 steps
  at one training size, and with multi-scale training over two sizes (``data.scales``);
  the graphs compiled after the warm-up steps are the recompilations (none at a fixed size,
  at most one per scale with several);
* inference: 50 frames of ``gmpvis.infer.predict_videos`` with ``infer.compile=true`` (the
  online loop, the rolling memory filling up over the first ``memory_frames`` frames);
* the CPU compile time with ``train.amp=bf16`` against float32 (first step), with the
  number of graphs and graph breaks that explain it.

The ``tiny`` preset on the CPU (what this machine can run); on a CUDA machine ``--device
cuda`` runs the same counts. Writes ``benchmarks/results/compile_counts.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def _counts() -> dict:
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "frames_compiled": int(counters["frames"].get("ok", 0)),
    }


def _phase_times() -> dict[str, float]:
    """Seconds per compile phase (dynamo tracing, AOT autograd, Inductor, C++ builds...)."""
    from torch._dynamo.utils import compile_times

    table = compile_times(repr="csv")  # (phase names, per-frame values)
    names, values = table[0], table[1:]
    out = {}
    for name, vals in zip(names, zip(*values, strict=False), strict=False):
        try:
            out[name] = round(sum(float(v) for v in vals), 2)
        except (TypeError, ValueError):
            continue
    return out


def _reset() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def training(device: torch.device, scales: list[int], steps: int, warmup: int, amp: str,
             budget_s: float = 1e9) -> dict:  # fmt: skip
    """Graphs compiled during ``warmup`` steps and during the remaining ones (stops early,
    saying so, when ``budget_s`` is spent)."""
    from gmpvis.config import get_config, set_field
    from gmpvis.data import build_dataset
    from gmpvis.train import DistInfo, Trainer, prepare_data

    over = [f"data.scales={','.join(map(str, scales))}", "train.compile=true",
            f"train.amp={amp}", "train.output_dir=outputs/compile_counts"]  # fmt: skip
    cfg = get_config("tiny", over)
    prepare_data(get_config("tiny"), is_main=True)
    train_set = build_dataset(cfg.data, "train")
    set_field(cfg, "model.num_classes", train_set.num_classes)
    bs = cfg.train.batch_size
    _reset()
    trainer = Trainer(cfg, DistInfo(device=device), train_set, None)
    seconds, marks, sizes = [], {}, set()
    start = time.perf_counter()
    for i in range(steps):
        if time.perf_counter() - start > budget_s:
            break
        batch = trainer.collate([train_set[(i * bs + j) % len(train_set)] for j in range(bs)])
        sizes.add(tuple(batch["frames"].shape[-2:]))
        t0 = time.perf_counter()
        trainer.train_step(batch)
        seconds.append(time.perf_counter() - t0)
        shape = tuple(batch["frames"].shape)
        print(f"  step {i}: {seconds[-1]:.1f} s, frames {shape}, {_counts()}", flush=True)
        if i + 1 == min(warmup, steps):
            marks["after_warmup"] = _counts()
    end = _counts()
    after = marks.get("after_warmup", end)["graphs"]
    later = sorted(seconds[warmup:])  # empty when the budget stopped the run in the warm-up
    return {
        "compile_phases_s": _phase_times(),
        "scales": scales,
        "amp": amp,
        "steps": len(seconds),
        "steps_asked": steps,
        "warmup_steps": warmup,
        "graphs_after_warmup": after,
        "graphs_total": end["graphs"],
        "recompiles_after_warmup": end["graphs"] - after,
        "graph_breaks": end["graph_breaks"],
        "first_step_s": seconds[0],
        "later_steps_median_s": later[len(later) // 2] if later else None,
        "step_s": [round(s, 3) for s in seconds],
        "input_sizes": sorted(sizes),
    }


def inference(device: torch.device, frames: int, warmup: int) -> dict:
    """Graphs compiled over ``frames`` frames of the online loop (``warmup`` frames first)."""
    from experiments.e2e import CycledSource
    from gmpvis.config import get_config
    from gmpvis.infer import predict_videos, prepare_model
    from gmpvis.model import build_model

    cfg = get_config("tiny", ["infer.compile=true", f"runtime.device={device}"])
    torch.manual_seed(0)
    model = prepare_model(build_model(cfg), device, cfg.infer.channels_last)
    ids = list(range(1, cfg.model.num_classes + 1))
    seen: list[dict] = []
    _reset()
    source = CycledSource(128, 128, frames, on_frame=lambda: seen.append(_counts()))
    t0 = time.perf_counter()
    with torch.no_grad():
        [video] = predict_videos(model, cfg, [source], ids, device)
    wall = time.perf_counter() - t0
    end = _counts()
    # seen[t] is taken before frame t: the graphs after frame t - 1
    after = seen[warmup]["graphs"] if len(seen) > warmup else end["graphs"]
    return {
        "frames": video.num_frames,
        "warmup_frames": warmup,
        "memory_frames": cfg.model.memory_frames,
        "graphs_by_frame": [s["graphs"] for s in seen[1:]] + [end["graphs"]],
        "graphs_after_warmup": after,
        "graphs_total": end["graphs"],
        "recompiles_after_warmup": end["graphs"] - after,
        "graph_breaks": end["graph_breaks"],
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "compile_counts.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--budget-s", type=float, default=540.0, help="per part")
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="keep Inductor's on-disk caches (default: a fresh cache dir, cold compiles)",
    )
    parser.add_argument(
        "--scalar-cpp",
        action="store_true",
        help="Inductor's CPU kernels without SIMD (torch._inductor.config.cpp.simdlen=1)",
    )
    parser.add_argument("--parts", nargs="*", default=["fixed", "multiscale", "bf16", "infer"],
                        choices=["fixed", "multiscale", "bf16", "infer"])  # fmt: skip
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if not args.warm_cache:  # cold compiles, as a fresh machine (and the issue) sees them
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compile_counts_")
    if args.scalar_cpp:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.simdlen = 1
    torch.set_num_threads(min(2, torch.get_num_threads()))
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    report = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": "python -m benchmarks.compile_counts " + " ".join(argv or sys.argv[1:]),
        "inductor_cache": "warm" if args.warm_cache else "cold (fresh cache dir)",
        **{k: v for k, v in old.items() if k in ("fixed", "multiscale", "bf16", "infer")},
    }
    warmup = 3
    for part in args.parts:
        start = time.perf_counter()
        if part == "fixed":
            report[part] = training(device, [128], args.steps, warmup, "off", args.budget_s)
        elif part == "multiscale":
            report[part] = training(device, [96, 128], args.steps, warmup, "off", args.budget_s)
        elif part == "bf16":  # the compile cost of item 14: 3 steps, bf16 autocast
            report[part] = training(device, [128], min(3, args.steps), 1, "bf16")
        else:
            report[part] = inference(device, args.frames, 10)
        report[part]["run_s"] = time.perf_counter() - start
        print(part, json.dumps(report[part]))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
