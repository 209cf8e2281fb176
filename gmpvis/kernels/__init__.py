"""Public kernel API. Each op dispatches to Triton or to the PyTorch reference (``_backend``).

The implementations live in ``gmpvis.kernels.ops.<op>`` (one module per op); here
``gmpvis.kernels.<op>`` is always the public function.
"""

from gmpvis.kernels._backend import requested_backend, resolve, set_backend, use_backend
from gmpvis.kernels.ops.deform_conv2d import deform_conv2d
from gmpvis.kernels.ops.gm_affinity import gm_affinity
from gmpvis.kernels.ops.ms_deform_attn import (
    ms_deform_attn,
    ms_deform_attn_fused,
    ms_deform_attn_offsets,
)
from gmpvis.kernels.ops.sinkhorn import sinkhorn

KERNELS = [
    "ms_deform_attn",
    "ms_deform_attn_fused",
    "ms_deform_attn_offsets",
    "deform_conv2d",
    "gm_affinity",
    "sinkhorn",
]

__all__ = [
    "KERNELS",
    "deform_conv2d",
    "gm_affinity",
    "ms_deform_attn",
    "ms_deform_attn_fused",
    "ms_deform_attn_offsets",
    "requested_backend",
    "resolve",
    "set_backend",
    "sinkhorn",
    "use_backend",
]
