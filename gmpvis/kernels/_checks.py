"""Argument checks shared by the public kernel functions.

Errors are ``ValueError``s that name the op, the argument and the shape it expected.
"""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fmt(spec: tuple[int | str | None, ...], dims: dict[str, int]) -> str:
    parts = []
    for s in spec:
        if s is None:
            parts.append("*")
        elif isinstance(s, str) and s in dims:
            parts.append(f"{s}={dims[s]}")
        else:
            parts.append(str(s))
    return "[" + ", ".join(parts) + "]"


def check_tensor(
    op: str,
    name: str,
    tensor: object,
    spec: tuple[int | str | None, ...],
    dims: dict[str, int],
    *,
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES,
    device: torch.device | None = None,
) -> None:
    """Check ``tensor``'s rank, shape, dtype and device; bind symbolic dims into ``dims``.

    ``spec`` holds an int (exact size), a str (a symbol: bound at first sight, compared
    after) or None (any size). Raises ``ValueError`` naming ``op`` and ``name``.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != len(spec):
        raise ValueError(
            f"{op}: {name} must have shape {_fmt(spec, dims)}, got {list(tensor.shape)}"
        )
    for size, s in zip(tensor.shape, spec, strict=True):
        if isinstance(s, int) and size != s:
            raise ValueError(
                f"{op}: {name} must have shape {_fmt(spec, dims)}, got {list(tensor.shape)}"
            )
        if isinstance(s, str):
            if s in dims and dims[s] != size:
                raise ValueError(
                    f"{op}: {name} must have shape {_fmt(spec, dims)}, got {list(tensor.shape)}"
                )
            dims.setdefault(s, int(size))
    if tensor.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{op}: {name} must have dtype in ({names}), got {tensor.dtype}")
    if device is not None and tensor.device != device:
        raise ValueError(f"{op}: {name} is on {tensor.device}, expected {device}")
