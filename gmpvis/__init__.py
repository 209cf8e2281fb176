"""gmpvis: video instance segmentation by graph matching, with fused Triton kernels."""

__version__ = "0.1.0"
