"""On-disk cache of a validated annotation index: one ``.npz`` (no pickle), keyed by file.

Parsing a large YouTube-VIS JSON (hundreds of MB of uncompressed RLE) is bounded by Python's
JSON parser; the compact index it produces is a handful of flat arrays that numpy reads back
in a fraction of that time. The cache key holds the annotation file's absolute path, size
and mtime, so an edited file is parsed again.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

CACHE_VERSION = 2
ARRAYS = (
    "video_ids", "heights", "widths", "lengths",
    "ann_ids", "ann_video", "ann_labels", "ann_iscrowd", "ann_seg0", "ann_ptr",
    "_seg_kind", "_seg_lo", "_seg_hi", "_rle_bytes", "_ring_ptr", "_coords",
)  # fmt: skip


def cache_path(cache_dir, ann_file, *flags) -> str:
    """``<cache_dir>/<stem>-<hash of path, size, mtime, flags>.npz``."""
    st = os.stat(ann_file)
    key = json.dumps([CACHE_VERSION, os.path.abspath(ann_file), st.st_size, st.st_mtime_ns, flags])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(ann_file))[0]
    return os.path.join(os.fspath(cache_dir), f"{stem}-{digest}.npz")


def save_index(index, path) -> None:
    """Write ``index`` (a YTVISAnnotations) to ``path``; atomic (temp file + rename)."""
    meta = {
        "version": CACHE_VERSION,
        "source": index.source,
        "category_ids": index.category_ids,
        "category_names": index.category_names,
        "names": index._names,
        "skipped": index.skipped,
    }
    arrays = {k: getattr(index, k) for k in ARRAYS}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_index(cls, path):
    """Read an index of class ``cls`` written by :func:`save_index`.

    Raises OSError / ValueError / KeyError for an unreadable, foreign or old-version file.
    """
    with np.load(os.fspath(path), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta.get("version") != CACHE_VERSION:
            raise ValueError(f"{path}: index cache version {meta.get('version')}")
        new = object.__new__(cls)
        for k in ARRAYS:
            setattr(new, k, z[k])
    new.source = meta["source"]
    new.category_ids, new.category_names = meta["category_ids"], meta["category_names"]
    new._names = meta["names"]
    new.skipped = [tuple(x) for x in meta["skipped"]]
    new._index_of = {int(v): i for i, v in enumerate(new.video_ids)}
    return new
