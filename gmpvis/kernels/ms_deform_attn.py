"""PLACEHOLDER: forwards to the reference until the Triton kernel lands (issue 2)."""

from gmpvis.kernels.reference import ms_deform_attn, ms_deform_attn_fused  # noqa: F401
