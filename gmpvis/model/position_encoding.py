"""Sine positional encoding of feature maps (DETR), computed on the unpadded region."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """``mask [N, h, w]`` (True on padding) -> ``pos [N, 2 * num_feats, h, w]``.

    ``pos_y = cumsum(valid, y) / max_y * 2pi``, then ``sin / cos`` of ``pos / T^(2k / F)``;
    normalising by the valid extent makes the code independent of the padding.
    """

    def __init__(self, num_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        valid = (~mask).to(torch.float32)
        y = valid.cumsum(1)
        x = valid.cumsum(2)
        eps = 1e-6
        y = (y - 0.5) / (y[:, -1:, :] + eps) * 2 * math.pi
        x = (x - 0.5) / (x[:, :, -1:] + eps) * 2 * math.pi
        k = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_feats)
        px = x[..., None] / dim_t
        py = y[..., None] / dim_t
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)
