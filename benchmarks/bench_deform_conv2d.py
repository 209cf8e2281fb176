"""deform_conv2d benchmark: torchvision's op (the baseline), reference, torch.compile, Triton.

Providers:
  torchvision    ``torchvision.ops.deform_conv2d``: im2col of the sampled columns + GEMM; its
                 CUDA backward recomputes the columns and scatters with atomics. The baseline:
                 target on H100 (measured by the lead) is forward+backward >= 2x torchvision.
  torch          ``reference.deform_conv2d`` (4-corner gathers into an im2col tensor + einsum).
  torch.compile  the same reference through ``torch.compile``.
  triton         the public op with the Triton backend: implicit GEMM, bilinear sampling inside
                 the kernel, no column buffer; backward = data kernel (atomics into a float32
                 ``grad_input``) + weight kernel (split pixel reduction).

Group "model": the pixel decoder of the segmentation head (``gmpvis.model.seg_head``): 3x3
DCNv2, 256 -> 256 channels, one offset group, mask and bias, padding 1, on 5-frame clips at
360p (640 x 360): strides 4, 8 and 16 (90x160, 45x80, 23x40).
Group "sweep": channel width, offset groups, conv groups, stride 2 and dilation 2 at stride 8.
On a CPU every shape is scaled down (said in the label) so the CPU providers finish in seconds.
"""

from __future__ import annotations

import functools

import torch
import torchvision

from benchmarks._harness import Case
from gmpvis.kernels import deform_conv2d, reference, use_backend


def out_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def make_inputs_fn(N: int, C: int, H: int, W: int, C_out: int, k: int = 3, *, groups: int = 1,
                   g_off: int = 1, stride: int = 1, padding: int = 1,
                   dilation: int = 1):  # fmt: skip
    """Keyword inputs of every provider: tensors (grads on) and the conv configuration."""

    def make(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
        g = torch.Generator().manual_seed(0)
        h_out = out_size(H, k, stride, padding, dilation)
        w_out = out_size(W, k, stride, padding, dilation)

        def leaf(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype).requires_grad_(True)

        return {
            "input": leaf(torch.randn(N, C, H, W, generator=g)),
            # learned offsets are a few pixels: some taps leave the image
            "offset": leaf(1.5 * torch.randn(N, 2 * g_off * k * k, h_out, w_out, generator=g)),
            "weight": leaf(torch.randn(C_out, C // groups, k, k, generator=g) / (C * k) ** 0.5),
            "bias": leaf(torch.randn(C_out, generator=g)),
            "mask": leaf(torch.rand(N, g_off * k * k, h_out, w_out, generator=g)),
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
        }

    return make


def torchvision_provider(**kw) -> torch.Tensor:
    return torchvision.ops.deform_conv2d(**kw)


def torch_provider(**kw) -> torch.Tensor:
    return reference.deform_conv2d(**kw)


@functools.cache
def _compiled():
    return torch.compile(reference.deform_conv2d)


def compile_provider(**kw) -> torch.Tensor:
    return _compiled()(**kw)


def triton_provider(**kw) -> torch.Tensor:
    with use_backend("triton"):
        return deform_conv2d(**kw)


PROVIDERS = {
    "torchvision": torchvision_provider,  # first: the baseline's output is the error reference
    "torch": torch_provider,
    "torch.compile": compile_provider,
    "triton": triton_provider,
}


def _case(group: str, label: str, N: int, C: int, H: int, W: int, C_out: int, dtypes,
          **conv) -> Case:  # fmt: skip
    opts = " ".join(f"{k}={v}" for k, v in conv.items())
    return Case(
        op="deform_conv2d",
        shape=f"{label} N={N} C={C}->{C_out} {H}x{W} k=3 {opts}".rstrip(),
        make_inputs=make_inputs_fn(N, C, H, W, C_out, **conv),
        providers=dict(PROVIDERS),
        baseline="torchvision",
        group=group,
        dtypes=dtypes,
    )


def cases(device: torch.device) -> list[Case]:
    """Model shapes (pixel decoder at 360p, 5 frames) and a sweep; CPU: scaled down."""
    if device.type == "cuda":
        N, C, scale, tag = 5, 256, 1, ""
        model_dtypes = (torch.float32, torch.float16, torch.bfloat16)
        sweep_dtypes = (torch.float32, torch.float16)
        strides = (4, 8, 16)
    else:  # 1 frame, 32 channels, 1/4 of the resolution; strides 8 and 16 only
        N, C, scale, tag = 1, 32, 4, " (cpu-scaled; model N=5 C=256 360p)"
        model_dtypes = sweep_dtypes = (torch.float32,)
        strides = (8, 16)
    out = []
    for s in strides:
        h, w = -(-360 // (s * scale)), -(-640 // (s * scale))
        out.append(_case("model", f"pixdec s{s}{tag}", N, C, h, w, C, model_dtypes))
    h, w = -(-360 // (8 * scale)), -(-640 // (8 * scale))
    sweep_tag = " (cpu-scaled)" if tag else ""
    sweep = [
        ("c64", dict(C=C // 4, C_out=C // 4)),
        ("c96->160", dict(C=3 * C // 8, C_out=5 * C // 8)),  # not powers of two
        ("goff4", dict(g_off=4)),
        ("groups4 goff4", dict(groups=4, g_off=4)),
        ("stride2", dict(stride=2)),
        ("dilation2", dict(padding=2, dilation=2)),
    ]
    if device.type != "cuda":  # compiling the reference per shape dominates the CPU run
        sweep = sweep[3:4]
    for label, conv in sweep:
        c, c_out = conv.pop("C", C), conv.pop("C_out", C)
        out.append(_case("sweep", label + sweep_tag, N, c, h, w, c_out, sweep_dtypes, **conv))
    return out
