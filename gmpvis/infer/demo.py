"""The demo: a synthetic video unseen in training, tracked by the shipped model."""

from __future__ import annotations

from pathlib import Path

from gmpvis.checkpoint import CheckpointError
from gmpvis.config import Config

SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "gmpvis_tiny.pth"
DEMO_SEED = 2026  # unseen by training (train.py generates videos from data.split_seed = 0)
DEMO_FRAMES = 30


def check_demo_checkpoint(path: str | Path) -> Path:
    """The demo's checkpoint, or a :class:`CheckpointError` saying how the shipped one is
    made (before anything is generated)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"demo checkpoint {path} not found: the shipped model is trained with "
            "`python -m experiments.train_tiny --ship` and committed as "
            "gmpvis/assets/gmpvis_tiny.pth (or pass --checkpoint PATH)"
        )
    return path


def make_demo_video(cfg: Config, out_dir: str | Path) -> tuple[Path, Path]:
    """Generate the demo video under ``out_dir/data`` at the size and difficulty the model
    was trained on (``cfg.data``) -> (annotation file, frames root)."""
    from gmpvis.data.synthetic import generate_dataset

    data = Path(out_dir) / "data"
    ann = generate_dataset(
        data,
        1,
        num_frames=DEMO_FRAMES,
        height=cfg.data.synthetic_size[0],
        width=cfg.data.synthetic_size[1],
        difficulty=cfg.data.synthetic_difficulty,
        seed=DEMO_SEED,
    )
    return Path(ann), data / "JPEGImages"
