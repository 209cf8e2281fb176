"""Pixel decoder with modulated deformable convolutions (DCNv2 via ``kernels.deform_conv2d``).

Top-down from the coarsest encoder level: ``x = DCN(lateral_s + up(x))`` for every finer
encoder level and then for the backbone maps down to ``mask_stride``; a 1x1 conv gives the
pixel embeddings. Mask logits are ``mask_embed . pixel_embed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gmpvis import kernels
from gmpvis.model.encoder import group_norm


class ModulatedDeformConv(nn.Module):
    """3x3 DCNv2: a plain conv predicts ``2*9`` offsets and ``9`` modulation logits.

    The offset conv is zero-initialised, so training starts from the regular 3x3 grid; the
    modulation is ``2 * sigmoid(logit)``, i.e. 1 at init, so the block starts as a plain conv.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        nn.init.kaiming_uniform_(self.weight, a=1)
        self.offset_conv = nn.Conv2d(cin, 3 * 9, 3, padding=1)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, cin, h, w]`` -> ``[N, cout, h, w]``."""
        # channels-last end to end: the kernel gathers along channels, and the encoder maps
        # arrive as NHWC views already (no copy then); the output keeps the layout
        x = x.contiguous(memory_format=torch.channels_last)
        om = self.offset_conv(x)
        offset, mask = om[:, :18], 2.0 * om[:, 18:].sigmoid()
        # under autocast the kernel casts every operand to the autocast dtype itself
        return kernels.deform_conv2d(
            x, offset, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=1, mask=mask
        )


class DeformBlock(nn.Module):
    """DCN -> GroupNorm -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ModulatedDeformConv(cin, cout)
        self.norm = group_norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


class PixelDecoder(nn.Module):
    """Encoder levels (strides ``enc_strides``) + backbone maps -> ``[N, mask_dim, H/s, W/s]``."""

    def __init__(
        self,
        hidden_dim: int,
        mask_dim: int,
        enc_strides: list[int],
        backbone_channels: dict[int, int],
        mask_stride: int,
    ) -> None:
        super().__init__()
        finest = min(enc_strides)
        # backbone maps finer than the finest encoder level, down to the mask stride
        self.bb_strides = [s for s in (16, 8, 4) if mask_stride <= s < finest]
        self.enc_strides = sorted(enc_strides, reverse=True)  # coarse -> fine
        if mask_stride > finest:
            raise ValueError(
                f"model.mask_stride {mask_stride} is coarser than the finest feature level {finest}"
            )
        self.mask_stride = mask_stride
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(backbone_channels[s], hidden_dim, 1), group_norm(hidden_dim))
            for s in self.bb_strides
        )
        n_fuse = len(self.enc_strides) - 1 + len(self.bb_strides)
        self.blocks = nn.ModuleList(DeformBlock(hidden_dim, hidden_dim) for _ in range(n_fuse + 1))
        self.out = nn.Conv2d(hidden_dim, mask_dim, 1)

    def forward(
        self, enc_maps: list[torch.Tensor], backbone: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        """enc_maps: list of ``[N, D, h, w]`` coarse -> fine (same order as ``enc_strides``
        sorted descending); backbone: ``{stride: [N, C, h, w]}``."""
        x = self.blocks[0](enc_maps[0])
        i = 1
        laterals = list(enc_maps[1:]) + [
            lat(backbone[s]) for s, lat in zip(self.bb_strides, self.lateral, strict=True)
        ]
        for lateral in laterals:
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
            x = self.blocks[i](x)
            i += 1
        return self.out(x)


def masks_from_embeddings(mask_embed: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
    """mask_embed ``[N, Q, C]``, pixel ``[N, C, h, w]`` -> mask logits ``[N, Q, h, w]``."""
    return torch.einsum("nqc,nchw->nqhw", mask_embed, pixel)
