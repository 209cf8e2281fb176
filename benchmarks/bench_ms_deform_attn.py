"""ms_deform_attn benchmark: reference, torch.compile and Triton; weights and fused variants.

Providers:
  torch          ``reference.ms_deform_attn`` (one ``F.grid_sample`` per level, then a weighted
                 sum); the fused variant first takes the softmax over ``L * P`` in PyTorch.
  torch.compile  the same reference through ``torch.compile``.
  triton         the public op with the Triton backend (one gather kernel; backward with float32
                 atomics for ``grad_value``).
  op "ms_deform_attn_offsets": the model's path (reference points + offsets, locations made
                 in the kernel); its torch provider builds the float32 location tensor first.
  Deformable DETR's CUDA extension (``MultiScaleDeformableAttention``) is not a provider: it
  needs a CUDA build against this torch, which cannot be installed here; the case notes say so.

Group "model": R50 at 360p (640 x 360; strides 8/16/32/64 -> 45x80, 23x40, 12x20, 6x10, so
S = 4820), 5-frame clips (B = 5), 8 heads, hidden 256 (D = 32), 4 levels, 4 points:
the encoder's self-attention (Q = S) and the decoder's cross-attention (Q = 100 queries).
Targets on H100 (measured by the lead): fused forward >= 5x, forward+backward >= 3x torch.
Group "sweep": queries, points and head width around the model shape.
On a CPU every shape is scaled down (said in the label) so that the reference providers finish
in seconds.
"""

from __future__ import annotations

import functools

import torch

from benchmarks._harness import Case, tensor_bytes
from gmpvis.kernels import (
    ms_deform_attn,
    ms_deform_attn_fused,
    ms_deform_attn_offsets,
    reference,
    use_backend,
)

NO_CUDA_EXTENSION = (
    "omitted: Deformable DETR's CUDA op (MultiScaleDeformableAttention) needs a CUDA build "
    "of its extension against this torch; not installable here"
)


def level_shapes(height: int, width: int, strides=(8, 16, 32, 64)) -> list[tuple[int, int]]:
    """Feature map sizes of a ResNet pyramid: ceil(size / stride) per level."""
    return [(-(-height // s), -(-width // s)) for s in strides]


def make_inputs_fn(B: int, Q: int | None, H: int, D: int, shapes: list[tuple[int, int]], P: int,
                   fused: bool, offsets: bool = False):  # fmt: skip
    """Inputs as keyword arguments; ``Q=None`` means one query per pixel (encoder).
    ``offsets``: reference points (float32) and pixel offsets (the dtype) instead of locations."""

    def make(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
        g = torch.Generator().manual_seed(0)
        spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
        areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
        starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
        S, L = int(areas.sum()), len(shapes)
        n_queries = S if Q is None else Q
        value = torch.randn(B, S, H, D, generator=g)
        # reference point in [0, 1] plus a small learned-like offset: a few samples fall outside
        ref_points = torch.rand(B, n_queries, 1, 1, 1, 2, generator=g)
        loc = ref_points + 0.05 * torch.randn(B, n_queries, H, L, P, 2, generator=g)
        attention = torch.randn(B, n_queries, H, L, P, generator=g)
        if not fused:
            attention = attention.flatten(-2).softmax(-1).view_as(attention)

        def leaf(t: torch.Tensor, dtype=dtype) -> torch.Tensor:
            return t.to(device=device, dtype=dtype).requires_grad_(True)

        if offsets:
            return {
                "value": leaf(value),
                "spatial_shapes": spatial_shapes.to(device),
                "level_start_index": starts.to(device),
                "reference_points": leaf(
                    ref_points[:, :, 0, 0].expand(-1, -1, L, -1), torch.float32
                ),
                "sampling_offsets": leaf(2.0 * torch.randn(B, n_queries, H, L, P, 2, generator=g)),
                "attention": leaf(attention),
            }
        return {
            "value": leaf(value),
            "spatial_shapes": spatial_shapes.to(device),
            "level_start_index": starts.to(device),
            "sampling_locations": leaf(loc),
            ("attention_logits" if fused else "attention_weights"): leaf(attention),
        }

    return make


def torch_provider(**kw) -> torch.Tensor:
    return reference.ms_deform_attn(**kw)


def torch_fused_provider(**kw) -> torch.Tensor:
    return reference.ms_deform_attn_fused(**kw)


@functools.cache
def _compiled(fused: bool):
    return torch.compile(reference.ms_deform_attn_fused if fused else reference.ms_deform_attn)


def compile_provider(**kw) -> torch.Tensor:
    return _compiled(False)(**kw)


def compile_fused_provider(**kw) -> torch.Tensor:
    return _compiled(True)(**kw)


def triton_provider(**kw) -> torch.Tensor:
    with use_backend("triton"):
        return ms_deform_attn(**kw)


def triton_fused_provider(**kw) -> torch.Tensor:
    with use_backend("triton"):
        return ms_deform_attn_fused(**kw)


def torch_offsets_provider(**kw) -> torch.Tensor:
    return reference.ms_deform_attn_offsets(**kw)


@functools.cache
def _compiled_offsets():
    return torch.compile(reference.ms_deform_attn_offsets)


def compile_offsets_provider(**kw) -> torch.Tensor:
    return _compiled_offsets()(**kw)


def triton_offsets_provider(**kw) -> torch.Tensor:
    with use_backend("triton"):
        return ms_deform_attn_offsets(**kw)


OFFSETS_PROVIDERS = {
    "torch": torch_offsets_provider,
    "torch.compile": compile_offsets_provider,
    "triton": triton_offsets_provider,
}


def min_bytes(inputs: dict, out: torch.Tensor) -> int:
    """Every input read once (value, locations or reference points + offsets, attention),
    the output written once: the floor for a gather that reads each value row at least once."""
    return tensor_bytes(*inputs.values(), out)


PROVIDERS = {
    False: {"torch": torch_provider, "torch.compile": compile_provider, "triton": triton_provider},
    True: {
        "torch": torch_fused_provider,
        "torch.compile": compile_fused_provider,
        "triton": triton_fused_provider,
    },
}


def _case(group: str, label: str, B: int, Q: int | None, H: int, D: int,
          shapes: list[tuple[int, int]], P: int, fused: bool, dtypes,
          offsets: bool = False) -> Case:  # fmt: skip
    S = sum(h * w for h, w in shapes)
    shape = f"{label} B={B} Q={S if Q is None else Q} H={H} D={D} L={len(shapes)} P={P} S={S}"
    op = "ms_deform_attn_fused" if fused else "ms_deform_attn"
    return Case(
        op="ms_deform_attn_offsets" if offsets else op,
        shape=shape,
        make_inputs=make_inputs_fn(B, Q, H, D, shapes, P, fused, offsets),
        providers=dict(OFFSETS_PROVIDERS if offsets else PROVIDERS[fused]),
        group=group,
        dtypes=dtypes,
        notes={"deformable_detr_cuda": NO_CUDA_EXTENSION},
        min_bytes=min_bytes,
    )


def cases(device: torch.device) -> list[Case]:
    """Model shapes (encoder and decoder at 360p, both variants) and a sweep; CPU: scaled down."""
    if device.type != "cuda":  # torch.compile recompiles per shape: few, small cases
        shapes, tag, f32 = level_shapes(64, 96), " (cpu-scaled; model 360p B=5)", (torch.float32,)
        out = []
        for fused in (True, False):
            out.append(_case("model", "encoder" + tag, 2, None, 8, 32, shapes, 4, fused, f32))
            out.append(_case("model", "decoder" + tag, 2, 100, 8, 32, shapes, 4, fused, f32))
        out.append(_case("model", "encoder" + tag, 2, None, 8, 32, shapes, 4, True, f32, True))
        out.append(_case("sweep", "queries (cpu-scaled)", 2, 10, 8, 32, shapes, 4, True, f32))
        return out
    B, shapes = 5, level_shapes(360, 640)
    model_dtypes = (torch.float32, torch.float16, torch.bfloat16)
    sweep_dtypes = (torch.float32, torch.float16)
    out = []
    for fused in (True, False):
        out.append(_case("model", "encoder", B, None, 8, 32, shapes, 4, fused, model_dtypes))
        out.append(_case("model", "decoder", B, 100, 8, 32, shapes, 4, fused, model_dtypes))
    for label, Q in (("encoder", None), ("decoder", 100)):  # the model's path
        out.append(_case("model", label, B, Q, 8, 32, shapes, 4, True, model_dtypes, True))
    # (label, Q, H, D, P): queries, points per level, 4 heads of 64 channels, D = 24
    sweep = [("queries", q, 8, 32, 4) for q in (100, 1000, 10000)]
    sweep += [("points", 100, 8, 32, p) for p in (1, 8)]
    sweep += [("heads", 100, 4, 64, 4), ("d24", 100, 8, 24, 4)]
    for label, Q, H, D, P in sweep:
        out.append(_case("sweep", label, B, Q, H, D, shapes, P, True, sweep_dtypes))
    return out
