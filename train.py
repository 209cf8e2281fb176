"""Train GMP-VIS.

    python train.py                                  # tiny preset on synthetic videos (CPU)
    python train.py --preset r50 data.root=data/ytvis2019 train.batch_size=4
    torchrun --nproc_per_node=8 train.py --preset r50 --amp bf16 --compile
    python train.py --resume auto        # continue from <output_dir>/checkpoint_latest.pth

Positional ``section.field=value`` arguments override any config field (``gmpvis/config.py``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from gmpvis.config import get_config
from gmpvis.engine.distributed import barrier, cleanup, init_distributed
from gmpvis.engine.trainer import Trainer, default_num_threads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train GMP-VIS", usage=__doc__)
    p.add_argument("--preset", default="tiny", help="tiny | r50 | r101")
    p.add_argument("--resume", default=None, help="'auto' or a checkpoint path")
    p.add_argument("--output-dir", default=None)
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("overrides", nargs="*", help="section.field=value")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):
    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"train.resume={args.resume}")
    if args.output_dir is not None:
        overrides.append(f"train.output_dir={args.output_dir}")
    if args.amp is not None:
        overrides.append(f"train.amp={args.amp}")
    if args.compile:
        overrides.append("train.compile=true")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    return get_config(args.preset, overrides)


def prepare_data(cfg, is_main: bool) -> Path:
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


def main(argv: list[str] | None = None) -> Trainer:
    args = parse_args(argv)
    cfg = build_config(args)
    default_num_threads()
    dist_info = init_distributed(args.device)
    try:
        from gmpvis.data import YTVISAnnotations, build_dataset, split_videos
        from gmpvis.data.ytvis import read_json

        ann_file = prepare_data(cfg, dist_info.is_main)
        frames_root = os.path.join(cfg.data.root, "JPEGImages")
        gt = read_json(ann_file)  # parsed once: the index below and the holdout ground truth
        index = YTVISAnnotations.from_dict(gt, source=str(ann_file), frames_root=frames_root)
        train_set = build_dataset(cfg.data, "train", annotations=index)
        cfg.model.num_classes = train_set.num_classes
        _, holdout_ids = split_videos(
            index.video_ids, cfg.data.holdout_fraction, seed=cfg.data.split_seed
        )
        holdout = (gt, holdout_ids, frames_root)
        if dist_info.is_main:
            print(
                f"{len(train_set)} training videos, {len(holdout_ids)} holdout videos, "
                f"{train_set.num_classes} classes, world size {dist_info.world_size}, "
                f"device {dist_info.device}"
            )
        trainer = Trainer(cfg, dist_info, train_set, holdout if holdout_ids else None)
        last = trainer.train()
        if dist_info.is_main:
            print(json.dumps({"step": trainer.step, **last}, indent=1))
        return trainer
    finally:
        cleanup()


if __name__ == "__main__":
    main()
