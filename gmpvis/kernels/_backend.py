"""Backend selection for the fused kernels.

``GMPVIS_KERNELS`` (read once, at import) picks the backend:

* ``auto`` (default): Triton for CUDA tensors when Triton is importable, the PyTorch
  reference otherwise.
* ``triton``: always Triton. CPU tensors work only under ``TRITON_INTERPRET=1`` (the
  Triton interpreter); otherwise a ``RuntimeError`` says why. Never a silent fallback.
* ``torch``: always the PyTorch reference.

Tests and benchmarks switch backends with :func:`use_backend`, a context manager.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "triton", "torch")


def _read_env() -> str:
    value = os.environ.get("GMPVIS_KERNELS", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"GMPVIS_KERNELS must be one of {BACKENDS}, got {value!r}")
    return value


_requested: str = _read_env()


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """True when Triton kernels run on the CPU through ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def requested_backend() -> str:
    """The backend asked for: ``auto``, ``triton`` or ``torch``."""
    return _requested


def set_backend(name: str) -> None:
    """Override ``GMPVIS_KERNELS`` for this process."""
    global _requested
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    _requested = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block with another backend, then restore the previous one."""
    previous = _requested
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def resolve(device: torch.device, op: str) -> str:
    """The backend that runs ``op`` on ``device``: ``"triton"`` or ``"torch"``.

    Raises ``RuntimeError`` when Triton is requested explicitly but cannot run.
    """
    if _requested == "torch":
        return "torch"
    if _requested == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    # explicitly "triton"
    if not triton_available():
        raise RuntimeError(f"{op}: GMPVIS_KERNELS=triton but the triton package is not installed")
    if device.type == "cuda" or (device.type == "cpu" and interpreter_enabled()):
        return "triton"
    raise RuntimeError(
        f"{op}: GMPVIS_KERNELS=triton cannot run on {device.type} tensors "
        "(use CUDA tensors, or set TRITON_INTERPRET=1 before triton is imported)"
    )


@contextlib.contextmanager
def autograd_enabled() -> Iterator[None]:
    """Let autograd record inside a custom op body (the reference path of a backward op).

    An op body runs with the Autograd dispatch keys in the thread-local exclude set, where
    ``torch.enable_grad()`` alone records no graph: lift that exclusion for the block.
    (``torch.func.vjp`` records too, but its wrapped tensors have no storage and fail
    ``opcheck``'s schema test.)
    """
    include = torch._C._dispatch_tls_local_include_set()
    exclude = torch._C._dispatch_tls_local_exclude_set()
    exclude = exclude.remove(torch._C.DispatchKey.AutogradFunctionality)
    with torch._C._ForceDispatchKeyGuard(include, exclude), torch.enable_grad():
        yield
