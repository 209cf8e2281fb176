"""Per-frame Hungarian matching (scipy ``linear_sum_assignment``, costs in float32)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from gmpvis.model.box_ops import pairwise_giou


def resize_target_masks(masks: torch.Tensor, out_hw: tuple[int, int], stride: int) -> torch.Tensor:
    """Unpadded ``masks [T, N, H, W]`` (bool) -> soft ``[T, N, h, w]`` float32 at the
    prediction resolution: zero-pad to ``(h * s, w * s)`` (the padded frame) then average
    ``s x s`` cells."""
    T, N, H, W = masks.shape
    h, w = out_hw
    full = masks.new_zeros(T, N, h * stride, w * stride, dtype=torch.float32)
    hh, ww = min(H, h * stride), min(W, w * stride)
    full[:, :, :hh, :ww] = masks[:, :, :hh, :ww].float()
    if N == 0:
        return full[:, :, :h, :w]
    return F.avg_pool2d(full.flatten(0, 1), stride).view(T, N, h, w)


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float):
    """``[Q, C]`` logits, ``[n]`` labels -> ``[Q, n]`` (Deformable DETR focal cost)."""
    p = logits.float().sigmoid()
    neg = (1 - alpha) * p.pow(gamma) * -(1 - p + 1e-8).log()
    pos = alpha * (1 - p).pow(gamma) * -(p + 1e-8).log()
    return pos[:, labels] - neg[:, labels]


def mask_costs(pred: torch.Tensor, tgt: torch.Tensor, alpha: float, gamma: float):
    """pred ``[Q, P]`` logits, tgt ``[n, P]`` in [0, 1] -> (focal ``[Q, n]``, dice ``[Q, n]``)
    with the per-pixel focal loss averaged over pixels."""
    x = pred.float()
    p = x.sigmoid()
    P = x.shape[1]
    ce_pos = F.binary_cross_entropy_with_logits(x, torch.ones_like(x), reduction="none")
    ce_neg = F.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction="none")
    f_pos = alpha * (1 - p).pow(gamma) * ce_pos
    f_neg = (1 - alpha) * p.pow(gamma) * ce_neg
    focal = (f_pos @ tgt.T + f_neg @ (1 - tgt).T) / P
    dice = 1 - (2 * p @ tgt.T + 1) / (p.sum(1)[:, None] + tgt.sum(1)[None, :] + 1)
    return focal, dice


class HungarianMatcher(nn.Module):
    """For every (video b, frame t): match the ``Nq`` proposals to the instances visible in
    frame t with cost ``w_cls*C_cls + w_L1*C_L1 + w_giou*(-GIoU) + w_mask*C_focal +
    w_dice*C_dice`` (``C_cls``: focal cost with ``focal_alpha`` / ``focal_gamma``; the mask
    costs are skipped when both their weights are 0)."""

    def __init__(
        self,
        *,
        cost_class: float,
        cost_bbox: float,
        cost_giou: float,
        cost_mask: float,
        cost_dice: float,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.w_cls, self.w_bbox, self.w_giou = cost_class, cost_bbox, cost_giou
        self.w_mask, self.w_dice = cost_mask, cost_dice
        self.alpha, self.gamma = focal_alpha, focal_gamma

    @torch.no_grad()
    def forward(
        self, outputs: dict, targets: list[dict], masks: list[torch.Tensor]
    ) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """outputs: ``pred_logits [B,T,Nq,C]``, ``pred_boxes [B,T,Nq,4]``, ``pred_masks
        [B,T,Nq,h,w]``; targets: contract dicts; masks: per video ``[T, N, h, w]`` soft
        targets (:func:`resize_target_masks`).

        Returns ``[b][t] = (query_idx [k], instance_idx [k])`` int64 on CPU, where
        instance_idx indexes the clip's N instances.
        """
        logits, boxes, pmasks = outputs["pred_logits"], outputs["pred_boxes"], outputs["pred_masks"]
        B, T = logits.shape[:2]
        result = []
        for b in range(B):
            tgt = targets[b]
            per_frame = []
            for t in range(T):
                inst = torch.nonzero(tgt["valid"][t], as_tuple=False).flatten()
                if inst.numel() == 0:
                    empty = torch.zeros(0, dtype=torch.long)
                    per_frame.append((empty, empty))
                    continue
                labels = tgt["labels"][inst].to(logits.device)
                gt_boxes = tgt["boxes"][t, inst].to(boxes.device).float()
                cost = self.w_cls * focal_class_cost(logits[b, t], labels, self.alpha, self.gamma)
                pb = boxes[b, t].float()
                cost = cost + self.w_bbox * torch.cdist(pb, gt_boxes, p=1)
                cost = cost - self.w_giou * pairwise_giou(pb, gt_boxes)
                if self.w_mask or self.w_dice:
                    gm = masks[b][t, inst].flatten(1).to(pmasks.device)
                    focal, dice = mask_costs(pmasks[b, t].flatten(1), gm, self.alpha, self.gamma)
                    cost = cost + self.w_mask * focal + self.w_dice * dice
                cost = torch.nan_to_num(cost.float(), nan=1e6, posinf=1e6, neginf=-1e6)
                q_idx, g_idx = linear_sum_assignment(cost.cpu().numpy())
                per_frame.append(
                    (torch.as_tensor(q_idx, dtype=torch.long), inst.cpu()[torch.as_tensor(g_idx)])
                )
            result.append(per_frame)
        return result
