"""Annotation loading at YouTube-VIS scale: ``python -m benchmarks.bench_data_load``.

Generates a YouTube-VIS style file with 2,883 videos (the size of a full training set:
720p frames, 20-36 frames per video, 1-3 instances, ~10 % null frames, masks of realistic
size as uncompressed RLE lists like the official train files, or as compressed strings), then
times in a fresh subprocess each:

- ``json.load``: the floor, parsing alone;
- ``YTVISAnnotations.load``: parse + validate every segmentation + build the compact index;
- the same with ``frames_root`` (every frame file checked to exist; empty placeholder files);
- with ``cache_dir``: the first load (writes the validated index as ``.npz``) and a later one
  (reads it, checks the frame files; no JSON parsing);

and reports peak RSS, the pickled size of the index (what each DataLoader worker receives)
and the time to decode the masks of one 5-frame clip. Prints a table and writes
``benchmarks/results/data_load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

MODES = (
    "json.load",
    "YTVISAnnotations.load",
    "load+frame check",
    "cache build",  # first load with cache_dir: parse, validate, write the .npz
    "cached load+frames",  # later loads: read the .npz, check frame files
)
RESULTS = os.path.join(os.path.dirname(__file__), "results", "data_load.json")


def _ellipse_counts(h, w, cy, cx, ry, rx) -> np.ndarray:
    """Uncompressed column-major RLE of an ellipse kept inside the frame (analytic, fast)."""
    cols = np.arange(max(int(cx - rx) + 1, 1), min(int(cx + rx), w - 1))
    half = ry * np.sqrt(np.clip(1 - ((cols - cx) / rx) ** 2, 0, 1))
    y0 = np.clip(np.ceil(cy - half), 1, h - 2).astype(np.int64)
    y1 = np.clip(np.floor(cy + half) + 1, 2, h - 1).astype(np.int64)
    keep = y1 > y0
    cols, y0, y1 = cols[keep], y0[keep], y1[keep]
    # runs alternate zeros/ones; each column adds a ones-run [c*h + y0, c*h + y1)
    edges = np.stack([cols * h + y0, cols * h + y1], 1).reshape(-1)
    return np.diff(np.concatenate(([0], edges, [h * w])))


def generate(path: str, n_videos: int, fmt: str, seed: int = 0, frames_root: str | None = None):
    """Stream a YouTube-VIS style JSON to ``path`` (never holding it all in memory)."""
    import pycocotools.mask as mask_utils

    rng = np.random.default_rng(seed)
    sizes = [(720, 1280)] * 6 + [(1080, 1920), (480, 640)]
    ann_id = 0
    with open(path, "w") as f:
        f.write('{"categories": ')
        json.dump([{"id": i + 1, "name": f"class{i + 1}"} for i in range(40)], f)
        f.write(', "videos": [')
        lengths, shapes = [], []
        for v in range(n_videos):
            h, w = sizes[rng.integers(len(sizes))]
            length = int(rng.integers(20, 37))
            names = [f"v{v:05d}/{5 * t:05d}.jpg" for t in range(length)]
            if frames_root is not None:
                os.makedirs(os.path.join(frames_root, f"v{v:05d}"), exist_ok=True)
                for n in names:
                    open(os.path.join(frames_root, n), "wb").close()
            rec = {"id": v + 1, "width": w, "height": h, "length": length, "file_names": names}
            f.write(("," if v else "") + json.dumps(rec))
            lengths.append(length)
            shapes.append((h, w))
        f.write('], "annotations": [')
        first = True
        for v in range(n_videos):
            h, w = shapes[v]
            for _ in range(int(rng.integers(1, 4))):
                ann_id += 1
                cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
                ry, rx = rng.uniform(0.03, 0.25) * h, rng.uniform(0.02, 0.15) * w
                segs = []
                for _t in range(lengths[v]):
                    if rng.random() < 0.1:
                        segs.append(None)
                        continue
                    cy += rng.normal(0, 3)
                    cx += rng.normal(0, 3)
                    counts = _ellipse_counts(h, w, cy, cx, ry, rx)
                    if fmt == "rle":
                        enc = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
                        segs.append({"size": [h, w], "counts": enc["counts"].decode()})
                    else:
                        segs.append({"size": [h, w], "counts": counts.tolist()})
                rec = {
                    "id": ann_id,
                    "video_id": v + 1,
                    "category_id": int(rng.integers(1, 41)),
                    "iscrowd": 0,
                    "segmentations": segs,
                }
                f.write(("" if first else ",") + json.dumps(rec))
                first = False
        f.write("]}")


def _measure(mode: str, path: str, frames_root: str) -> dict:
    """Run in a fresh process: time one way of loading, peak RSS, index size."""
    import pickle
    import resource

    t_import = time.perf_counter()
    from gmpvis.data import YTVISAnnotations  # torch etc.: timed apart, paid once per process

    t_import = time.perf_counter() - t_import
    with open("/proc/self/statm") as f:  # resident pages after the imports (Linux)
        rss0 = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    t0 = time.perf_counter()
    if mode == "json.load":
        with open(path) as f:
            json.load(f)
        out = {}
    else:
        root = frames_root if mode in ("load+frame check", "cached load+frames") else None
        cache = path + ".cache" if mode.startswith("cache") else None
        index = YTVISAnnotations.load(path, frames_root=root, cache_dir=cache)
        out = {"videos": len(index), "annotations": len(index.ann_ids)}
    out["seconds"] = time.perf_counter() - t0
    out["import_s"] = t_import
    if mode == "YTVISAnnotations.load":
        t1 = time.perf_counter()
        blob = pickle.dumps(index)
        out["pickle_s"] = time.perf_counter() - t1
        out["pickled_mib"] = len(blob) / 2**20
        v = int(np.argmax(index.heights))  # a 1080p video when there is one
        anns = index.annotations_of(v)
        frames = np.arange(5)
        t2 = time.perf_counter()
        for _ in range(5):
            index.decode_masks(anns, frames)
        out["clip_masks_ms"] = (time.perf_counter() - t2) / 5 * 1e3
        out["clip_masks_shape"] = [len(anns), 5, int(index.heights[v]), int(index.widths[v])]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_after_import_mib"] = rss0
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=2883)
    p.add_argument("--formats", nargs="+", default=["urle", "rle"], choices=["urle", "rle"])
    p.add_argument("--workdir", default=None, help="where to write the files (default: tmp)")
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--_measure", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._measure:
        print(json.dumps(_measure(*args._measure)))
        return []

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for fmt in args.formats:
            path = os.path.join(tmp, f"ytvis_{fmt}.json")
            frames_root = os.path.join(tmp, f"frames_{fmt}")
            t0 = time.perf_counter()
            generate(path, args.videos, fmt, frames_root=frames_root)
            gen_s = time.perf_counter() - t0
            mib = os.path.getsize(path) / 2**20
            print(f"generated {path}: {mib:.0f} MiB in {gen_s:.0f} s", flush=True)
            for mode in MODES:
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_data_load",
                    "--_measure",
                    mode,
                    path,
                    frames_root,
                ]
                res = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=os.path.dirname(os.path.dirname(__file__)),
                )
                r = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append({"format": fmt, "file_mib": mib, "mode": mode, **r})
    base = {r["format"]: r["seconds"] for r in rows if r["mode"] == "json.load"}
    header = (
        f"{'format':6} {'file MiB':>8} {'mode':22} {'s':>6} {'x json':>6} {'+RSS MiB':>8} extra"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        extra = ""
        if "pickled_mib" in r:
            extra = (
                f"index pickle {r['pickled_mib']:.1f} MiB in {r['pickle_s']:.2f} s; "
                f"clip masks {r['clip_masks_shape']} {r['clip_masks_ms']:.1f} ms"
            )
        print(
            f"{r['format']:6} {r['file_mib']:8.0f} {r['mode']:22} {r['seconds']:6.2f} "
            f"{r['seconds'] / base[r['format']]:6.2f} "
            f"{r['peak_rss_mib'] - r['rss_after_import_mib']:8.0f} {extra}"
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        machine = {
            "cpu_count": os.cpu_count(),
            "load_avg_1_5_15_at_end": os.getloadavg(),
            "note": "wall times on a shared CPU box scale with its load; compare rows of one run",
        }
        json.dump(
            {
                "videos": args.videos,
                "python": sys.version.split()[0],
                "machine": machine,
                "rows": rows,
            },
            f,
            indent=1,
        )
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
