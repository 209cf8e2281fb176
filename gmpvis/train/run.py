"""A training run, end to end: data (generated on first use if synthetic) -> trainer."""

from __future__ import annotations

import os
from pathlib import Path

from gmpvis.config import Config, set_field, validate
from gmpvis.data import YTVISAnnotations, build_dataset, build_train_transforms, split_videos
from gmpvis.data.synthetic.stream import SyntheticClips
from gmpvis.eval import read_json
from gmpvis.runtime import select_kernels
from gmpvis.train.distributed import DistInfo, barrier
from gmpvis.train.trainer import Trainer


def prepare_data(cfg: Config, is_main: bool) -> Path:
    """The annotation file; a synthetic dataset is generated (rank 0) unless a complete one
    made with the same settings is there."""
    d = cfg.data
    ann_file = Path(d.ann_file or os.path.join(d.root, "annotations.json"))
    if d.synthetic:
        if is_main:
            from gmpvis.data.synthetic import ensure_dataset

            ensure_dataset(
                d.root,
                d.synthetic_videos,
                num_frames=d.synthetic_frames,
                height=d.synthetic_size[0],
                width=d.synthetic_size[1],
                difficulty=d.synthetic_difficulty,
                seed=d.split_seed,
                ann_name=ann_file.name,
                progress=True,
            )
        barrier()
    if not ann_file.is_file():
        raise FileNotFoundError(
            f"annotation file {ann_file} not found (set data.root / data.ann_file, or "
            "data.synthetic=true to generate a synthetic dataset)"
        )
    return ann_file


def stream_dataset(cfg: Config) -> SyntheticClips:
    """``data.synthetic_stream``: fresh synthetic videos, difficulty cycling through
    ``data.synthetic_mix``, seeded apart from the generated holdout videos."""
    d = cfg.data
    return SyntheticClips(
        seed=d.split_seed + 1,  # the on-disk holdout videos come from seed split_seed
        length=d.stream_length,
        mix=d.synthetic_mix,
        num_frames=d.synthetic_frames,
        size=tuple(d.synthetic_size),
        clip_len=d.clip_len,
        max_gap=d.max_gap,
        transforms=build_train_transforms(d.scales, d.max_size),
    )


def build_trainer(cfg: Config, dist_info: DistInfo, *, trust_checkpoint: bool = False) -> Trainer:
    """Parse the annotation file once (the training index and the holdout ground truth),
    split it once, fix ``model.num_classes`` from the data, and build the trainer
    (``trust_checkpoint``: see :class:`Trainer`)."""
    select_kernels(cfg.runtime.kernels)
    ann_file = prepare_data(cfg, dist_info.is_main)
    frames_root = os.path.join(cfg.data.root, "JPEGImages")
    gt = read_json(ann_file)
    index = YTVISAnnotations.from_dict(gt, source=str(ann_file), frames_root=frames_root)
    if cfg.data.synthetic_stream:  # a fresh video per sample; the files are the holdout
        train_set, holdout_ids = stream_dataset(cfg), list(index.video_ids)
    else:
        train_ids, holdout_ids = split_videos(
            index.video_ids, cfg.data.holdout_fraction, seed=cfg.data.split_seed
        )
        train_set = build_dataset(cfg.data, "train", annotations=index, video_ids=train_ids)
    set_field(cfg, "model.num_classes", train_set.num_classes)
    validate(cfg)
    if dist_info.is_main:
        print(
            f"{len(train_set)} training videos, {len(holdout_ids)} holdout videos, "
            f"{train_set.num_classes} classes, world size {dist_info.world_size}, "
            f"device {dist_info.device}"
        )
    holdout = (gt, holdout_ids, frames_root) if holdout_ids else None
    return Trainer(cfg, dist_info, train_set, holdout, trust_checkpoint=trust_checkpoint)
