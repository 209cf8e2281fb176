"""Write synthetic videos as a YouTube-VIS dataset: JPEG frames and one annotation JSON.

Layout::

    <out>/JPEGImages/vid0000/00000.jpg ...
    <out>/annotations.json

Video ``i`` (0-based) is generated from ``np.random.default_rng([seed, i])``, so a video does
not depend on how many others are written, and the same arguments give the same bytes.

``annotations.json`` is removed first and written last, atomically (temp file + fsync +
rename): if it exists, every frame before it was written. :func:`ensure_dataset` reuses a
dataset only when its annotation file parses, was made with the same arguments and every
frame file exists; otherwise (missing, truncated, other arguments) it generates it again.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from gmpvis.data.json_io import InputFileError, atomic_write, read_json
from gmpvis.data.synthetic.scene import Difficulty, SyntheticVideo, generate_video, get_difficulty
from gmpvis.data.synthetic.shapes import CATEGORIES, SUPERCATEGORY


def video_annotations(video: SyntheticVideo, video_id: int, first_ann_id: int) -> list[dict]:
    """YouTube-VIS annotations of one video: one per object, one RLE/bbox/area or None per frame.

    RLEs are compressed with ``counts`` as str; ``bboxes`` are xywh of the visible mask.
    """
    num_frames, n, height, width = video.masks.shape
    anns = []
    for i in range(n):
        # pycocotools wants Fortran-ordered uint8 [H, W, K]: one RLE per frame.
        stack = np.asfortranarray(video.masks[:, i].transpose(1, 2, 0).astype(np.uint8))
        rles = mask_utils.encode(stack)
        # pixel counts from the masks: pycocotools' area() overflows from 256 RLEs on
        areas = video.masks[:, i].reshape(num_frames, -1).sum(1)
        boxes = mask_utils.toBbox(rles)
        segs, bbs, ars = [], [], []
        for t in range(num_frames):
            if areas[t] == 0:
                segs.append(None)
                bbs.append(None)
                ars.append(None)
                continue
            segs.append({"size": [height, width], "counts": rles[t]["counts"].decode("ascii")})
            bbs.append([float(x) for x in boxes[t]])
            ars.append(int(areas[t]))
        anns.append(
            {
                "id": first_ann_id + i,
                "video_id": video_id,
                "category_id": int(video.category_ids[i]),
                "iscrowd": 0,
                "height": height,
                "width": width,
                "length": num_frames,
                "segmentations": segs,
                "bboxes": bbs,
                "areas": ars,
            }
        )
    return anns


def generate_dataset(
    out_dir: str | Path,
    num_videos: int,
    *,
    num_frames: int = 12,
    height: int = 128,
    width: int = 128,
    difficulty: str | Difficulty = "medium",
    seed: int = 0,
    min_area: int = 4,
    jpeg_quality: int = 92,
    ann_name: str = "annotations.json",
    progress: bool = False,
) -> Path:
    """Generate ``num_videos`` videos under ``out_dir``; returns the annotation file path.

    Frames are JPEG (4:4:4 chroma, ``jpeg_quality``); masks in the JSON are those of the
    generator, drawn on the uncompressed frames.
    """
    if num_videos < 1:
        raise ValueError(f"num_videos: expected >= 1, got {num_videos}")
    diff = get_difficulty(difficulty)
    out_dir = Path(out_dir)
    img_root = out_dir / "JPEGImages"
    ann_path = out_dir / ann_name
    ann_path.unlink(missing_ok=True)  # an old file must not describe half-rewritten frames
    videos, annotations = [], []
    iterator = range(num_videos)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="synthetic videos", unit="video")
    for v in iterator:
        video = generate_video(
            np.random.default_rng([seed, v]),
            num_frames=num_frames,
            height=height,
            width=width,
            difficulty=diff,
            min_area=min_area,
        )
        name = f"vid{v:04d}"
        (img_root / name).mkdir(parents=True, exist_ok=True)
        file_names = []
        for t in range(num_frames):
            rel = f"{name}/{t:05d}.jpg"
            Image.fromarray(video.frames[t]).save(
                img_root / rel, quality=jpeg_quality, subsampling=0
            )
            file_names.append(rel)
        videos.append(
            {
                "id": v + 1,
                "width": width,
                "height": height,
                "length": num_frames,
                "file_names": file_names,
            }
        )
        annotations.extend(video_annotations(video, v + 1, len(annotations) + 1))
    difficulty_name = difficulty if isinstance(difficulty, str) else "custom"
    data = {
        "info": {
            "description": "gmpvis synthetic shapes",
            "seed": seed,
            "difficulty": difficulty_name,
            "num_videos": num_videos,
            "num_frames": num_frames,
            "height": height,
            "width": width,
            "min_area": min_area,
            "jpeg_quality": jpeg_quality,
        },
        "videos": videos,
        "annotations": annotations,
        "categories": [
            {"id": c.id, "name": c.name, "supercategory": SUPERCATEGORY} for c in CATEGORIES
        ],
    }
    atomic_write(ann_path, json.dumps(data, separators=(",", ":")))
    return ann_path


def dataset_problem(ann_path: str | Path, **args) -> str | None:
    """Why the dataset of ``ann_path`` cannot be reused for :func:`generate_dataset` ``args``
    (keyword arguments ``num_videos``, ``num_frames``, ``height``, ``width``, ``difficulty``,
    ``seed``, ``min_area``, ``jpeg_quality``), or None when it can."""
    ann_path = Path(ann_path)
    try:
        data = read_json(ann_path)
    except FileNotFoundError:
        return f"{ann_path} does not exist"
    except InputFileError as exc:
        return str(exc)
    info = data.get("info") if isinstance(data, dict) else None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(info, dict) or not isinstance(videos, list):
        return f"{ann_path} is not a synthetic dataset (no 'info' / 'videos')"
    for key, want in args.items():
        got = len(videos) if key == "num_videos" else info.get(key)
        if key in ("height", "width") and got is None and videos:
            got = videos[0].get(key)  # files written before the size was recorded
        if isinstance(want, Difficulty):
            want = "custom"  # a custom difficulty cannot be compared: always regenerated
            got = None
        if got != want:
            return f"{ann_path} was made with {key}={got!r}, not {want!r}"
    img_root = ann_path.parent / "JPEGImages"
    listing: dict[str, set[str]] = {}
    for v in videos:
        for name in v.get("file_names", []):
            d, base = os.path.split(name)
            if d not in listing:
                folder = img_root / d
                listing[d] = set(os.listdir(folder)) if folder.is_dir() else set()
            if base not in listing[d]:
                return f"frame {img_root / name} is missing"
    return None


def ensure_dataset(
    out_dir: str | Path,
    num_videos: int,
    *,
    num_frames: int = 12,
    height: int = 128,
    width: int = 128,
    difficulty: str | Difficulty = "medium",
    seed: int = 0,
    min_area: int = 4,
    jpeg_quality: int = 92,
    ann_name: str = "annotations.json",
    progress: bool = False,
) -> Path:
    """The annotation file of ``out_dir``, generated (again) unless a complete dataset made
    with the same arguments is there (see :func:`dataset_problem`); warns when it replaces
    an existing but unusable one."""
    args = dict(num_frames=num_frames, height=height, width=width, difficulty=difficulty,
                seed=seed, min_area=min_area, jpeg_quality=jpeg_quality)  # fmt: skip
    ann_path = Path(out_dir) / ann_name
    problem = dataset_problem(ann_path, num_videos=num_videos, **args)
    if problem is None:
        return ann_path
    if ann_path.exists():
        warnings.warn(f"regenerating the synthetic dataset: {problem}", UserWarning, stacklevel=2)
    return generate_dataset(out_dir, num_videos, **args, ann_name=ann_name, progress=progress)
