"""Where and in which precision things run: the AMP table, autocast and device selection.

One home for what training and inference both need: ``AMP_DTYPES`` maps the names a config
accepts (``train.amp``, ``infer.amp``) to dtypes, :func:`autocast` builds the context for a
device, and :func:`resolve_device` turns ``"auto" | "cpu" | "cuda[:i]"`` into a device (and
makes a CUDA device the current one, so that Triton kernels launch on it).
"""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "off": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def amp_dtype(name: str) -> torch.dtype | None:
    """``"off" | "bf16" | "fp16"`` -> dtype (None for off); ValueError naming the choices."""
    if name not in AMP_DTYPES:
        raise ValueError(f"amp: expected one of {sorted(AMP_DTYPES)}, got {name!r}")
    return AMP_DTYPES[name]


def autocast(device: torch.device, amp: str, *, cache_enabled: bool = True):
    """``torch.autocast`` for ``device`` in the dtype named by ``amp`` (a no-op for off).

    ``cache_enabled=False`` is for CUDA graph capture: cached weight casts made during
    capture would be freed with the autocast region."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"`` -> device.

    A CUDA device becomes the current device: Triton launches on the current device, and
    the caching allocator and streams follow it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {name!r}: expected auto, cpu or cuda[:index]") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    elif dev.type != "cpu":
        raise ValueError(f"device {name!r}: expected auto, cpu or cuda[:index]")
    return dev


def select_kernels(backend: str) -> None:
    """``runtime.kernels``: ``auto | triton | torch`` for every op; ``""`` keeps
    ``GMPVIS_KERNELS`` (default auto)."""
    if backend:
        from gmpvis import kernels  # triton loads only when a run starts

        kernels.set_backend(backend)


def setup_runtime(device: str, kernels: str = "") -> torch.device:
    """Apply a ``runtime`` config section: the kernel backend and the device (see
    :func:`select_kernels`, :func:`resolve_device`)."""
    select_kernels(kernels)
    return resolve_device(device)
