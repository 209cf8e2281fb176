"""Multi-scale deformable attention module (Deformable DETR) over ``gmpvis.kernels``."""

from __future__ import annotations

import math

import torch
from torch import nn

from gmpvis import kernels


class MSDeformAttn(nn.Module):
    """Each query samples ``P`` points per head and level around its reference point.

    ``loc = ref + offset / (W_l, H_l)`` for 2-d references (points), and
    ``loc = ref_xy + offset / P * ref_wh / 2`` for 4-d references (boxes); the attention
    weights are a softmax over the ``L * P`` samples of a head (fused into the kernel when
    ``fused=True``).
    """

    def __init__(
        self, d_model: int, n_levels: int, n_heads: int, n_points: int, fused: bool = True
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"MSDeformAttn: d_model {d_model} not divisible by {n_heads} heads")
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model,
            n_levels,
            n_heads,
            n_points,
        )
        self.fused = fused
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Initial offsets: head h points in direction 2*pi*h/H, the p-th point at distance p+1,
        # so that the heads start by looking at a ring of neighbours (Deformable DETR init).
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.n_heads, dtype=torch.float32) * (2 * math.pi / self.n_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query: ``[N, Q, D]`` (positional embedding already added).
            reference_points: ``[N, Q, L, 2]`` (x, y) or ``[N, Q, L, 4]`` (cx, cy, w, h) in
                ``[0, 1]`` of each level's padded map (valid ratios already applied).
            input_flatten: ``[N, S, D]`` values, ``S = sum_l H_l W_l``.
            spatial_shapes: ``[L, 2]`` int64; level_start_index: ``[L]`` int64.
            padding_mask: ``[N, S]`` bool, True on padding (those values are zeroed).

        Returns:
            ``[N, Q, D]``.
        """
        N, Q, _ = query.shape
        S = input_flatten.shape[1]
        H, L, P = self.n_heads, self.n_levels, self.n_points
        if spatial_shapes.shape[0] != L:
            raise ValueError(
                f"MSDeformAttn: spatial_shapes has {spatial_shapes.shape[0]} levels, expected {L}"
            )
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(N, S, H, self.d_model // H)
        offsets = self.sampling_offsets(query).view(N, Q, H, L, P, 2)
        logits = self.attention_weights(query).view(N, Q, H, L, P)
        if reference_points.shape[-1] not in (2, 4):
            raise ValueError(
                f"MSDeformAttn: reference_points last dim must be 2 or 4, got "
                f"{tuple(reference_points.shape)}"
            )
        if self.fused:
            attention = logits  # softmax over L * P inside the kernel
        else:
            attention = logits.view(N, Q, H, L * P).softmax(-1).view(N, Q, H, L, P)
        # The kernel makes the sampling locations from the reference points (kept in float32:
        # bfloat16 would quantise them to ~1/256 of the image) and the offsets (pixels).
        out = kernels.ms_deform_attn_offsets(
            value,
            spatial_shapes,
            level_start_index,
            reference_points.to(torch.promote_types(reference_points.dtype, torch.float32)),
            offsets,
            attention,
            fused=self.fused,
        )
        return self.output_proj(out)
