"""End-to-end online inference speed and memory flatness: ``python -m benchmarks.e2e``.

Latency: per-frame p50 / p90 and FPS of the online loop (``gmpvis.engine.online``: frame to
device, ``model.step`` with the rolling memory, tracker with graph matching, RLE encoding),
model time (``model.step`` only) and total time apart, the first frames (warm-up,
compilation, graph capture) left out.

* CPU: the ``tiny`` preset at 128x128 (fp32, and channels-last).
* CUDA: ``r50`` at 360p (640x360 frames, short side 360) with fp32, bf16, bf16 + compile,
  bf16 + compile + CUDA graphs (``reduce-overhead``), bf16 + hand-captured CUDA graphs, and
  bf16 with ``GMPVIS_KERNELS=torch`` against ``triton``.

Memory: the ``tiny`` preset over 100 and 1,000 frames, each in a fresh process: peak RSS
(and peak CUDA allocated memory on a GPU) must not grow with the video length; the size of
the results (RLEs, the only thing that legitimately grows) is reported next to it.

Weights are random (speed and memory do not depend on them); the tracker's thresholds are
opened and ``max_proposals`` set so that every frame carries a busy scene's load.
Results: ``benchmarks/results/e2e_<device>.json`` and a printed table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

RESULTS_DIR = Path(__file__).parent / "results"


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace(" ", "-")
    return "cpu"


def tracker_load(max_proposals: int = 10):
    from gmpvis.engine.tracker import TrackerConfig

    return TrackerConfig(det_threshold=0.0, birth_threshold=0.0, max_proposals=max_proposals)


def cycled_frames(height: int, width: int, count: int, period: int = 16) -> Iterator[np.ndarray]:
    """``count`` frames cycling through one synthetic (hard) video of ``period`` frames, so
    the input itself takes constant memory."""
    from gmpvis.data.synthetic import generate_video

    video = generate_video(7, num_frames=period, height=height, width=width, difficulty="hard")
    for t in range(count):
        yield video.frames[t % period]


def measure(preset, overrides, hw, frames, warmup, opts, backend="auto", offline=False) -> dict:
    """Latency of the online loop (or offline clips of 8 overlapping by 2) for one
    configuration (fresh model, fresh compile)."""
    from gmpvis.config import get_config
    from gmpvis.engine.online import build_stepper, track_frames
    from gmpvis.engine.stitch import track_frames_offline
    from gmpvis.kernels._backend import use_backend
    from gmpvis.model import build_model

    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = get_config(preset, overrides)
    model = build_model(cfg)
    with use_backend(backend), torch.no_grad():
        stepper = build_stepper(model, opts)
        t0 = time.perf_counter()
        run = track_frames_offline if offline else track_frames
        _, stats, n = run(stepper, cycled_frames(*hw, frames), hw, cfg, tracker_load())
        wall = time.perf_counter() - t0
    row = {
        "mode": "offline" if offline else "online",
        "preset": preset,
        "input": f"{hw[1]}x{hw[0]}",
        "amp": opts.amp,
        "compile": opts.compile,
        "cuda_graphs": opts.cuda_graphs,
        "channels_last": opts.channels_last,
        "kernels": backend,
        "frames_timed": n - warmup,
        **{k: v for k, v in stats.summary(skip=warmup).items() if k != "frames"},
        "wall_s": wall,
    }
    del stepper, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def latency_rows(device: torch.device, frames: int) -> list[dict]:
    from gmpvis.engine.online import RunOptions

    rows = []
    if device.type == "cpu":
        hw, over = (128, 128), []
        for opts, offline in [
            (RunOptions(device="cpu"), False),
            (RunOptions(device="cpu", channels_last=True), False),
            (RunOptions(device="cpu"), True),
        ]:
            rows.append(measure("tiny", over, hw, frames + 8, 8, opts, offline=offline))
            print_rows(rows[-1:])
        return rows
    hw, over = (360, 640), ["data.scales=360", "data.max_size=640"]
    dev = str(device)
    configs = [  # (options, GMPVIS_KERNELS, offline clips)
        (RunOptions(device=dev, amp="off"), "auto", False),
        (RunOptions(device=dev, amp="bf16"), "auto", False),
        (RunOptions(device=dev, amp="bf16", compile=True), "auto", False),
        (RunOptions(device=dev, amp="bf16", compile=True, cuda_graphs=True), "auto", False),
        (RunOptions(device=dev, amp="bf16", cuda_graphs=True), "auto", False),
        (RunOptions(device=dev, amp="bf16", channels_last=True), "auto", False),
        (RunOptions(device=dev, amp="bf16"), "torch", False),
        (RunOptions(device=dev, amp="bf16"), "triton", False),
        (RunOptions(device=dev, amp="bf16"), "auto", True),
    ]
    for opts, backend, offline in configs:
        # compile and graph capture happen in the first frames: leave more of them out
        warmup = 10 if (opts.compile or opts.cuda_graphs) else 8
        try:
            rows.append(
                measure("r50", over, hw, frames + warmup, warmup, opts, backend, offline=offline)
            )
        except Exception as err:  # one configuration failing does not lose the others
            rows.append(
                {
                    "preset": "r50",
                    "amp": opts.amp,
                    "compile": opts.compile,
                    "cuda_graphs": opts.cuda_graphs,
                    "kernels": backend,
                    "error": f"{type(err).__name__}: {err}"[:300],
                }
            )
        print_rows(rows[-1:])
    return rows


# ----------------------------------------------------------------------------- memory
def current_rss_mib() -> float:
    """Resident set size now (Linux ``/proc/self/statm``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(frames: int, device: str) -> dict:
    """Run ``frames`` frames of the tiny preset; the loop's peak memory in this process.

    RSS is sampled before every frame (the process-wide ``ru_maxrss`` peaks while importing,
    which would hide the loop), CUDA memory by the allocator's peak counter.
    """
    from gmpvis.config import get_config
    from gmpvis.engine.online import RunOptions, build_stepper, track_frames
    from gmpvis.model import build_model

    torch.manual_seed(0)
    cfg = get_config("tiny")
    stepper = build_stepper(build_model(cfg), RunOptions(device=device))
    hw = (128, 128)
    samples: list[float] = []

    def sampled(it):
        for f in it:
            samples.append(current_rss_mib())
            yield f

    with torch.no_grad():
        track_frames(stepper, cycled_frames(*hw, 5), hw, cfg, tracker_load())  # warm-up
        if stepper.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tracker, _, n = track_frames(
            stepper, sampled(cycled_frames(*hw, frames)), hw, cfg, tracker_load()
        )
        samples.append(current_rss_mib())
    results = tracker.results(1, n, list(range(1, cfg.model.num_classes + 1)))
    out = {
        "frames": n,
        "rss_first_frame_mib": samples[0],
        "peak_rss_mib": max(samples),
        "rss_end_mib": samples[-1],
        "loop_rss_growth_mib": max(samples) - samples[0],
        "tracks": len(results),
        "results_json_mib": len(json.dumps(results)) / 2**20,
    }
    if stepper.device.type == "cuda":
        out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def memory_rows(device: torch.device, lengths=(100, 1000)) -> list[dict]:
    rows = []
    for n in lengths:
        cmd = [sys.executable, "-m", "benchmarks.e2e", "--memory-child", str(n)]
        cmd += ["--device", str(device)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"memory: {rows[-1]}")
    return rows


# ----------------------------------------------------------------------------- output
COLUMNS = ["mode", "preset", "input", "amp", "compile", "cuda_graphs", "channels_last", "kernels"]
COLUMNS += ["model_p50_ms", "model_p90_ms", "total_p50_ms", "total_p90_ms", "model_fps", "fps"]


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        if "error" in r:
            print(
                f"  {r['amp']} compile={r['compile']} graphs={r['cuda_graphs']} "
                f"kernels={r['kernels']}: FAILED {r['error']}"
            )
            continue
        cells = [f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS]
        print("  " + " | ".join(f"{c}={v}" for c, v in zip(COLUMNS, cells, strict=True)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", type=int, default=60, help="timed frames per configuration")
    p.add_argument("--no-memory", action="store_true", help="skip the 100 vs 1000 frames run")
    p.add_argument("--memory-lengths", type=int, nargs=2, default=[100, 1000])
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child, args.device)))
        return 0
    device = torch.device(args.device)
    torch.set_num_threads(min(torch.get_num_threads(), 2) if device.type == "cpu" else 4)
    print(f"end-to-end online inference on {device_label(device)}")
    report = {
        "device": device_label(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "tracker": vars(tracker_load()),
        "weights": "random (speed and memory do not depend on them)",
        "latency": latency_rows(device, args.frames),
    }
    if not args.no_memory:
        mem = memory_rows(device, tuple(args.memory_lengths))
        short, long = mem
        report["memory"] = {
            "runs": mem,
            "peak_rss_growth_mib": long["peak_rss_mib"] - short["peak_rss_mib"],
            "loop_rss_growth_mib": {str(r["frames"]): r["loop_rss_growth_mib"] for r in mem},
            "results_growth_mib": long["results_json_mib"] - short["results_json_mib"],
        }
        if "peak_cuda_allocated_mib" in long:
            growth = long["peak_cuda_allocated_mib"] - short["peak_cuda_allocated_mib"]
            report["memory"]["cuda_allocated_growth_mib"] = growth
        print(
            f"memory growth {args.memory_lengths[0]} -> {args.memory_lengths[1]} frames: "
            f"peak RSS {report['memory']['peak_rss_growth_mib']:+.1f} MiB (results JSON "
            f"{report['memory']['results_growth_mib']:+.1f} MiB)"
        )
    if device.type == "cpu":
        report["gpu_note"] = (
            "no GPU here: the r50 360p fp32 / bf16 / compile / CUDA-graph / kernels rows run "
            "only on a CUDA device"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"e2e_{device_label(device)}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
