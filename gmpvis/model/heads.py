"""Per-query prediction heads on the decoder states ``[N, Q, D]``: class logits, box
refinement, mask embedding and instance (association) embedding."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between: ``[..., d_in]`` -> ``[..., d_out]``."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, num_layers: int) -> None:
        super().__init__()
        dims = [d_in] + [d_hidden] * (num_layers - 1) + [d_out]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def class_head(d_model: int, num_classes: int, prior_prob: float = 0.01) -> nn.Linear:
    """``[..., D]`` -> sigmoid-focal logits ``[..., C]``; the bias starts at
    ``-log((1 - p) / p)`` so every class starts at probability ``p`` (focal-loss prior)."""
    head = nn.Linear(d_model, num_classes)
    nn.init.constant_(head.bias, -math.log((1 - prior_prob) / prior_prob))
    return head


def box_head(d_model: int) -> MLP:
    """``[..., D]`` -> box logit offsets ``[..., 4]``; the last layer starts at zero so each
    decoder layer starts by keeping its reference box."""
    head = MLP(d_model, d_model, 4, 3)
    nn.init.zeros_(head.layers[-1].weight)
    nn.init.zeros_(head.layers[-1].bias)
    return head
