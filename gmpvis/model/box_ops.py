"""Small box / tensor helpers shared by the model and the criterion."""

from __future__ import annotations

import torch
from torchvision.ops import box_convert, generalized_box_iou


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped to [eps, 1 - eps] so that refinement never sees +-inf."""
    x = x.clamp(min=eps, max=1 - eps)
    return torch.log(x / (1 - x))


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def pairwise_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """GIoU between ``[n, 4]`` and ``[m, 4]`` cxcywh boxes -> ``[n, m]`` (float32)."""
    return generalized_box_iou(cxcywh_to_xyxy(boxes1.float()), cxcywh_to_xyxy(boxes2.float()))
