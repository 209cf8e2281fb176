"""Checkpoints: round trip, corrupt / missing / foreign files, no partial file left, loading
never runs code (old files only with trust), orphaned temporary files swept, the usual file
mode, a full disk named."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
import random
import shlex
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import gmpvis.checkpoint as checkpoint_module
from gmpvis.checkpoint import (
    CheckpointError,
    capture_rng_state,
    find_resume_path,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    temp_files,
)
from gmpvis.checkpoint import main as checkpoint_main


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


# ---------------------------------------------------------------------------- safe loading
SHIPPED = Path(__file__).resolve().parents[1] / "gmpvis" / "assets" / "gmpvis_tiny.pth"


class _RunsShell:
    """Unpickling this runs a shell command (what a crafted checkpoint would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _crafted(tmp_path: Path, marker: Path, *, zip_format: bool) -> Path:
    path = tmp_path / f"crafted_{zip_format}.pth"
    payload = {**_state(1), "rng": _RunsShell(f"touch {shlex.quote(str(marker))}")}
    if zip_format:
        torch.save(payload, path)
    else:  # a plain pickle, as torch.load's legacy path reads it
        path.write_bytes(pickle.dumps(payload))
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("zip_format", [True, False])
def test_crafted_checkpoint_is_refused_without_running_code(tmp_path, zip_format):
    marker = tmp_path / "marker"
    path = _crafted(tmp_path, marker, zip_format=zip_format)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert not marker.exists()
    assert str(path) in str(err.value)
    if zip_format:  # the blocked global is named, and what to do about a trusted file
        assert "posix.system" in str(err.value) and "--trust-checkpoint" in str(err.value)
    # the file is a real exploit: full unpickling (trust=True) does run it
    with contextlib.suppress(CheckpointError):
        load_checkpoint(path, trust=True)
    assert marker.exists()


def _legacy_rng() -> dict:
    """The RNG entry as checkpoints written before weights_only loading held it."""
    state = {"python": random.getstate(), "numpy": np.random.get_state()}
    return {**state, "torch": torch.get_rng_state()}


def test_old_format_checkpoint_needs_trust_and_upgrades(tmp_path):
    old = tmp_path / "old.pth"
    torch.save({**_state(5), "rng": _legacy_rng()}, old)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    with pytest.raises(CheckpointError, match="numpy.*--trust-checkpoint.*upgrade"):
        load_checkpoint(old)
    restore_rng_state(load_checkpoint(old, trust=True)["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])

    new = tmp_path / "new.pth"
    assert checkpoint_main(["upgrade", str(old), str(new)]) == 0
    state = torch.load(new, weights_only=True)  # raises if anything unsafe is left
    assert state["step"] == 5
    restore_rng_state(state["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_rng_state_is_plain_values_and_tensors(tmp_path):
    random.random(), np.random.randn()  # numpy caches its second gaussian: has_gauss=1
    path = save_checkpoint(tmp_path / "c.pth", {**_state(2), "rng": capture_rng_state()})
    state = torch.load(path, weights_only=True)
    expected = (random.gauss(0, 1), np.random.randn(), torch.randn(2))
    restore_rng_state(state["rng"])
    got = (random.gauss(0, 1), np.random.randn(), torch.randn(2))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    assert state["rng"]["numpy"]["has_gauss"] == 1
    with pytest.raises(CheckpointError, match="malformed RNG state"):
        restore_rng_state({**state["rng"], "numpy": {"kind": "MT19937"}})


def test_shipped_checkpoint_loads_without_trust():
    state = load_checkpoint(SHIPPED)
    assert set(state) == {"model", "config", "category_ids", "step"}
    assert all(isinstance(v, torch.Tensor) for v in state["model"].values())
    assert isinstance(state["config"], dict) and isinstance(state["step"], int)
    assert all(isinstance(c, int) for c in state["category_ids"])


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        find_resume_path(str(tmp_path), tmp_path)
    (tmp_path / "checkpoint_latest.pth").mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        find_resume_path("auto", tmp_path)


# ---------------------------------------------------------------------------- writing
def test_orphaned_temp_files_are_swept_and_mode_follows_umask(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    orphans = [
        tmp_path / ".checkpoint_latest.pth.k1ll3d.tmp",
        tmp_path / ".checkpoint_latest.pth.x.tmp",
    ]
    for orphan in orphans:
        orphan.write_bytes(os.urandom(64))
    other = tmp_path / ".other.pth.abc.tmp"  # another file's temporary: not ours to remove
    other.write_bytes(b"x")
    assert temp_files(path) == sorted(orphans)
    old = os.umask(0o027)
    try:
        save_checkpoint(path, _state(1))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        os.umask(0o022)
        save_checkpoint(path, _state(2))
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pth.abc.tmp", path.name]


class _DiskFull(io.FileIO):
    """A file whose writes fail with ENOSPC once ``room`` bytes are written."""

    room = 4096

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_disk_full_names_the_path_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(path, _state(1))
    before = path.read_bytes()
    big = {**_state(2), "extra": torch.randn(10_000)}
    monkeypatch.setattr(checkpoint_module.os, "fdopen", lambda fd, mode: _DiskFull(fd, "wb"))
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(path, big)
    message = str(err.value)
    assert str(path) in message and "no space left on device" in message
    assert "enforce fail" not in message and "inline_container" not in message
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert temp_files(path) == []
    monkeypatch.undo()  # other errors are not reported as a full disk
    with pytest.raises(RuntimeError, match="boom") as err:

        class Unpicklable:
            def __reduce__(self):
                raise RuntimeError("boom")

        save_checkpoint(path, {**big, "bad": Unpicklable()})
    assert "no space" not in str(err.value)


# ---------------------------------------------------------------------------- infer.py
def test_infer_refuses_unsafe_checkpoint_unless_trusted(tmp_path, monkeypatch, capsys):
    import infer
    from gmpvis.config import config_to_dict, get_config
    from gmpvis.model import build_model

    small = ["model.hidden_dim=32", "model.dim_feedforward=32", "model.tiny_channels=8"]
    cfg = get_config("tiny", [*small, "model.num_classes=3"])
    weights = build_model(cfg).state_dict()
    old = tmp_path / "old.pth"  # as an older gmpvis wrote it: numpy objects in "rng"
    torch.save(
        {"model": weights, "config": config_to_dict(cfg), "step": 3, "rng": _legacy_rng()}, old
    )
    ran = []
    monkeypatch.setattr(infer, "run_inference", lambda model, *args: ran.append(model) or {})
    argv = ["--checkpoint", str(old), "--frames", str(tmp_path), "--output-dir", str(tmp_path)]
    assert infer.cli(argv) == 2 and not ran
    err = capsys.readouterr().err.strip()
    assert err.startswith("infer.py: error: checkpoint") and "--trust-checkpoint" in err
    assert len(err.splitlines()) == 1
    assert infer.cli([*argv, "--trust-checkpoint"]) == 0 and len(ran) == 1
    marker = tmp_path / "marker"
    crafted = _crafted(tmp_path, marker, zip_format=True)
    assert infer.cli(["--checkpoint", str(crafted), *argv[2:]]) == 2 and not marker.exists()
