"""Deformable decoder: per-frame instance queries with iterative box refinement."""

from __future__ import annotations

import torch
from torch import nn

from gmpvis.model.box_ops import inverse_sigmoid
from gmpvis.model.deformable_attention import MSDeformAttn
from gmpvis.model.encoder import LevelBatch, ffn


class DeformableDecoderLayer(nn.Module):
    """Self-attention among queries, deformable cross-attention to the frame, FFN."""

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
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, fused)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = ffn(d_model, d_ff, dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        ref: torch.Tensor,
        src: torch.Tensor,
        levels: LevelBatch,
    ) -> torch.Tensor:
        """tgt/query_pos ``[N, Q, D]``, ref ``[N, Q, L, 4]``, src ``[N, S, D]``."""
        q = tgt + query_pos
        out, _ = self.self_attn(q, q, tgt, need_weights=False)
        tgt = self.norm1(tgt + self.dropout(out))
        out = self.cross_attn(
            tgt + query_pos,
            ref,
            src,
            levels.spatial_shapes,
            levels.level_start_index,
            levels.mask,
        )
        tgt = self.norm2(tgt + self.dropout(out))
        return self.norm3(tgt + self.dropout(self.ffn(tgt)))


class DeformableDecoder(nn.Module):
    """Learned queries and initial boxes; every layer refines the boxes:
    ``box_l = sigmoid(bbox_head(h_l) + logit(box_{l-1}))`` with the previous box detached as
    the next layer's reference (Deformable DETR iterative refinement).

    ``bbox_head``: ``[N, Q, D]`` -> ``[N, Q, 4]`` logit offsets, shared by all layers (the
    model reads it back as ``decoder.bbox_head``).
    """

    def __init__(
        self,
        bbox_head: nn.Module,
        *,
        num_queries: int,
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
        self.num_queries = num_queries
        self.query_embed = nn.Embedding(num_queries, 2 * d_model)
        self.init_box = nn.Linear(d_model, 4)
        self.layers = nn.ModuleList(
            DeformableDecoderLayer(d_model, d_ff, dropout, n_levels, n_heads, n_points, fused)
            for _ in range(num_layers)
        )
        self.bbox_head = bbox_head

    def forward(
        self, src: torch.Tensor, levels: LevelBatch
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """src ``[N, S, D]`` -> (hidden states per layer ``[N, Q, D]``, boxes per layer
        ``[N, Q, 4]`` cxcywh in [0, 1] of the unpadded image)."""
        N = src.shape[0]
        query_pos, tgt = self.query_embed.weight.to(src.dtype).chunk(2, dim=1)
        query_pos = query_pos[None].expand(N, -1, -1)
        tgt = tgt[None].expand(N, -1, -1)
        ref = self.init_box(query_pos).sigmoid()
        # boxes live in valid-region coordinates; the attention samples the padded map
        ratios = torch.cat([levels.valid_ratios, levels.valid_ratios], -1)[:, None]  # [N,1,L,4]
        hs, boxes = [], []
        for layer in self.layers:
            tgt = layer(tgt, query_pos, ref[:, :, None] * ratios, src, levels)
            box = (self.bbox_head(tgt) + inverse_sigmoid(ref)).sigmoid()
            hs.append(tgt)
            boxes.append(box)
            ref = box.detach()
        return hs, boxes
