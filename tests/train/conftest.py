"""Shared by the training tests: the tiny preset shrunk further (a step well under a second
on one core) and one small synthetic dataset made with exactly those settings (so that
``train.py`` reuses it instead of regenerating it)."""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL = [
    "data.synthetic_videos=4",
    "data.synthetic_frames=4",
    "data.synthetic_size=64,64",
    "data.synthetic_difficulty=hard",
    "data.scales=64",
    "data.max_size=64",
    "data.clip_len=2",
    "data.holdout_fraction=0.25",
    "model.num_queries=6",
    "model.hidden_dim=32",
    "model.dim_feedforward=32",
    "model.tiny_channels=8",
    "train.batch_size=1",
    "train.log_every=1",
    "train.eval_every=1000",
    "train.ckpt_every=1",
]


@pytest.fixture(scope="session")
def small() -> list[str]:
    """The overrides above (a fresh list per use)."""
    return list(SMALL)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    from gmpvis.config import get_config
    from gmpvis.train import prepare_data

    root = tmp_path_factory.mktemp("synthetic")
    prepare_data(get_config("tiny", SMALL + [f"data.root={root}"]), is_main=True)
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread, as the subprocess runs use (OMP_NUM_THREADS=1): the tiny model's
    ops are too small for a second thread to pay for its synchronisation."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
