"""A training run, end to end: data (generated on first use if synthetic) -> trainer."""

from __future__ import annotations

import os
from pathlib import Path

from gmpvis.config import Config, set_field, validate
from gmpvis.data import YTVISAnnotations, build_dataset, split_videos
from gmpvis.eval import read_json
from gmpvis.runtime import select_kernels
from gmpvis.train.distributed import DistInfo, barrier
from gmpvis.train.trainer import Trainer


def prepare_data(cfg: Config, is_main: bool) -> Path:
    """The annotation file; a synthetic dataset is generated on first use (rank 0)."""
    d = cfg.data
    ann_file = Path(d.ann_file or os.path.join(d.root, "annotations.json"))
    if d.synthetic and not ann_file.is_file():
        if is_main:
            from gmpvis.data.synthetic import generate_dataset

            print(f"generating {d.synthetic_videos} synthetic videos under {d.root} ...")
            generate_dataset(
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


def build_trainer(cfg: Config, dist_info: DistInfo, *, trust_checkpoint: bool = False) -> Trainer:
    """Parse the annotation file once (the training index and the holdout ground truth),
    split it once, fix ``model.num_classes`` from the data, and build the trainer
    (``trust_checkpoint``: see :class:`Trainer`)."""
    select_kernels(cfg.runtime.kernels)
    ann_file = prepare_data(cfg, dist_info.is_main)
    frames_root = os.path.join(cfg.data.root, "JPEGImages")
    gt = read_json(ann_file)
    index = YTVISAnnotations.from_dict(gt, source=str(ann_file), frames_root=frames_root)
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
