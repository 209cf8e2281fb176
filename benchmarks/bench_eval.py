"""Time the video AP evaluator: ``python -m benchmarks.bench_eval``.

A synthetic YouTube-VIS-sized split (default 300 videos of 20 frames at 720x1280, 1-4 GT
instances per video, 100 results per video: jittered / shifted copies of the GTs plus false
positives, some frames null) is built with pycocotools' box rasteriser, then evaluated from
JSON files exactly as the CLI does. Prints the time of each stage (load + validate, IoU,
matching, accumulate) and writes ``benchmarks/results/eval.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from gmpvis.eval import YTVISEval, write_results

RESULTS_DIR = Path(__file__).parent / "results"


def _box_rles(boxes: np.ndarray, h: int, w: int) -> list:
    """Compressed RLEs (str counts) of xywh boxes ``[T, 4]``; rows with w == 0 -> None."""
    keep = boxes[:, 2] > 0
    rles = (
        iter(mask_utils.frPyObjects(boxes[keep].astype(np.float64), h, w)) if keep.any() else None
    )
    out = []
    for k in keep:
        if k:
            r = next(rles)
            out.append({"size": [h, w], "counts": r["counts"].decode("ascii")})
        else:
            out.append(None)
    return out


def _track(rng, T: int, h: int, w: int) -> np.ndarray:
    """A box drifting over T frames, xywh ``[T, 4]``; about 10 % of frames absent (w = 0)."""
    bw, bh = rng.uniform(0.05, 0.6) * w, rng.uniform(0.05, 0.6) * h
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    drift = rng.normal(0, 0.01, (T, 2)).cumsum(0) * [w, h]
    xy = np.clip(np.array([x0, y0]) + drift, 0, [w - bw, h - bh])
    boxes = np.concatenate([xy, np.tile([bw, bh], (T, 1))], axis=1)
    boxes[rng.random(T) < 0.1, 2] = 0
    return boxes


def make_split(videos: int, dets: int, T: int, h: int, w: int, cats: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt = {
        "videos": [{"id": v + 1, "height": h, "width": w, "length": T} for v in range(videos)],
        "categories": [{"id": c + 1, "name": f"class{c + 1}"} for c in range(cats)],
        "annotations": [],
    }
    results = []
    for v in range(1, videos + 1):
        tracks = []
        for _ in range(int(rng.integers(1, 5))):
            boxes = _track(rng, T, h, w)
            boxes[0, 2] = max(boxes[0, 2], 1.0)  # present in frame 0 at least
            cid = int(rng.integers(1, cats + 1))
            segs = _box_rles(boxes, h, w)
            areas = [None if s is None else int(mask_utils.area(s)) for s in segs]
            ann = {"id": len(gt["annotations"]) + 1, "video_id": v, "category_id": cid,
                   "iscrowd": 0, "segmentations": segs, "areas": areas}  # fmt: skip
            gt["annotations"].append(ann)
            tracks.append((boxes, cid))
        for _ in range(dets):
            if rng.random() < 0.5:  # a noisy copy of a GT, category right 80 % of the time
                boxes, cid = tracks[int(rng.integers(len(tracks)))]
                boxes = boxes.copy()
                boxes[:, :2] += rng.normal(0, 0.05, (1, 2)) * boxes[:, 2:]
                if rng.random() > 0.8:
                    cid = int(rng.integers(1, cats + 1))
            else:
                boxes, cid = _track(rng, T, h, w), int(rng.integers(1, cats + 1))
            results.append({"video_id": v, "category_id": cid, "score": float(rng.random()),
                            "segmentations": _box_rles(boxes, h, w)})  # fmt: skip
    return gt, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--dets", type=int, default=100, help="results per video")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    parser.add_argument("--categories", type=int, default=40)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "eval.json")
    args = parser.parse_args(argv)
    h, w = args.size
    tic = time.perf_counter()
    gt, results = make_split(args.videos, args.dets, args.frames, h, w, args.categories)
    gen_s = time.perf_counter() - tic
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = Path(tmp) / "gt.json"
        gt_path.write_text(json.dumps(gt))
        res_path = write_results(results, Path(tmp) / "results.json")
        runs = []
        for _ in range(args.reps):
            tic = time.perf_counter()
            ev = YTVISEval(gt_path, res_path)
            metrics = ev.run()
            runs.append({**ev.timings, "total_s": time.perf_counter() - tic})
    best = min(runs, key=lambda r: r["total_s"])
    rows = [(k.removesuffix("_s"), v) for k, v in best.items()]
    print(f"video AP on {args.videos} videos x {args.dets} results, {args.frames} frames {h}x{w}")
    print(f"(synthetic data generated in {gen_s:.1f} s; AP = {metrics['AP']:.4f})")
    print(f"{'stage':<12}  seconds")
    for name, sec in rows:
        print(f"{name:<12}  {sec:7.3f}")
    record = {
        "bench": "eval",
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "config": {
            "videos": args.videos,
            "dets_per_video": args.dets,
            "frames": args.frames,
            "size": [h, w],
            "categories": args.categories,
            "reps": args.reps,
        },  # fmt: skip
        "num_results": len(results),
        "num_gt": len(gt["annotations"]),
        "timings_s": best,
        "metrics": {k: v for k, v in metrics.items() if k != "per_category"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
