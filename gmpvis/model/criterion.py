"""Training losses: per-frame set losses (focal class, L1 + GIoU box, focal + dice mask) with
auxiliary decoder layers, and L_match, the graph-matching association loss.

``criterion(outputs, targets)`` returns a dict of scalars: every term *unweighted*
(``loss_ce``, ``loss_bbox``, ``loss_giou``, ``loss_mask``, ``loss_dice``, ``loss_match`` and
``<term>_<i>`` for auxiliary layer ``i``) and ``loss``, the weighted total
``sum_k w_k * term_k`` (an auxiliary term weighs as its last-layer term).

The graph matching head that L_match trains is handed to the criterion when it is built
(``build_criterion(cfg, gm_head=model.gm_head)``): it is the model's own module, registered
here as a submodule too, so its parameters are shared (``parameters()`` lists them once) and
its use happens inside whatever module wraps model and criterion together (DDP).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

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
        gm_head: ``(embeds1 [P,n1,E], boxes1 [P,n1,4], embeds2, boxes2, mask1 [P,n1],
            mask2 [P,n2]) -> S [P, n1+1, n2+1]`` (the model's graph matching head); may be
            None only when ``weights["loss_match"]`` is 0.
        weights: ``w_k`` for every name of ``TERMS`` and ``"loss_match"``.
        mask_stride: output stride of the mask logits (resolution of the mask targets).
        gm_distractors: unmatched highest-score proposals added to each L_match graph.
        match_dustbin_weight: ``w_d``, weight of the dustbin NLL inside L_match.
        focal_alpha, focal_gamma: sigmoid focal loss of the class and mask terms.
    """

    TERMS = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")

    def __init__(
        self,
        matcher: HungarianMatcher,
        gm_head: nn.Module | None,
        *,
        weights: dict[str, float],
        mask_stride: int,
        gm_distractors: int,
        match_dustbin_weight: float,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        expected = set(self.TERMS) | {"loss_match"}
        if set(weights) != expected:
            raise ValueError(
                f"SetCriterion: weights must name {sorted(expected)}, got {sorted(weights)}"
            )
        if weights["loss_match"] > 0 and gm_head is None:
            raise ValueError(
                "SetCriterion: L_match (weights['loss_match'] > 0) needs the model's gm_head "
                "(build_criterion(cfg, model.gm_head), or set loss.match_weight=0)"
            )
        self.matcher = matcher
        self.gm_head = gm_head
        self.alpha, self.gamma = focal_alpha, focal_gamma
        self.mask_stride = mask_stride
        self.distractors = gm_distractors
        self.dustbin_weight = match_dustbin_weight
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

    # ------------------------------------------------------------------ L_match
    def _graph(self, outputs: dict, b: int, t: int, q: torch.Tensor, g: torch.Tensor):
        """Nodes of frame t: matched proposals (identity = instance index) followed by up to
        ``gm_distractors`` unmatched highest-score proposals (identity -1)."""
        nodes, ids = q.tolist(), g.tolist()
        if self.distractors > 0:
            score = outputs["pred_logits"][b, t].detach().float().amax(-1).clone()
            if nodes:
                score[torch.as_tensor(nodes, device=score.device)] = float("-inf")
            k = min(self.distractors, score.numel() - len(nodes))
            if k > 0:
                extra = score.topk(k).indices.tolist()
                nodes, ids = nodes + extra, ids + [-1] * k
        return nodes, ids

    def match_loss(self, outputs: dict, indices: Indices) -> torch.Tensor:
        """Graphs of consecutive frames (t, t+1) -> ``self.gm_head`` soft assignment
        ``S [P, n1+1, n2+1]``; true assignment: same instance in both graphs -> (i, a); a node
        whose instance is absent from the other graph (or a distractor) -> its dustbin entry.
        ``L = mean_{matched} -log S + w_d * mean_{dustbin entries} -log S``."""
        embeds, boxes = outputs["pred_embeds"], outputs["pred_boxes"]
        B, T = embeds.shape[:2]
        device = embeds.device
        pairs = []
        for b in range(B):
            graphs = [self._graph(outputs, b, t, *indices[b][t]) for t in range(T)]
            for t in range(T - 1):
                pairs.append((b, t, graphs[t], graphs[t + 1]))
        if not pairs:
            return embeds.sum() * 0.0
        n1 = max(1, max(len(p[2][0]) for p in pairs))
        n2 = max(1, max(len(p[3][0]) for p in pairs))
        P = len(pairs)
        idx1 = torch.zeros(P, n1, dtype=torch.long)
        idx2 = torch.zeros(P, n2, dtype=torch.long)
        m1 = torch.zeros(P, n1, dtype=torch.bool)
        m2 = torch.zeros(P, n2, dtype=torch.bool)
        frame1 = torch.zeros(P, dtype=torch.long)
        vid = torch.zeros(P, dtype=torch.long)
        matched, dust = [], []  # (pair, row, col)
        for p, (b, t, (nodes1, ids1), (nodes2, ids2)) in enumerate(pairs):
            vid[p], frame1[p] = b, t
            idx1[p, : len(nodes1)] = torch.as_tensor(nodes1, dtype=torch.long)
            idx2[p, : len(nodes2)] = torch.as_tensor(nodes2, dtype=torch.long)
            m1[p, : len(nodes1)] = True
            m2[p, : len(nodes2)] = True
            where2 = {g: a for a, g in enumerate(ids2) if g >= 0}
            hit2 = set()
            for i, g in enumerate(ids1):
                if g >= 0 and g in where2:
                    matched.append((p, i, where2[g]))
                    hit2.add(where2[g])
                else:
                    dust.append((p, i, n2))
            dust += [(p, n1, a) for a in range(len(ids2)) if a not in hit2]
        vid, frame1 = vid[:, None].to(device), frame1[:, None].to(device)
        idx1, idx2, m1, m2 = idx1.to(device), idx2.to(device), m1.to(device), m2.to(device)
        S = self.gm_head(
            embeds[vid, frame1, idx1],
            boxes[vid, frame1, idx1].detach(),
            embeds[vid, frame1 + 1, idx2],
            boxes[vid, frame1 + 1, idx2].detach(),
            m1,
            m2,
        )
        log_s = torch.log(S.float().clamp_min(1e-8))

        def nll(entries: list[tuple[int, int, int]]) -> torch.Tensor:
            if not entries:
                return log_s.sum() * 0.0
            e = torch.as_tensor(entries, dtype=torch.long, device=device)
            return -log_s[e[:, 0], e[:, 1], e[:, 2]].mean()

        return nll(matched) + self.dustbin_weight * nll(dust)

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
        if self.weights["loss_match"] > 0:
            losses["loss_match"] = self.match_loss(outputs, indices)
        total = sum(
            self.weights[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * v
            for k, v in losses.items()
        )
        losses["loss"] = total
        return losses
