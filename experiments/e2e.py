"""End-to-end online inference speed and memory flatness: ``python -m experiments.e2e``.

Latency: per-frame p50 / p90 and FPS of the online loop (``gmpvis.infer.predict_videos``: frame to
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
Results: ``experiments/results/e2e_<device>.json`` and a printed table.
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

from gmpvis.data.inputs import VideoSource

RESULTS_DIR = Path(__file__).parent / "results"


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace(" ", "-")
    return "cpu"


# the tracker opened so that every frame carries a busy scene's load
TRACKER_LOAD = ["tracker.det_threshold=0", "tracker.birth_threshold=0", "tracker.max_proposals=10"]


class CycledSource(VideoSource):
    """``count`` frames cycling through one synthetic (hard) video of ``period`` frames, so
    the input itself takes constant memory; ``on_frame`` is called before each frame."""

    def __init__(self, height: int, width: int, count: int, period: int = 16, on_frame=None):
        from gmpvis.data.synthetic import generate_video

        super().__init__(1, "cycled", count, height, width)
        video = generate_video(7, num_frames=period, height=height, width=width, difficulty="hard")
        self.video_frames, self.on_frame = video.frames, on_frame

    def frames(self) -> Iterator[np.ndarray]:
        for t in range(self.length):
            if self.on_frame is not None:
                self.on_frame()
            yield self.video_frames[t % len(self.video_frames)]


def run_model(preset: str, overrides: list[str], source: VideoSource):
    """A fresh random-weight model of ``preset`` + ``overrides`` over ``source`` through
    ``predict_videos`` (what ``infer.py`` runs) -> (the video's prediction, config)."""
    from gmpvis.config import get_config
    from gmpvis.infer import predict_videos, prepare_model
    from gmpvis.model import build_model
    from gmpvis.runtime import setup_runtime

    torch.manual_seed(0)
    cfg = get_config(preset, TRACKER_LOAD + overrides)
    device = setup_runtime(cfg.runtime.device, cfg.runtime.kernels)
    model = prepare_model(build_model(cfg), device, cfg.infer.channels_last)
    ids = list(range(1, cfg.model.num_classes + 1))
    [video] = predict_videos(model, cfg, [source], ids, device)
    return video, cfg


def measure(preset, overrides, hw, frames, warmup) -> dict:
    """Latency of one configuration (fresh model, fresh compile)."""
    torch._dynamo.reset()
    t0 = time.perf_counter()
    with torch.no_grad():
        video, cfg = run_model(preset, overrides, CycledSource(*hw, frames))
    wall = time.perf_counter() - t0
    i = cfg.infer
    row = {
        "mode": i.mode,
        "preset": preset,
        "input": f"{hw[1]}x{hw[0]}",
        "amp": i.amp,
        "compile": i.compile,
        "cuda_graphs": i.cuda_graphs,
        "channels_last": i.channels_last,
        "kernels": cfg.runtime.kernels or "auto",
        "frames_timed": video.num_frames - warmup,
        **{k: v for k, v in video.stats.summary(skip=warmup).items() if k != "frames"},
        "wall_s": wall,
    }
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def latency_rows(device: torch.device, frames: int) -> list[dict]:
    rows = []
    dev = [f"runtime.device={device}"]
    if device.type == "cpu":
        for over in ([], ["infer.channels_last=true"], ["infer.mode=offline"]):
            rows.append(measure("tiny", dev + over, (128, 128), frames + 8, 8))
            print_rows(rows[-1:])
        return rows
    hw, size = (360, 640), ["data.scales=360", "data.max_size=640"]
    bf16 = ["infer.amp=bf16"]
    configs = [
        [],
        bf16,
        bf16 + ["infer.compile=true"],
        bf16 + ["infer.compile=true", "infer.cuda_graphs=true"],
        bf16 + ["infer.cuda_graphs=true"],
        bf16 + ["infer.channels_last=true"],
        bf16 + ["runtime.kernels=torch"],
        bf16 + ["runtime.kernels=triton"],
        bf16 + ["infer.mode=offline"],
    ]
    for over in configs:
        # compile and graph capture happen in the first frames: leave more of them out
        warmup = 10 if any("compile" in o or "graphs" in o for o in over) else 8
        try:
            rows.append(measure("r50", dev + size + over, hw, frames + warmup, warmup))
        except Exception as err:  # one configuration failing does not lose the others
            rows.append({"preset": "r50", "overrides": over, "error": f"{err!r}"[:300]})
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
    hw = (128, 128)
    samples: list[float] = []
    over = [f"runtime.device={device}"]
    with torch.no_grad():
        run_model("tiny", over, CycledSource(*hw, 5))  # warm-up
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        source = CycledSource(*hw, frames, on_frame=lambda: samples.append(current_rss_mib()))
        video, _ = run_model("tiny", over, source)
        samples.append(current_rss_mib())
    out = {
        "frames": video.num_frames,
        "rss_first_frame_mib": samples[0],
        "peak_rss_mib": max(samples),
        "rss_end_mib": samples[-1],
        "loop_rss_growth_mib": max(samples) - samples[0],
        "tracks": len(video.results),
        "results_json_mib": len(json.dumps(video.results)) / 2**20,
    }
    if torch.device(device).type == "cuda":
        out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def memory_rows(device: torch.device, lengths=(100, 1000)) -> list[dict]:
    rows = []
    for n in lengths:
        cmd = [sys.executable, "-m", "experiments.e2e", "--memory-child", str(n)]
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
            print(f"  {' '.join(r['overrides'])}: FAILED {r['error']}")
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
        "tracker": TRACKER_LOAD,
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
