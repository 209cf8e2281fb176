"""Train GMP-VIS.

    python train.py                                  # tiny preset on synthetic videos (CPU)
    python train.py --preset r50 data.root=data/ytvis2019 train.batch_size=4
    torchrun --nproc_per_node=8 train.py --preset r50 --amp bf16 --compile
    python train.py --resume auto        # continue from <output_dir>/checkpoint_latest.pth

Positional ``section.field=value`` arguments override any config field (``gmpvis/config.py``),
as ``infer.py`` takes them; the flags are shortcuts for ``train.*`` / ``runtime.*`` fields.
"""

from __future__ import annotations

import argparse
import json

from gmpvis.config import get_config
from gmpvis.train import build_trainer, cleanup, default_num_threads, init_distributed

# flag -> config field it sets (a shortcut for ``field=value``)
FLAG_FIELDS = {
    "resume": "train.resume",
    "output_dir": "train.output_dir",
    "amp": "train.amp",
    "max_steps": "train.max_steps",
    "device": "runtime.device",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train GMP-VIS", usage=__doc__)
    p.add_argument("--preset", default="tiny", help="tiny | r50 | r101")
    p.add_argument("--resume", help="train.resume: 'auto' or a checkpoint path")
    p.add_argument("--output-dir", help="train.output_dir")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], help="train.amp")
    p.add_argument("--compile", action="store_true", help="train.compile: torch.compile")
    p.add_argument("--max-steps", type=int, help="train.max_steps")
    p.add_argument("--device", help="runtime.device: auto | cpu | cuda")
    p.add_argument("overrides", nargs="*", help="section.field=value")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace):
    """Preset, then the shortcut flags, then the positional overrides (which win)."""
    flags = [f"{field}={getattr(args, flag)}" for flag, field in FLAG_FIELDS.items()
             if getattr(args, flag) is not None]  # fmt: skip
    if args.compile:
        flags.append("train.compile=true")
    return get_config(args.preset, flags + list(args.overrides))


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cfg = build_config(args)
    default_num_threads()
    dist_info = init_distributed(cfg.runtime.device)
    try:
        trainer = build_trainer(cfg, dist_info)
        last = trainer.train()
        if dist_info.is_main:
            print(json.dumps({"step": trainer.step, **last}, indent=1))
        return trainer
    finally:
        cleanup()


if __name__ == "__main__":
    main()
