"""``python -m gmpvis.data.synthetic --out DIR --videos N [--difficulty hard] [--show]``.

Bad arguments and unwritable outputs end with one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gmpvis.data.synthetic.scene import DIFFICULTIES
from gmpvis.data.synthetic.writer import generate_dataset


def show_videos(ann_path: Path, count: int, fps: float = 4.0) -> list[Path]:
    """Render the ground truth of the first ``count`` videos, read back from disk, as GIFs
    under ``<root>/show/<video>.gif`` (frames + decoded RLEs through the visualiser)."""
    from gmpvis.utils.visualize import instances_from_annotations, render_video, save_gif

    data = json.loads(ann_path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    img_root = ann_path.parent / "JPEGImages"
    paths = []
    for video in data["videos"][:count]:
        frames = [np.asarray(Image.open(img_root / f).convert("RGB")) for f in video["file_names"]]
        anns = [a for a in data["annotations"] if a["video_id"] == video["id"]]
        instances = instances_from_annotations(anns, video["height"], video["width"], names)
        stem = Path(video["file_names"][0]).parent.name
        paths.append(
            save_gif(render_video(frames, instances), ann_path.parent / "show" / f"{stem}.gif", fps)
        )
    return paths


# (flag, attribute, smallest value, largest value or None)
_RANGES = [
    ("--videos", "videos", 1, None),
    ("--frames", "frames", 1, None),
    ("--height", "height", 16, None),
    ("--width", "width", 16, None),
    ("--min-area", "min_area", 0, None),
    ("--jpeg-quality", "jpeg_quality", 1, 100),
    ("--show", "show", 0, None),
]


def _range_error(args) -> str | None:
    for flag, attr, lo, hi in _RANGES:
        value = getattr(args, attr)
        if value < lo or (hi is not None and value > hi):
            bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            return f"{flag}: expected an integer {bound}, got {value}"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gmpvis.data.synthetic",
        description="Write a synthetic YouTube-VIS dataset of moving textured shapes.",
    )
    p.add_argument("--out", required=True, type=Path, help="output root")
    p.add_argument("--videos", type=int, default=64, help="number of videos")
    p.add_argument("--frames", type=int, default=12, help="frames per video")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--difficulty", default="medium", choices=sorted(DIFFICULTIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-area", type=int, default=4, help="smaller visible parts are absent")
    p.add_argument("--jpeg-quality", type=int, default=92)
    p.add_argument(
        "--show",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="K",
        help="also write overlay GIFs of the first K videos (default 1) to <out>/show/",
    )
    args = p.parse_args(argv)
    error = _range_error(args)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        ann_path = generate_dataset(
            args.out,
            args.videos,
            num_frames=args.frames,
            height=args.height,
            width=args.width,
            difficulty=args.difficulty,
            seed=args.seed,
            min_area=args.min_area,
            jpeg_quality=args.jpeg_quality,
            progress=True,
        )
        print(f"wrote {ann_path} ({args.videos} videos) in {time.perf_counter() - start:.1f}s")
        for path in show_videos(ann_path, args.show):
            print(f"wrote {path}")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
