"""Deterministic train / holdout split by video id, for a local AP on data with ground truth.

Each video id is ranked by a keyed hash (blake2b of ``"<seed>:<id>"``) and the lowest
``round(fraction * n)`` go to the holdout. The result depends only on the ids, the fraction
and the seed: not on file order, not on the Python hash seed, and adding videos to a
dataset moves no existing video from holdout to train unless it is displaced by rank.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _rank_key(video_id: int, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{int(video_id)}".encode(), digest_size=8).digest()


def split_videos(
    video_ids, holdout_fraction: float = 0.1, *, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split ``video_ids`` into ``(train_ids, holdout_ids)``, each sorted.

    At least one video goes to the holdout when ``holdout_fraction > 0`` and there are at
    least two videos; ``holdout_fraction = 0`` puts everything in train.
    """
    ids = [int(v) for v in np.asarray(video_ids).reshape(-1)]
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(
            f"split_videos: holdout_fraction must be in [0, 1), got {holdout_fraction}"
        )
    if len(set(ids)) != len(ids):
        raise ValueError("split_videos: video ids must be unique")
    n_hold = int(round(holdout_fraction * len(ids)))
    if holdout_fraction > 0 and len(ids) >= 2:
        n_hold = min(max(n_hold, 1), len(ids) - 1)
    ranked = sorted(ids, key=lambda v: _rank_key(v, seed))
    holdout = sorted(ranked[:n_hold])
    train = sorted(ranked[n_hold:])
    return train, holdout


def write_split_files(
    ann_file: str, out_dir: str, holdout_fraction: float = 0.1, *, seed: int = 0
) -> tuple[str, str]:
    """Write ``<out_dir>/train.json`` and ``<out_dir>/holdout.json`` (ground truth for
    ``python -m gmpvis.eval --gt`` and a video list for ``infer.py --ytvis-json``), each
    written atomically."""
    import json
    import os

    from gmpvis.data.json_io import atomic_write
    from gmpvis.data.ytvis import YTVISAnnotations

    ann = YTVISAnnotations.load(ann_file)
    train_ids, holdout_ids = split_videos(ann.video_ids, holdout_fraction, seed=seed)
    paths = []
    for name, ids in (("train", train_ids), ("holdout", holdout_ids)):
        path = os.path.join(out_dir, f"{name}.json")
        atomic_write(path, json.dumps(ann.subset(ids).to_dict()))  # complete or absent
        paths.append(path)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m gmpvis.data.split",
        description="Split a YouTube-VIS annotation file by video id into train / holdout.",
    )
    p.add_argument("--ann", required=True, help="annotation JSON with ground truth")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--holdout-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    train, holdout = write_split_files(
        args.ann, args.out_dir, args.holdout_fraction, seed=args.seed
    )
    print(f"wrote {train} and {holdout}")


if __name__ == "__main__":
    main()
