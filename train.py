"""Train GMP-VIS.

    python train.py                                  # tiny preset on synthetic videos (CPU)
    python train.py --preset r50 data.root=data/ytvis2019 train.batch_size=4
    torchrun --nproc_per_node=8 train.py --preset r50 --amp bf16 --compile
    python train.py --resume auto        # continue from <output_dir>/checkpoint_latest.pth

Positional ``section.field=value`` arguments override any config field (``gmpvis/config.py``),
as ``infer.py`` takes them; the flags are shortcuts for ``train.*`` / ``runtime.*`` fields and
come first: a positional override wins over a flag for the same field.

Exit status: 0 when the run completes; 2 on bad input (config, missing or unreadable files,
bad checkpoints, a full disk), with one ``train.py: error:`` line; 128 + signal number (130
for SIGINT / Ctrl-C, 143 for SIGTERM) when a signal stops the run: the step in progress ends,
a checkpoint is saved and one line says where (``--resume auto`` continues exactly); a
second signal stops at once, keeping the last saved checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from gmpvis.checkpoint import CheckpointError
from gmpvis.config import get_config
from gmpvis.train import build_trainer, cleanup, default_num_threads, init_distributed
from gmpvis.train.trainer import TrainingInterrupted

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
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="resume from a checkpoint that only full unpickling reads (written by an older "
        "gmpvis): it can run code, so only for files you trust",
    )
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
        trainer = build_trainer(cfg, dist_info, trust_checkpoint=args.trust_checkpoint)
        last = trainer.train()
        if dist_info.is_main:
            print(json.dumps({"step": trainer.step, **last}, indent=1))
        return trainer
    finally:
        cleanup()


def _raise_on_sigterm(signum: int, frame) -> None:
    raise TrainingInterrupted(signum, None, None)


def stop_message(stop: TrainingInterrupted) -> str:
    name = signal.Signals(stop.signum).name
    if stop.checkpoint is not None:
        return (
            f"train.py: stopped by {name} after step {stop.step}; checkpoint saved to "
            f"{stop.checkpoint} (continue with --resume auto)"
        )
    when = "before training started" if stop.step is None else f"at step {stop.step}"
    return f"train.py: stopped by {name} {when}; nothing saved (earlier checkpoints are intact)"


def cli(argv: list[str] | None = None) -> int:
    """``main`` with one line instead of a traceback on bad input or a stop signal."""
    # until the trainer's own handlers take over, SIGTERM stops like Ctrl-C does
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        main(argv)
    except KeyboardInterrupt as stop:
        if not isinstance(stop, TrainingInterrupted):
            stop = TrainingInterrupted(signal.SIGINT, None, None)
        if os.environ.get("RANK", "0") == "0":
            print(stop_message(stop), file=sys.stderr)
        return 128 + stop.signum
    except (CheckpointError, ValueError, ImportError, OSError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # a diverged run, not bad input
        print(f"train.py: error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
