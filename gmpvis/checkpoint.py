"""Checkpoints written atomically, with everything needed to resume a run exactly.

A checkpoint is one ``torch.save`` file: model, optimizer, scheduler, grad scaler, RNG states
(python, numpy, torch CPU and CUDA), step and config. It is written to a temporary file in
the same directory, flushed to disk, then renamed over the target (``os.replace`` is atomic
on POSIX), so a run killed at any instant leaves either the old or the new checkpoint whole.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "checkpoint_latest.pth"


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, corrupt or of the wrong kind."""


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch CPU and every CUDA device."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # make the rename itself durable
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


REQUIRED_KEYS = ("model", "step", "config")


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint, raising :class:`CheckpointError` that names the file when unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # weights_only=False: the file holds RNG states and config dicts written by us
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file: {exc}") from exc
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} is not a gmpvis checkpoint: expected keys {REQUIRED_KEYS}, "
            f"found {keys}"
        )
    return state


def find_resume_path(resume: str, output_dir: str | os.PathLike) -> Path | None:
    """``--resume`` value -> checkpoint path. ``auto`` picks ``<output_dir>/checkpoint_latest``
    if it exists (else None: a fresh start); any other non-empty value must be a file."""
    if not resume:
        return None
    if resume == "auto":
        candidate = Path(output_dir) / LATEST
        return candidate if candidate.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: no such checkpoint file")
    return path
