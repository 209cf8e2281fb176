"""The two graphs of an association problem, and the proposals a tracker keeps.

:class:`TrackNodes` are tracks (memory embedding, motion-predicted box, frames missed);
:class:`ProposalNodes` are a frame's kept proposals (embedding, box, score). Both are
batched ``[B, n, ...]`` with a ``mask`` (True = real node) so that graphs of different sizes
train together. :func:`select_proposals` is the one rule for which proposals take part: the
tracker and the training graphs call it alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_convert, nms

from gmpvis.association.memory import TrackMemory


@dataclass
class TrackNodes:
    """embeds ``[B, n, E]``, boxes ``[B, n, 4]`` (predicted, cxcywh), missed ``[B, n]``
    (frames since last seen, float), mask ``[B, n]`` bool."""

    embeds: torch.Tensor
    boxes: torch.Tensor
    missed: torch.Tensor
    mask: torch.Tensor

    @property
    def size(self) -> int:
        return self.embeds.shape[1]


@dataclass
class ProposalNodes:
    """embeds ``[B, m, E]``, boxes ``[B, m, 4]`` cxcywh, scores ``[B, m]`` (max class
    probability), mask ``[B, m]`` bool."""

    embeds: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    mask: torch.Tensor

    @property
    def size(self) -> int:
        return self.embeds.shape[1]


def select_proposals(
    scores: torch.Tensor, boxes: torch.Tensor, threshold: float, nms_iou: float, limit: int
) -> torch.Tensor:
    """scores ``[Nq]``, boxes ``[Nq, 4]`` cxcywh -> indices of the proposals kept: score >=
    ``threshold``, duplicates removed by box NMS at ``nms_iou``, best first, at most
    ``limit``."""
    keep = torch.nonzero(scores >= threshold).flatten()
    if keep.numel() == 0:
        return keep
    xyxy = box_convert(boxes[keep].float(), "cxcywh", "xyxy")
    keep = keep[nms(xyxy, scores[keep].float(), nms_iou)]
    return keep[:limit]


def track_nodes(
    memories: Sequence[Sequence[TrackMemory]], embed_dim: int, device: torch.device
) -> TrackNodes:
    """One graph of tracks per batch entry, padded to the largest (padding masked)."""
    B, n = len(memories), max((len(m) for m in memories), default=0)
    embeds = torch.zeros(B, n, embed_dim, device=device)
    boxes = torch.zeros(B, n, 4, device=device)
    boxes[..., 2:] = 1.0  # padding gets a valid box (masked out anyway)
    missed = torch.zeros(B, n, device=device)
    mask = torch.zeros(B, n, dtype=torch.bool, device=device)
    for b, mems in enumerate(memories):
        if not mems:
            continue
        k = len(mems)
        embeds[b, :k] = torch.stack([m.embed() for m in mems]).to(device)
        boxes[b, :k] = torch.stack([m.box() for m in mems]).to(device)
        missed[b, :k] = torch.tensor([float(m.missed) for m in mems], device=device)
        mask[b, :k] = True
    return TrackNodes(embeds, boxes, missed, mask)


def proposal_nodes(
    embeds: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], scores: Sequence[torch.Tensor]
) -> ProposalNodes:
    """Per batch entry ``[m_b, E]``, ``[m_b, 4]``, ``[m_b]`` -> padded :class:`ProposalNodes`."""
    B, m = len(embeds), max((e.shape[0] for e in embeds), default=0)
    E = embeds[0].shape[-1] if embeds else 1
    device = embeds[0].device if embeds else torch.device("cpu")
    out_e = torch.zeros(B, m, E, device=device)
    out_b = torch.zeros(B, m, 4, device=device)
    out_b[..., 2:] = 1.0
    out_s = torch.zeros(B, m, device=device)
    mask = torch.zeros(B, m, dtype=torch.bool, device=device)
    for b, (e, bx, s) in enumerate(zip(embeds, boxes, scores, strict=True)):
        k = e.shape[0]
        out_e[b, :k], out_b[b, :k], out_s[b, :k] = e.float(), bx.float(), s.float()
        mask[b, :k] = True
    return ProposalNodes(out_e, out_b, out_s, mask)


def _real(x: torch.Tensor) -> torch.Tensor:
    """float32 for half and float32 inputs, float64 kept (the head runs in float64 too)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """cxcywh ``[B, n, 4]`` x ``[B, m, 4]`` -> IoU ``[B, n, m]``."""
    a = box_convert(_real(boxes1), "cxcywh", "xyxy")
    b = box_convert(_real(boxes2), "cxcywh", "xyxy")
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1)
    return inter / (area_a[:, :, None] + area_b[:, None, :] - inter).clamp_min(1e-9)


def cosine(embeds1: torch.Tensor, embeds2: torch.Tensor) -> torch.Tensor:
    """``[B, n, E]`` x ``[B, m, E]`` -> cosine similarity ``[B, n, m]``."""
    a = torch.nn.functional.normalize(_real(embeds1), dim=-1)
    b = torch.nn.functional.normalize(_real(embeds2), dim=-1)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype) @ b.to(dtype).transpose(1, 2)


PAIR_FEATURES = ("cosine", "iou", "dx", "dy", "log_w", "log_h", "missed", "score")


def pair_features(tracks: TrackNodes, props: ProposalNodes, max_missed: int) -> torch.Tensor:
    """Node-pair evidence ``[B, n, m, 8]`` (``PAIR_FEATURES``): embedding cosine, IoU of the
    predicted track box with the proposal box, centre offset over the predicted size
    ``|dx| / w``, ``|dy| / h`` (clamped to 4), log size ratios (clamped to +-2), frames
    missed over ``max_missed + 1``, proposal score."""
    tb, pb = _real(tracks.boxes), _real(props.boxes)
    w = tb[..., 2].clamp_min(1e-3)[:, :, None]
    h = tb[..., 3].clamp_min(1e-3)[:, :, None]
    dx = ((pb[:, None, :, 0] - tb[:, :, None, 0]).abs() / w).clamp(max=4.0)
    dy = ((pb[:, None, :, 1] - tb[:, :, None, 1]).abs() / h).clamp(max=4.0)
    log_w = torch.log(pb[:, None, :, 2].clamp_min(1e-3) / w).clamp(-2.0, 2.0)
    log_h = torch.log(pb[:, None, :, 3].clamp_min(1e-3) / h).clamp(-2.0, 2.0)
    n, m = tracks.size, props.size
    missed = (_real(tracks.missed) / (max_missed + 1))[:, :, None].expand(-1, n, m)
    score = _real(props.scores)[:, None, :].expand(-1, n, m)
    feats = [cosine(tracks.embeds, props.embeds), pairwise_iou(tb, pb), dx, dy, log_w, log_h]
    return torch.stack([*feats, missed, score], -1)


def edge_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """boxes ``[B, n, 4]`` cxcywh -> ``[B, n, n, 4]`` geometry of box j relative to box i:
    centre offset over the pair's mean size, log size ratios (clamped), so that the same
    configuration of objects gives the same edges at any scale."""
    cx, cy, w, h = _real(boxes).unbind(-1)
    w, h = w.clamp_min(1e-3), h.clamp_min(1e-3)
    mw = 0.5 * (w[:, :, None] + w[:, None, :])
    mh = 0.5 * (h[:, :, None] + h[:, None, :])
    dx = ((cx[:, None, :] - cx[:, :, None]) / mw).clamp(-8.0, 8.0)
    dy = ((cy[:, None, :] - cy[:, :, None]) / mh).clamp(-8.0, 8.0)
    lw = torch.log(w[:, None, :] / w[:, :, None]).clamp(-2.0, 2.0)
    lh = torch.log(h[:, None, :] / h[:, :, None]).clamp(-2.0, 2.0)
    return torch.stack([dx, dy, lw, lh], -1)
