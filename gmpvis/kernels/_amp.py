"""Autocast for the custom ops (``torch.autocast`` does not see inside a ``torch.library`` op).

The public functions cast their inputs the way autocast casts torch's own ops:

* ``lower`` (``ms_deform_attn*``, ``deform_conv2d``; like ``conv2d`` / ``matmul``): float32
  and other half inputs become the autocast dtype, so the half-precision kernels run;
* ``float32`` (``sinkhorn``, ``gm_affinity``; like ``softmax`` / ``cdist``): half inputs
  become float32 (a log-domain normalisation and a Gaussian of squared distances lose too
  much in 8 or 11 bits of mantissa).

float64 tensors are never cast (autocast leaves them alone too). Outside autocast nothing
changes.
"""

from __future__ import annotations

import torch

_HALF = (torch.float16, torch.bfloat16)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device``'s type, or None."""
    kind = device.type
    if kind not in ("cuda", "cpu") or not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def cast_lower(device: torch.device, *tensors):
    """Each float32 / half tensor in the autocast dtype (unchanged outside autocast)."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return tensors
    return tuple(
        t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype in (torch.float32, *_HALF) else t
        for t in tensors
    )


def cast_float32(device: torch.device, *tensors):
    """Each half tensor in float32 under autocast (unchanged outside autocast)."""
    if autocast_dtype(device) is None:
        return tensors
    return tuple(
        t.float() if isinstance(t, torch.Tensor) and t.dtype in _HALF else t for t in tensors
    )
