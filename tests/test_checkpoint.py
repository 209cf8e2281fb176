"""Atomic checkpoints: round trip, corrupt / missing / foreign files, no partial file left."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from gmpvis.checkpoint import (
    CheckpointError,
    capture_rng_state,
    find_resume_path,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _state(step: int) -> dict:
    model = torch.nn.Linear(3, 5)
    return {"model": model.state_dict(), "step": step, "config": {"train": {}}}


def test_round_trip_and_overwrite(tmp_path):
    path = tmp_path / "ck" / "checkpoint_latest.pth"
    first = _state(3)
    save_checkpoint(path, first)
    save_checkpoint(path, _state(7))
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7
    assert set(loaded["model"]) == {"weight", "bias"}
    # no temporary files are left next to the checkpoint
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint_latest.pth"]


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(path, _state(1))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom mid-write")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {**_state(2), "bad": Unpicklable()})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pth"]


def test_corrupt_missing_and_foreign_files_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        load_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pth.*not a gmpvis checkpoint"):
        load_checkpoint(foreign)


def test_find_resume_path(tmp_path):
    assert find_resume_path("", tmp_path) is None
    assert find_resume_path("auto", tmp_path) is None  # nothing yet: fresh start
    save_checkpoint(tmp_path / "checkpoint_latest.pth", _state(4))
    assert find_resume_path("auto", tmp_path) == tmp_path / "checkpoint_latest.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        find_resume_path(str(tmp_path / "nope.pth"), tmp_path)


def test_rng_state_restores_every_generator():
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)  # advance further
    restore_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2])
