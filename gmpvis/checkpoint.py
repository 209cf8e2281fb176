"""Checkpoints written atomically, loaded without running code, with everything needed to
resume a run exactly.

A checkpoint is one ``torch.save`` file: model, optimizer, scheduler, grad scaler, RNG states
(python, numpy, torch CPU and CUDA), step and config. Every value is a tensor or a plain
Python value (dict, list, int, float, str, bool, None), so ``torch.load(weights_only=True)``
reads it and a crafted file cannot execute anything while it is read. Checkpoints written
before that (numpy RNG state pickled as numpy objects) load only with ``trust=True``
(``--trust-checkpoint``), or after ``python -m gmpvis.checkpoint upgrade OLD [NEW]``.

Writes go to a temporary file in the same directory (created with the usual, umask-derived
file mode), flushed to disk, then renamed over the target (``os.replace`` is atomic on
POSIX), so a run killed at any instant leaves either the old or the new checkpoint whole.
Temporary files orphaned by a kill during a write are removed before the next write.
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import random
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "checkpoint_latest.pth"
TRUST_HINT = (
    "If you trust the file (e.g. a checkpoint written by an older gmpvis), load it with "
    "--trust-checkpoint (load_checkpoint(..., trust=True)), or convert it once: "
    "python -m gmpvis.checkpoint upgrade {path}"
)


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, corrupt, unsafe, of the wrong kind, or that could
    not be written."""


# ---------------------------------------------------------------------------- RNG states
def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch CPU and every CUDA device, as plain values and
    tensors (what ``weights_only=True`` loads)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return plain_rng_state(state)


def plain_rng_state(state: dict[str, Any]) -> dict[str, Any]:
    """The python and numpy states as dicts of ints, floats and lists (they are tuples, and
    numpy's holds an ndarray, which ``weights_only=True`` refuses)."""
    out = dict(state)
    if isinstance(state["python"], tuple):
        version, mt, gauss_next = state["python"]
        out["python"] = {"version": version, "state": list(mt), "gauss_next": gauss_next}
    if isinstance(state["numpy"], tuple):
        kind, keys, pos, has_gauss, cached = state["numpy"][:5]
        out["numpy"] = {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return out


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; also takes the tuples that older checkpoints
    (loaded with ``trust=True``) hold. A malformed state raises :class:`CheckpointError`."""
    try:
        py, npy = state["python"], state["numpy"]
        if isinstance(py, dict):
            py = (py["version"], tuple(int(x) for x in py["state"]), py["gauss_next"])
        if isinstance(npy, dict):
            keys = np.asarray(npy["keys"], dtype=np.uint32)
            npy = (npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
        random.setstate(py)
        np.random.set_state(npy)
        # set_rng_state takes CPU byte tensors; a map_location may have moved them
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise CheckpointError(f"malformed RNG state in checkpoint: {err!r}") from err


# ---------------------------------------------------------------------------- writing
def temp_files(path: str | os.PathLike) -> list[Path]:
    """Temporary files that :func:`save_checkpoint` of ``path`` creates and renames away;
    any still there were orphaned by a process killed mid-write."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{_glob_escape(path.name)}.*.tmp"))


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def sweep_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove the orphaned temporary files of ``path``; returns those removed."""
    removed = []
    for tmp in temp_files(path):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new temporary file next to ``path``. ``os.open`` with mode 0o666 lets the umask give
    the usual mode (``mkstemp`` would make it 0600). The name comes from ``secrets``: the
    ``random`` module's state belongs to the run and must not move."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT error in ``exc``'s chain (torch.save wraps the writer's OSError
    in a RuntimeError), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename). Orphaned
    temporary files of ``path`` are removed first. A full disk raises
    :class:`CheckpointError` naming the path; the previous file at ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temp_files(path)
    tmp = None
    try:
        fd, tmp = _open_temp(path)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        full = _disk_full(exc)
        if full is not None:
            free = shutil.disk_usage(path.parent).free
            reason = (
                "no space left on device" if full.errno == errno.ENOSPC else "disk quota exceeded"
            )
            raise CheckpointError(
                f"cannot write checkpoint {path}: {reason} ({free / 2**20:.1f} MiB free "
                f"in {path.parent}); the previous {path.name} there, if any, is unchanged"
            ) from exc
        raise
    # make the rename itself durable
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


# ---------------------------------------------------------------------------- reading
REQUIRED_KEYS = ("model", "step", "config")
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng")


def _check_file(path: Path, what: str = "checkpoint") -> None:
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")


def _reason(exc: BaseException) -> str:
    """One line from torch.load's error: the unpickler's own complaint, not its advice."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", trust: bool = False
) -> dict:
    """Load a checkpoint, raising :class:`CheckpointError` that names the file when unusable.

    ``torch.load(weights_only=True)``: tensors and plain Python values only, nothing in the
    file is executed. ``trust=True`` unpickles everything (older checkpoints hold numpy
    objects): only for files from a trusted source, since a crafted file can run code then.
    """
    path = Path(path)
    _check_file(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if blocked and not trust:
            raise CheckpointError(
                f"checkpoint {path} holds a Python object ({blocked.group(1)}) that only "
                "full unpickling reads, which can run code: refused. "
                + TRUST_HINT.format(path=path)
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a torch file ({_reason(exc)})"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a torch file ({_reason(exc)})"
        ) from exc
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
        if candidate.is_dir():
            _check_file(candidate, "--resume auto:")
        return candidate if candidate.is_file() else None
    path = Path(resume)
    if path.is_dir():
        _check_file(path, "--resume")
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: no such checkpoint file")
    return path


def upgrade_checkpoint(src: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Rewrite a trusted older checkpoint (pickled numpy RNG state) in the format that
    ``weights_only=True`` loads; ``dest`` defaults to ``src`` (replaced atomically)."""
    state = load_checkpoint(src, trust=True)
    if isinstance(state.get("rng"), dict):
        state["rng"] = plain_rng_state(state["rng"])
    out = save_checkpoint(dest or src, state)
    try:
        torch.load(out, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{out}: rewritten, but it still holds objects other than tensors and plain "
            f"values: {exc}"
        ) from exc
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gmpvis.checkpoint",
        description="upgrade SRC [DEST]: rewrite a TRUSTED older checkpoint (loading it runs "
        "its pickled code) so that it loads safely, without --trust-checkpoint",
    )
    p.add_argument("command", choices=["upgrade"])
    p.add_argument("src")
    p.add_argument("dest", nargs="?")
    args = p.parse_args(argv)
    try:
        out = upgrade_checkpoint(args.src, args.dest)
    except (CheckpointError, OSError) as err:
        print(f"gmpvis.checkpoint: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
