"""Per-frame model outputs of annotated videos, cached once, for association training and
the experiments: the detector runs once, association heads and trackers many times.

``cache_videos`` runs a (frozen) model online over the videos of a YouTube-VIS annotation
dict and keeps, per frame, what the tracker and the association heads need: decoder states
``queries [Nq, D]`` (the heads' input), the model's ``embeds [Nq, E]``, ``logits``, ``boxes``,
the compressed RLE of every proposal scoring at least ``min_score`` at the video's size, and
its ground-truth object: ``gt_ids`` (the object a proposal is matched to, Hungarian on mask
IoU >= 0.5, one proposal per object) and ``dup_ids`` (the object an unmatched proposal covers
at IoU >= 0.5: a duplicate). Object ids are the annotation ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from torch import nn

from gmpvis.association import FrameRecord, select_proposals
from gmpvis.config import Config, TrackerConfig
from gmpvis.infer import (
    FrameProposals,
    annotated_sources,
    build_preprocessor,
    build_stepper,
    checked_frames,
    encode_mask,
    eval_mode,
    frame_outputs,
    mask_decoder,
)

MATCH_IOU = 0.5  # mask IoU at which a proposal covers an object (the oracle's and AP50's bar)


@dataclass
class CachedFrame:
    """One frame; ``[Nq, ...]`` tensors on the CPU, ``rles[q]`` None below ``min_score``."""

    logits: torch.Tensor
    boxes: torch.Tensor
    queries: torch.Tensor
    embeds: torch.Tensor
    rles: list[dict | None]
    gt_ids: torch.Tensor
    dup_ids: torch.Tensor

    @property
    def scores(self) -> torch.Tensor:
        return self.logits.float().sigmoid().amax(-1)

    def proposals(self, embeds: torch.Tensor | None = None) -> FrameProposals:
        """The tracker's view, with ``embeds`` in place of the model's when given."""
        rles = self.rles

        def rle_fn(indices: torch.Tensor) -> list[dict]:
            out = [rles[int(q)] for q in indices]
            if any(r is None for r in out):
                raise ValueError("cached frame: a proposal below the cache's min_score was kept")
            return out

        e = self.embeds if embeds is None else embeds
        return FrameProposals(self.logits, self.boxes, e, rle_fn=rle_fn)

    def record(self, embeds: torch.Tensor, tracker: TrackerConfig) -> FrameRecord:
        """The frame as training graphs see it, with the tracker's proposal selection."""
        kept = select_proposals(
            self.scores, self.boxes, tracker.det_threshold, tracker.nms_iou, tracker.max_proposals
        )
        return FrameRecord(embeds, self.boxes, self.scores, kept, self.gt_ids, self.dup_ids)


@dataclass
class CachedVideo:
    video_id: int
    height: int
    width: int
    frames: list[CachedFrame] = field(default_factory=list)


def _gt_masks(anns: list[dict], t: int) -> tuple[list[int], list[dict]]:
    """The objects visible in frame ``t`` of a video's annotations -> (ids, RLEs)."""
    ids, rles = [], []
    for a in anns:
        if a["segmentations"][t] is not None:
            seg = a["segmentations"][t]
            if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                seg = mask_utils.frPyObjects(seg, *seg["size"])
            ids.append(int(a["id"]))
            rles.append(seg)
    return ids, rles


def match_objects(
    rles: list[dict | None], gt_ids: list[int], gt_rles: list[dict]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposal masks (None: not cached) x object masks -> (``gt_ids [Nq]``, ``dup_ids
    [Nq]``): Hungarian on mask IoU, pairs at IoU >= ``MATCH_IOU``; -1 for none."""
    Nq = len(rles)
    matched = torch.full((Nq,), -1, dtype=torch.long)
    dup = torch.full((Nq,), -1, dtype=torch.long)
    have = [q for q in range(Nq) if rles[q] is not None]
    if not have or not gt_rles:
        return matched, dup
    iou = np.asarray(mask_utils.iou([rles[q] for q in have], gt_rles, [0] * len(gt_rles)))
    iou = iou.reshape(len(have), len(gt_rles))
    rows, cols = linear_sum_assignment(-iou)
    for r, c in zip(rows, cols, strict=True):
        if iou[r, c] >= MATCH_IOU:
            matched[have[r]] = gt_ids[c]
    for r, q in enumerate(have):
        c = int(iou[r].argmax())
        if matched[q] < 0 and iou[r, c] >= MATCH_IOU:
            dup[q] = gt_ids[c]
    return matched, dup


@torch.no_grad()
def cache_videos(
    model: nn.Module,
    cfg: Config,
    gt: dict,
    frames_root: str,
    *,
    min_score: float = 0.01,
    progress=None,
) -> list[CachedVideo]:
    """Every video of ``gt`` (see the module docstring); the model runs on its own device."""
    device = next(model.parameters()).device
    pre = build_preprocessor(cfg, device)
    out: list[CachedVideo] = []
    sources = annotated_sources(gt, [v["id"] for v in gt["videos"]], frames_root)
    anns_of: dict[int, list[dict]] = {}
    for a in gt.get("annotations", []):
        anns_of.setdefault(int(a["video_id"]), []).append(a)
    with eval_mode(model):
        stepper = build_stepper(model, cfg, device)
        for src in sources if progress is None else progress(sources):
            video = CachedVideo(int(src.video_id), src.height, src.width)
            hw = (src.height, src.width)
            for t, frame in enumerate(frame_outputs(stepper, checked_frames(src), pre)):
                o = {k: v.float().cpu() for k, v in frame.outputs.items()}
                scores = o["pred_logits"].sigmoid().amax(-1)
                wanted = torch.nonzero(scores >= min_score).flatten()
                rles: list[dict | None] = [None] * scores.numel()
                if wanted.numel():
                    masks = mask_decoder(o["pred_masks"], frame.input_hw, hw)(wanted)
                    for q, m in zip(wanted.tolist(), masks, strict=True):
                        rles[q] = encode_mask(m)
                ids, gt_rles = _gt_masks(anns_of.get(video.video_id, []), t)
                gt_ids, dup_ids = match_objects(rles, ids, gt_rles)
                video.frames.append(
                    CachedFrame(
                        o["pred_logits"], o["pred_boxes"], o["pred_queries"].half(),
                        o["pred_embeds"], rles, gt_ids, dup_ids,
                    )
                )  # fmt: skip
            out.append(video)
    return out
