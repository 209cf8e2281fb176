"""Data of the association benchmark: generated video sets and their cached model outputs.

Every set is a YouTube-VIS dataset generated from a seed of its own; none of these seeds is
a training seed (the detector trains on the stream ``default_rng([split_seed + 1, i])``, its
holdout on ``split_seed``, the demo on 2026). ``heads`` trains the association heads,
``val`` tunes every threshold, ``test`` is touched by nothing but the final evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gmpvis.data.synthetic import ensure_dataset
from gmpvis.eval import read_json
from gmpvis.train.cache import CachedVideo, cache_videos

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "association"


@dataclass(frozen=True)
class VideoSet:
    """``videos`` videos of ``frames`` frames at 128 px, difficulty ``difficulty``, ``seed``."""

    name: str
    difficulty: str
    videos: int
    frames: int
    seed: int

    @property
    def root(self) -> Path:
        return DATA / self.name


def sets(test_videos: int = 48, val_videos: int = 24, heads_videos: int = 64) -> dict:
    """The benchmark's sets: heads training (mixed), validation and test per difficulty."""
    out = {}
    for k, d in enumerate(("easy", "medium", "hard")):
        out[f"heads_{d}"] = VideoSet(f"heads_{d}_{heads_videos}", d, heads_videos, 24, 5101 + k)
        out[f"val_{d}"] = VideoSet(f"val_{d}_{val_videos}", d, val_videos, 24, 7101 + k)
        out[f"test_{d}"] = VideoSet(f"test_{d}_{test_videos}", d, test_videos, 24, 9101 + k)
    return out


def generate(vs: VideoSet) -> Path:
    """The set's annotation file (generated unless a complete one is there)."""
    return ensure_dataset(
        vs.root, vs.videos, num_frames=vs.frames, difficulty=vs.difficulty, seed=vs.seed
    )


def cached(vs: VideoSet, model, cfg, cache_dir: Path, tag: str) -> tuple[dict, list[CachedVideo]]:
    """(ground truth, cached outputs of ``model`` on the set); the cache file is keyed by
    ``tag`` (the detector) and reused."""
    ann = generate(vs)
    gt = read_json(ann)
    path = cache_dir / f"{tag}_{vs.name}.pt"
    if path.is_file():
        return gt, torch.load(path, weights_only=False)
    tic = time.perf_counter()
    videos = cache_videos(model, cfg, gt, str(vs.root / "JPEGImages"))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(videos, path)
    print(f"cached {vs.name}: {len(videos)} videos in {time.perf_counter() - tic:.0f} s")
    return gt, videos
