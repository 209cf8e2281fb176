"""Training losses: per-frame set losses (focal class, L1 + GIoU box, focal + dice mask) with
auxiliary decoder layers, and the association terms (``L_match`` on the tracker's graphs and
the contrastive embedding loss, :mod:`gmpvis.model.association_loss`).

``criterion(outputs, targets)`` returns a dict of scalars: every term *unweighted*
(``loss_ce``, ``loss_bbox``, ``loss_giou``, ``loss_mask``, ``loss_dice``, ``loss_match``,
``loss_contrastive`` and ``<term>_<i>`` for auxiliary layer ``i``) and ``loss``, the
weighted total ``sum_k w_k * term_k`` (an auxiliary term weighs as its last-layer term).

The graph matching head that L_match trains is handed to the criterion when it is built
(``build_criterion(cfg, gm_head=model.gm_head)``): it is the model's own module, registered
here as a submodule too, so its parameters are shared (``parameters()`` lists them once) and
its use happens inside whatever module wraps model and criterion together (DDP).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from gmpvis.model.association_loss import AssociationLoss
from gmpvis.model.box_ops import cxcywh_to_xyxy
from gmpvis.model.matcher import HungarianMatcher, resize_target_masks

Indices = list[list[tuple[torch.Tensor, torch.Tensor]]]


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[k, P]`` logits and soft targets -> ``[k]`` of ``1 - (2 p.t + 1) / (|p| + |t| + 1)``."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(1) + 1) / (p.sum(1) + targets.sum(1) + 1)


class SetCriterion(nn.Module):
    """See module docstring.

    Args:
        matcher: per-frame Hungarian matcher (:class:`HungarianMatcher`).
        association: the association terms (:class:`AssociationLoss`, holding the model's
            graph matching head), or None when both their weights are 0.
        weights: ``w_k`` for every name of ``TERMS``, ``"loss_match"`` and
            ``"loss_contrastive"``.
        mask_stride: output stride of the mask logits (resolution of the mask targets).
        focal_alpha, focal_gamma: sigmoid focal loss of the class and mask terms.
    """

    TERMS = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")

    def __init__(
        self,
        matcher: HungarianMatcher,
        association: AssociationLoss | None,
        *,
        weights: dict[str, float],
        mask_stride: int,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        expected = set(self.TERMS) | {"loss_match", "loss_contrastive"}
        if set(weights) != expected:
            raise ValueError(
                f"SetCriterion: weights must name {sorted(expected)}, got {sorted(weights)}"
            )
        if weights["loss_match"] > 0 and (association is None or association.gm_head is None):
            raise ValueError(
                "SetCriterion: L_match (weights['loss_match'] > 0) needs the model's gm_head "
                "(build_criterion(cfg, model.gm_head), or set loss.match_weight=0)"
            )
        self.matcher = matcher
        self.association = association
        self.alpha, self.gamma = focal_alpha, focal_gamma
        self.mask_stride = mask_stride
        self.weights = dict(weights)

    # ------------------------------------------------------------------ per-frame set losses
    def frame_losses(
        self,
        outputs: dict,
        targets: list[dict],
        indices: Indices,
        masks: list[torch.Tensor],
        num_boxes: float,
    ) -> dict[str, torch.Tensor]:
        """Losses of one decoder layer, each summed over matches and divided by
        ``num_boxes`` (visible instances over all frames of the batch)."""
        logits = outputs["pred_logits"]
        device = logits.device
        b_idx, t_idx, q_idx, labels, gt_boxes, gt_masks = [], [], [], [], [], []
        for b, per_frame in enumerate(indices):
            for t, (q, g) in enumerate(per_frame):
                b_idx += [b] * len(q)
                t_idx += [t] * len(q)
                q_idx.append(q)
                labels.append(targets[b]["labels"][g])
                gt_boxes.append(targets[b]["boxes"][t, g])
                gt_masks.append(masks[b][t, g])
        b_idx = torch.as_tensor(b_idx, dtype=torch.long, device=device)
        t_idx = torch.as_tensor(t_idx, dtype=torch.long, device=device)
        q_idx = torch.cat(q_idx).to(device)
        labels = torch.cat(labels).to(device)
        gt_boxes = torch.cat(gt_boxes).to(device).float()
        gt_masks = torch.cat(gt_masks).to(device).flatten(1)

        cls_target = torch.zeros_like(logits, dtype=torch.float32)
        cls_target[b_idx, t_idx, q_idx, labels] = 1.0
        loss_ce = sigmoid_focal_loss(
            logits.float(), cls_target, self.alpha, self.gamma, reduction="sum"
        )
        pb = outputs["pred_boxes"][b_idx, t_idx, q_idx].float()
        loss_bbox = (pb - gt_boxes).abs().sum()
        loss_giou = generalized_box_iou_loss(
            cxcywh_to_xyxy(pb), cxcywh_to_xyxy(gt_boxes), reduction="sum"
        )
        pm = outputs["pred_masks"][b_idx, t_idx, q_idx].flatten(1).float()
        loss_mask = sigmoid_focal_loss(pm, gt_masks, self.alpha, self.gamma).mean(1).sum()
        loss_dice = dice_loss(pm, gt_masks).sum()
        values = (loss_ce, loss_bbox, loss_giou, loss_mask, loss_dice)
        return {k: v / num_boxes for k, v in zip(self.TERMS, values, strict=True)}

    # ------------------------------------------------------------------ total
    @staticmethod
    def _num_boxes(targets: list[dict], device: torch.device) -> float:
        """Visible (instance, frame) pairs, averaged over processes when distributed (DETR)."""
        n = torch.tensor(float(sum(int(t["valid"].sum()) for t in targets)), device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(n)
            n = n / torch.distributed.get_world_size()
        return max(1.0, float(n))

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(
                f"criterion: {len(targets)} targets for a batch of "
                f"{outputs['pred_logits'].shape[0]} clips"
            )
        hw = tuple(outputs["pred_masks"].shape[-2:])
        masks = [resize_target_masks(t["masks"], hw, self.mask_stride) for t in targets]
        num_boxes = self._num_boxes(targets, outputs["pred_logits"].device)
        indices = self.matcher(outputs, targets, masks)
        losses = self.frame_losses(outputs, targets, indices, masks, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_idx = self.matcher(aux, targets, masks)
            aux_losses = self.frame_losses(aux, targets, aux_idx, masks, num_boxes)
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        if self.association is not None:
            losses.update(self.association(outputs, targets, indices))
        total = sum(
            self.weights[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * v
            for k, v in losses.items()
        )
        losses["loss"] = total
        return losses
