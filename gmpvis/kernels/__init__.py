"""Public kernel API. Each op dispatches to Triton or to the PyTorch reference (``_backend``)."""

from gmpvis.kernels._backend import requested_backend, resolve, set_backend, use_backend
from gmpvis.kernels.affinity import gm_affinity
from gmpvis.kernels.deform_conv import deform_conv2d
from gmpvis.kernels.ms_deform_attn import ms_deform_attn, ms_deform_attn_fused
from gmpvis.kernels.sinkhorn import sinkhorn

KERNELS = ["ms_deform_attn", "ms_deform_attn_fused", "deform_conv2d", "gm_affinity", "sinkhorn"]

__all__ = [
    "KERNELS",
    "deform_conv2d",
    "gm_affinity",
    "ms_deform_attn",
    "ms_deform_attn_fused",
    "requested_backend",
    "resolve",
    "set_backend",
    "sinkhorn",
    "use_backend",
]
