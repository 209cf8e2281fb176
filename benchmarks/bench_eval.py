"""Time the video AP evaluator: ``python -m benchmarks.bench_eval``.

A synthetic YouTube-VIS-sized split (default 300 videos of 20 frames at 720x1280, 1-4 GT
instances per video, 100 results per video: jittered / shifted copies of the GTs plus false
positives, some frames null) is built with pycocotools' box rasteriser. Prints the time of
each stage (load + validate, IoU, matching, accumulate), from JSON files as the CLI does and
from in-memory lists as training does, compares the IoU stage with a per-pair loop on a few
videos, and writes ``benchmarks/results/eval.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from gmpvis.eval import YTVISEval, evaluate_all, video_iou, write_results

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


def naive_iou(dts, gts, length: int) -> np.ndarray:
    """Baseline: a straightforward per-pair, per-frame loop (one merge for the intersection,
    one for the union, pycocotools areas for frames where one side is null)."""
    out = np.zeros((len(dts), len(gts)))
    d_segs, g_segs = [d.segs for d in dts], [g.segs for g in gts]
    for i, ds in enumerate(d_segs):
        for j, gs in enumerate(g_segs):
            inter = union = 0.0
            for t in range(length):
                a, b = ds[t], gs[t]
                if a is not None and b is not None:
                    inter += float(mask_utils.area(mask_utils.merge([a, b], intersect=True)))
                    union += float(mask_utils.area(mask_utils.merge([a, b], intersect=False)))
                elif a is not None or b is not None:
                    union += float(mask_utils.area(a if a is not None else b))
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def iou_speedup(ev: YTVISEval, videos: int) -> dict:
    """Our per-group IoU vs :func:`naive_iou` on the groups of the first ``videos`` videos."""
    groups = [g for g in ev._groups() if g[0][0] <= videos and g[1] and g[2]]
    lengths = [ev.gt.videos[key[0]].length for key, _, _ in groups]
    tic = time.perf_counter()
    ours = [video_iou(dl, gl, n) for (_, dl, gl), n in zip(groups, lengths, strict=True)]
    ours_s = time.perf_counter() - tic
    tic = time.perf_counter()
    base = [naive_iou(dl, gl, n) for (_, dl, gl), n in zip(groups, lengths, strict=True)]
    base_s = time.perf_counter() - tic
    err = max((float(np.abs(a - b).max()) for a, b in zip(ours, base, strict=True)), default=0.0)
    return {"videos": videos, "ours_s": ours_s, "naive_s": base_s,
            "speedup": base_s / ours_s, "max_abs_diff": err}  # fmt: skip


_RSS_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
def rss():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
from gmpvis.eval import evaluate
start = rss()
tic = time.perf_counter()
ap = evaluate(sys.argv[2], sys.argv[3])["AP"]
seconds = time.perf_counter() - tic
end = rss()
print(json.dumps({"rss_after_import_mib": start["VmRSS"], "peak_rss_mib": end["VmHWM"],
                  "peak_minus_import_mib": end["VmHWM"] - start["VmRSS"],
                  "seconds": seconds, "AP": ap}))
"""


def measure_rss(gt_path: Path, res_path: Path, code_root: Path) -> dict:
    """Peak RSS of ``evaluate(gt_path, res_path)`` in a fresh process importing ``gmpvis``
    from ``code_root`` (Linux: reads /proc/self/status)."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(code_root), str(gt_path), str(res_path)],
        capture_output=True, text=True, check=True, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_record(args, h: int, w: int) -> dict:
    gt, results = make_split(args.rss_videos, args.dets, args.frames, h, w, args.categories)
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = Path(tmp) / "gt.json"
        gt_path.write_text(json.dumps(gt))
        res_path = write_results(results, Path(tmp) / "results.json")
        record = {"videos": args.rss_videos, "results_json_mib": res_path.stat().st_size / 2**20,
                  "this_checkout": measure_rss(gt_path, res_path, here)}  # fmt: skip
        if args.compare_with is not None:
            record["compare_with"] = {
                "code": args.compare_label or str(args.compare_with),
                **measure_rss(gt_path, res_path, args.compare_with.resolve()),
            }
    return record


def small_case_record(repeats: int = 3) -> dict:
    """Best of ``repeats`` timings of ``evaluate_all`` on 24 videos x 16 frames at 128 px."""
    gt, results = make_split(24, 10, 16, 128, 128, 5, seed=1)
    best = None
    for _ in range(repeats):
        tic = time.perf_counter()
        metrics = evaluate_all(gt, results)
        total = time.perf_counter() - tic
        if best is None or total < best["total_s"]:
            best = {**metrics.pop("timings"), "total_s": total}
    keys = ("AP", "HOTA", "DetA", "AssA", "LocA", "IDF1", "id_switches")
    return {"videos": 24, "frames": 16, "size": [128, 128], "results": len(results),
            "timings_s": best, "metrics": {k: metrics[k] for k in keys}}  # fmt: skip


def _timed(gt, results, workers: int = 1) -> tuple[dict, dict, YTVISEval]:
    tic = time.perf_counter()
    ev = YTVISEval(gt, results, workers=workers)
    metrics = ev.run()
    return {**ev.timings, "total_s": time.perf_counter() - tic}, metrics, ev


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--dets", type=int, default=100, help="results per video")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    parser.add_argument("--categories", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1, help="processes for the IoU stage")
    parser.add_argument("--baseline-videos", type=int, default=10, help="0 skips the baseline")
    parser.add_argument("--rss-videos", type=int, default=37, help="0 skips the RSS check")
    parser.add_argument("--compare-with", type=Path, default=None, help="older gmpvis checkout")
    parser.add_argument("--compare-label", default=None, help="how to name it in the record")
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
        size_mb = res_path.stat().st_size / 2**20
        files, metrics, _ = _timed(gt_path, res_path, args.workers)
    memory, metrics_mem, ev = _timed(gt, results, args.workers)
    assert metrics_mem == metrics
    print(f"video AP on {args.videos} videos x {args.dets} results, {args.frames} frames {h}x{w}")
    print(
        f"(data generated in {gen_s:.1f} s; results.json {size_mb:.0f} MiB; AP {metrics['AP']:.4f})"
    )
    print(f"{'stage':<12}  {'from files (s)':>14}  {'in memory (s)':>13}")
    for key in files:
        print(f"{key.removesuffix('_s'):<12}  {files[key]:14.3f}  {memory[key]:13.3f}")
    base = iou_speedup(ev, args.baseline_videos) if args.baseline_videos > 0 else None
    if base:
        print(f"IoU on the first {base['videos']} videos: {base['ours_s']:.3f} s vs "
              f"{base['naive_s']:.3f} s for a per-pair loop ({base['speedup']:.1f}x), "
              f"max |diff| {base['max_abs_diff']:.1e}")  # fmt: skip
    small = small_case_record()
    print(f"evaluate_all, 24 videos x 16 frames at 128 px: {small['timings_s']['total_s']:.3f} s "
          f"({', '.join(f'{k} {v:.3f}' for k, v in small['timings_s'].items())})")  # fmt: skip
    rss = memory_record(args, h, w) if args.rss_videos > 0 else None
    if rss:
        for name in ("this_checkout", "compare_with"):
            if name in rss:
                m = rss[name]
                print(f"RSS, {rss['results_json_mib']:.0f} MiB results.json ({name}): peak "
                      f"{m['peak_rss_mib']:.0f} MiB, {m['peak_minus_import_mib']:.0f} MiB above "
                      f"the imports; {m['seconds']:.2f} s")  # fmt: skip
    record = {
        "bench": "eval",
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],  # other jobs on the machine inflate timings
        "config": {
            "videos": args.videos,
            "dets_per_video": args.dets,
            "frames": args.frames,
            "size": [h, w],
            "categories": args.categories,
        },  # fmt: skip
        "num_results": len(results),
        "num_gt": len(gt["annotations"]),
        "results_json_mib": size_mb,
        "timings_from_files_s": files,
        "timings_in_memory_s": memory,
        "iou_baseline": base,
        "memory": rss,
        "evaluate_all_small": small,
        "metrics": {k: v for k, v in metrics.items() if k != "per_category"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
