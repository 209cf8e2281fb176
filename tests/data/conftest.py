"""Tiny YouTube-VIS style datasets written to tmp dirs (JPEG frames + JSON), for data tests.

Every instance is a random ellipse moving across the frames; segmentations cycle through
compressed RLE (string counts), uncompressed RLE (list counts), polygons and null frames,
so one dataset exercises every format. ``truth[(ann_id, frame)]`` is the expected mask.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image


@dataclass
class TinyDataset:
    root: str  # frames root (<root>/JPEGImages/...)
    ann_file: str
    data: dict
    truth: dict = field(default_factory=dict)  # (ann id, frame) -> bool [H, W]

    @property
    def frames_root(self) -> str:
        return os.path.join(self.root, "JPEGImages")


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a mask (column-major, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] == 1 else runs


def _ellipse(h, w, cy, cx, ry, rx) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def write_dataset(
    base: str,
    *,
    n_videos: int = 3,
    lengths=(5, 8),
    sizes=((37, 53), (48, 41)),
    n_instances=(1, 3),
    n_categories: int = 3,
    seed: int = 0,
    null_prob: float = 0.25,
    formats=("rle", "urle", "poly"),
) -> TinyDataset:
    rng = np.random.default_rng(seed)
    frames_root = os.path.join(base, "JPEGImages")
    cat_ids = sorted(rng.choice(np.arange(1, 50), n_categories, replace=False).tolist())
    videos, anns, truth = [], [], {}
    ann_id = 100
    for v in range(n_videos):
        h, w = sizes[v % len(sizes)]
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        name = f"vid{v:04d}"
        os.makedirs(os.path.join(frames_root, name), exist_ok=True)
        file_names = [f"{name}/{t:05d}.jpg" for t in range(length)]
        for fn in file_names:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(img).save(os.path.join(frames_root, fn), quality=90)
        vid = 7 + 3 * v
        videos.append(
            {"id": vid, "width": w, "height": h, "length": length, "file_names": file_names}
        )
        for k in range(int(rng.integers(n_instances[0], n_instances[1] + 1))):
            ann_id += int(rng.integers(1, 5))
            fmt = formats[(v + k) % len(formats)]
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
            vy, vx = rng.normal(0, 1.5, 2)
            segs = []
            for t in range(length):
                if t > 0 and rng.random() < null_prob:
                    segs.append(None)
                    continue
                y, x = cy + vy * t, cx + vx * t
                ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
                if fmt == "poly":
                    x0, x1 = max(x - rx, 0), min(x + rx, w - 1)
                    y0, y1 = max(y - ry, 0), min(y + ry, h - 1)
                    seg = [[x0, y0, x1, y0, x1, y1, x0, y1], [0.5, 0.5, 3.5, 0.5, 2.0, 4.0]]
                    rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                    with warnings.catch_warnings():  # pycocotools vs numpy 2 copy keyword
                        warnings.simplefilter("ignore", DeprecationWarning)
                        m = mask_utils.decode(rle).astype(bool)
                else:
                    m = _ellipse(h, w, y, x, ry, rx)
                    if fmt == "urle":
                        seg = {"size": [h, w], "counts": _runs(m)}
                    else:
                        enc = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                        seg = {"size": [h, w], "counts": enc["counts"].decode("ascii")}
                segs.append(seg)
                truth[(ann_id, t)] = m
            anns.append(
                {
                    "id": ann_id,
                    "video_id": vid,
                    "category_id": int(rng.choice(cat_ids)),
                    "iscrowd": 0,
                    "segmentations": segs,
                    "areas": [None if s is None else 1 for s in segs],
                    "bboxes": [None if s is None else [0, 0, 1, 1] for s in segs],
                }
            )
    cats = [{"id": c, "name": f"cat{c}"} for c in reversed(cat_ids)]
    data = {"videos": videos, "annotations": anns, "categories": cats}
    ann_file = os.path.join(base, "annotations.json")
    with open(ann_file, "w") as f:
        json.dump(data, f)
    return TinyDataset(root=base, ann_file=ann_file, data=data, truth=truth)


@pytest.fixture
def tiny_dataset(tmp_path) -> TinyDataset:
    return write_dataset(str(tmp_path / "ds"))


@pytest.fixture
def make_dataset(tmp_path):
    counter = iter(range(1000))

    def make(**kw) -> TinyDataset:
        return write_dataset(str(tmp_path / f"ds{next(counter)}"), **kw)

    return make
