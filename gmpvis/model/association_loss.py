"""The association terms of the training loss, on a batch of clips.

Per clip, each frame becomes a :class:`~gmpvis.association.FrameRecord` (the frame's
embeddings, boxes and scores, the proposals the tracker keeps, and from the per-frame
Hungarian matching which object each proposal is); then

* ``loss_contrastive``: multi-positive InfoNCE over the matched proposals' embeddings of all
  frames (same object = positive, every other object of the batch a negative);
* ``loss_match``: ``L_match`` on the graphs the tracker would build at every frame after the
  first (:func:`~gmpvis.association.sample_graph`: track memories from the objects' own
  proposals with random gaps), through the graph matching head.

Boxes and scores are detached (they steer which graph is built); gradients reach the
embeddings and the head.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_iou

from gmpvis.association import (
    FrameRecord,
    GraphSpec,
    MemorySpec,
    collate_graphs,
    contrastive_loss,
    match_loss,
    sample_graph,
    select_proposals,
)
from gmpvis.model.box_ops import cxcywh_to_xyxy

DUPLICATE_IOU = 0.5  # box IoU with an object above which an unmatched proposal duplicates it


def frame_record(
    embeds: torch.Tensor,
    boxes: torch.Tensor,
    logits: torch.Tensor,
    matched: tuple[torch.Tensor, torch.Tensor],
    gt_boxes: torch.Tensor,
    select: dict,
) -> FrameRecord:
    """One frame: ``embeds [Nq, E]``, ``boxes [Nq, 4]``, ``logits [Nq, C]``, the matching
    ``(query indices, object indices)``, object boxes ``[K, 4]`` cxcywh."""
    scores = logits.detach().float().sigmoid().amax(-1)
    boxes = boxes.detach().float()
    kept = select_proposals(scores, boxes, **select)
    Nq = embeds.shape[0]
    gt_ids = torch.full((Nq,), -1, dtype=torch.long)
    q, g = matched
    gt_ids[q.cpu()] = g.cpu().long()
    dup_ids = torch.full((Nq,), -1, dtype=torch.long)
    if gt_boxes.shape[0] and len(q):
        iou = box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(gt_boxes.float())).cpu()
        best, obj = iou.max(1)
        dup = (gt_ids < 0) & (best > DUPLICATE_IOU) & torch.isin(obj, g.cpu().long())
        dup_ids[dup] = obj[dup]
    return FrameRecord(embeds, boxes, scores, kept.cpu(), gt_ids, dup_ids)


class AssociationLoss(nn.Module):
    """``loss_match`` and ``loss_contrastive`` of a batch (see the module docstring).

    ``gm_head``: the model's graph matching head (None: no ``loss_match``); ``select``:
    :func:`select_proposals` keyword arguments (the tracker's); ``memory`` / ``graphs``: how
    track memories and graphs are built."""

    def __init__(
        self,
        gm_head: nn.Module | None,
        *,
        select: dict,
        memory: MemorySpec,
        graphs: GraphSpec,
        contrastive_tau: float = 0.1,
    ) -> None:
        super().__init__()
        self.gm_head = gm_head
        self.select, self.memory, self.graphs = dict(select), memory, graphs
        self.tau = contrastive_tau

    def forward(self, outputs: dict, targets: list[dict], indices) -> dict[str, torch.Tensor]:
        embeds = outputs["pred_embeds"]
        B, T = embeds.shape[:2]
        seed = int(torch.randint(0, 2**31 - 1, ()).item())  # follows torch's RNG: resumable
        rng = np.random.default_rng(seed)
        graphs, anchor_embeds, anchor_ids = [], [], []
        for b in range(B):
            frames = []
            for t in range(T):
                q, g = indices[b][t]
                rec = frame_record(
                    embeds[b, t],
                    outputs["pred_boxes"][b, t],
                    outputs["pred_logits"][b, t],
                    (q, g),
                    targets[b]["boxes"][t],
                    self.select,
                )
                frames.append(rec)
                anchor_embeds.append(embeds[b, t][q.to(embeds.device)])
                anchor_ids.append(g.to(embeds.device).long() + b * 100_000)
            for t in range(1, T):
                graph = sample_graph(frames, t, rng, self.memory, self.graphs)
                if graph.memories and len(graph.col_target):
                    graphs.append(graph)
        losses = {
            "loss_contrastive": contrastive_loss(
                torch.cat(anchor_embeds), torch.cat(anchor_ids), self.tau
            )
        }
        if self.gm_head is not None:
            if graphs:
                tracks, props, rows, cols = collate_graphs(graphs, embeds.device)
                losses["loss_match"] = match_loss(self.gm_head(tracks, props), rows, cols)[0]
            else:
                losses["loss_match"] = embeds.sum() * 0.0
        return losses
