"""Per-frame deformable encoder: level projection, flattening and deformable self-attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gmpvis.model.deformable_attention import MSDeformAttn
from gmpvis.model.position_encoding import PositionEmbeddingSine


@dataclass
class LevelBatch:
    """Flattened multi-scale features of ``N`` frames.

    src ``[N, S, D]``, pos ``[N, S, D]`` (sine + level embedding), mask ``[N, S]`` (True on
    padding), spatial_shapes ``[L, 2]``, level_start_index ``[L]``, valid_ratios ``[N, L, 2]``
    (x, y) fraction of each level that is not padding, shapes: python ``(h, w)`` per level.
    """

    src: torch.Tensor
    pos: torch.Tensor
    mask: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    valid_ratios: torch.Tensor
    shapes: list[tuple[int, int]]

    def split_levels(self, src: torch.Tensor) -> list[torch.Tensor]:
        """``[N, S, D]`` -> list of ``[N, D, h_l, w_l]`` maps."""
        out, start = [], 0
        for h, w in self.shapes:
            out.append(src[:, start : start + h * w].transpose(1, 2).unflatten(2, (h, w)))
            start += h * w
        return out


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 2 channels (valid on 1x1 maps too)."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 2)
    return nn.GroupNorm(groups, channels)


def ffn(d_model: int, d_ff: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_model, d_ff),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(d_ff, d_model),
    )


class InputProjection(nn.Module):
    """Backbone strides 8/16/32 -> ``hidden_dim`` (1x1 conv + GroupNorm), extra levels by
    stride-2 3x3 convs on the coarsest map; the last ``num_levels`` maps are kept.

    ``channels``: backbone ``{stride: C_s}``. ``level_strides``: the stride of each output
    level, finest first (what the pixel decoder needs to know of the levels).
    """

    def __init__(self, channels: dict[int, int], hidden_dim: int, num_levels: int) -> None:
        super().__init__()
        self.strides = [8, 16, 32][-min(num_levels, 3) :]
        self.level_strides = self.strides + [64 * 2**i for i in range(max(0, num_levels - 3))]
        # (shapes, device) -> (spatial_shapes, level_start_index): built once per input size,
        # since torch.tensor(list, device=cuda) is a host-to-device copy that syncs and cannot
        # be captured in a CUDA graph
        self._index_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels[s], hidden_dim, 1),
                group_norm(hidden_dim),
            )
            for s in self.strides
        )
        extra, cin = [], channels[32]
        for _ in range(max(0, num_levels - 3)):
            extra.append(
                nn.Sequential(
                    nn.Conv2d(cin, hidden_dim, 3, 2, 1),
                    group_norm(hidden_dim),
                )
            )
            cin = hidden_dim
        self.extra = nn.ModuleList(extra)
        self.level_embed = nn.Parameter(torch.randn(num_levels, hidden_dim) * 0.02)
        self.pos_embed = PositionEmbeddingSine(hidden_dim // 2)

    def forward(self, feats: dict[int, torch.Tensor], pad_mask: torch.Tensor) -> LevelBatch:
        """feats ``{stride: [N, C, h, w]}``, pad_mask ``[N, H, W]`` -> :class:`LevelBatch`."""
        maps = [proj(feats[s]) for s, proj in zip(self.strides, self.proj, strict=True)]
        x = feats[32]
        for conv in self.extra:
            x = conv(x)
            maps.append(x)
        srcs, poss, masks, shapes = [], [], [], []
        for lvl, m in enumerate(maps):
            h, w = m.shape[-2:]
            mask = F.interpolate(pad_mask[:, None].float(), size=(h, w))[:, 0] > 0.5
            pos = self.pos_embed(mask).to(m.dtype) + self.level_embed[lvl].view(1, -1, 1, 1)
            srcs.append(m.flatten(2).transpose(1, 2))
            poss.append(pos.flatten(2).transpose(1, 2))
            masks.append(mask)
            shapes.append((int(h), int(w)))
        spatial_shapes, starts = self._level_index(shapes, pad_mask.device)
        # valid ratio = unpadded fraction along x / y of each level
        valid_ratios = torch.stack(
            [
                torch.stack([(~m[:, 0, :]).float().mean(1), (~m[:, :, 0]).float().mean(1)], -1)
                for m in masks
            ],
            1,
        )
        return LevelBatch(
            src=torch.cat(srcs, 1),
            pos=torch.cat(poss, 1),
            mask=torch.cat([m.flatten(1) for m in masks], 1),
            spatial_shapes=spatial_shapes,
            level_start_index=starts,
            valid_ratios=valid_ratios,
            shapes=shapes,
        )

    def _level_index(
        self, shapes: list[tuple[int, int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``spatial_shapes [L, 2]`` and ``level_start_index [L]`` (int64) for ``shapes``."""
        key = (tuple(shapes), device)
        if not torch.compiler.is_compiling() and key in self._index_cache:
            return self._index_cache[key]
        sizes = [h * w for h, w in shapes]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        value = (
            torch.tensor(shapes, dtype=torch.long, device=device),
            torch.tensor(starts, dtype=torch.long, device=device),
        )
        if not torch.compiler.is_compiling():
            self._index_cache[key] = value
        return value


def encoder_reference_points(
    shapes: list[tuple[int, int]], valid_ratios: torch.Tensor
) -> torch.Tensor:
    """Pixel centres of every level, normalised to the valid region: ``[N, S, L, 2]``."""
    refs = []
    for lvl, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, device=valid_ratios.device),
            torch.linspace(0.5, w - 0.5, w, device=valid_ratios.device),
            indexing="ij",
        )
        ref_y = ys.reshape(1, -1) / (valid_ratios[:, None, lvl, 1] * h)
        ref_x = xs.reshape(1, -1) / (valid_ratios[:, None, lvl, 0] * w)
        refs.append(torch.stack([ref_x, ref_y], -1))
    ref = torch.cat(refs, 1)  # [N, S, 2] in valid-region coordinates
    return ref[:, :, None] * valid_ratios[:, None]  # back to each level's padded map


class DeformableEncoderLayer(nn.Module):
    """``src = LN(src + MSDeformAttn(src + pos)); src = LN(src + FFN(src))``."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float,
        n_levels: int,
        n_heads: int,
        n_points: int,
        fused: bool,
    ) -> None:
        super().__init__()
        self.attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, fused)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = ffn(d_model, d_ff, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, levels: LevelBatch, ref: torch.Tensor) -> torch.Tensor:
        attn = self.attn(
            src + levels.pos,
            ref,
            src,
            levels.spatial_shapes,
            levels.level_start_index,
            levels.mask,
        )
        src = self.norm1(src + self.dropout(attn))
        return self.norm2(src + self.dropout(self.ffn(src)))


class DeformableEncoder(nn.Module):
    """Stack of ``num_layers`` :class:`DeformableEncoderLayer` applied to each frame
    independently (``num_layers = 0``: identity)."""

    def __init__(
        self,
        *,
        num_layers: int,
        d_model: int,
        n_heads: int,
        n_levels: int,
        n_points: int,
        d_ff: int,
        dropout: float,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(d_model, d_ff, dropout, n_levels, n_heads, n_points, fused)
            for _ in range(num_layers)
        )

    def forward(self, levels: LevelBatch) -> torch.Tensor:
        """-> encoded ``src [N, S, D]``."""
        src = levels.src
        if not self.layers:
            return src
        ref = encoder_reference_points(levels.shapes, levels.valid_ratios)
        for layer in self.layers:
            src = layer(src, levels, ref)
        return src
