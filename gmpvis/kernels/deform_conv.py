"""PLACEHOLDER: forwards to the reference until the Triton kernel lands (issue 2)."""

from gmpvis.kernels.reference import deform_conv2d  # noqa: F401
