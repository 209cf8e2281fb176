"""Online tracking: associate each frame's proposals to live tracks by graph matching.

Per frame the model gives ``Nq`` proposals (class logits, box, mask logits, instance
embedding). The tracker keeps the confident ones (score >= ``det_threshold``, duplicates
removed by box NMS), then solves a graph matching between the live tracks (nodes: the mean
of each track's last ``memory`` embeddings and its last box) and the proposals with the
model's graph matching head (``associate``: soft assignment with a dustbin). Pairs are read
off the soft assignment with the Hungarian algorithm and kept where their probability is at
least ``match_threshold``. Unmatched proposals scoring at least ``birth_threshold`` and
overlapping no matched proposal (box IoU above ``birth_max_overlap``) start tracks; a track
unmatched for more than ``max_missing`` frames ends.

Masks are RLE-encoded as soon as a frame is done, so memory stays flat over a video of any
length (only the compact output grows).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, box_iou, nms

# associate(embeds1 [1,n1,E], boxes1 [1,n1,4], embeds2 [1,n2,E], boxes2 [1,n2,4]) -> [1,n1+1,n2+1]
AssociateFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrackerConfig:
    # Sigmoid-focal class probabilities of a confident query are often only 0.2-0.5; AP ranks
    # tracks by score, so a low bar costs little precision and keeps recall.
    det_threshold: float = 0.05  # proposals below this max class probability are ignored
    birth_threshold: float = 0.1  # an unmatched proposal above this starts a track
    # least assignment probability of an accepted match. The trained GM head ranks pairs well
    # but leaves most of a true match's mass in the dustbin; on the easy ablation set 0.01
    # gives AP 0.47 / 30 ID switches against 0.36 / 69 at 0.05 (benchmarks/ablation.py)
    match_threshold: float = 0.01
    birth_max_overlap: float = 0.5  # box IoU with a matched proposal above which none is born
    nms_iou: float = 0.6  # box IoU above which the weaker of two proposals is dropped
    max_missing: int = 5  # frames a track survives unmatched (occlusion) before it ends
    memory: int = 5  # recent embeddings kept per track
    max_proposals: int = 20  # per frame, after thresholding (largest scores first)
    # live tracks in one association graph; the Triton sinkhorn holds at most 127 nodes a side
    # with the dustbin, so beyond this the longest-missing tracks end early
    max_live_tracks: int = 100
    # results per track, one per top category (scored by its mean probability): an uncertain
    # class costs a low-scored extra result instead of a missed instance
    categories_per_track: int = 3


@dataclass
class Track:
    track_id: int
    embeds: deque  # recent embeddings [E]
    box: torch.Tensor  # last box, cxcywh normalised [4]
    class_prob_sum: torch.Tensor  # [C], summed over matched frames
    frames: dict[int, dict] = field(default_factory=dict)  # frame index -> compressed RLE
    num_frames: int = 0
    missing: int = 0

    def node_embed(self) -> torch.Tensor:
        return torch.stack(list(self.embeds)).mean(0)


@dataclass
class FrameProposals:
    """One frame's model outputs, after the frame's masks are brought to the video size.

    logits ``[Nq, C]``, boxes ``[Nq, 4]`` (cxcywh in [0, 1]), embeds ``[Nq, E]``,
    masks ``[Nq, H, W]`` bool at the video's original size (may be computed lazily by
    ``mask_fn(indices) -> [n, H, W] bool`` to decode only kept proposals).
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    embeds: torch.Tensor
    mask_fn: Callable[[torch.Tensor], torch.Tensor]


def encode_mask(mask: torch.Tensor) -> dict:
    """``[H, W]`` bool -> compressed RLE with ``counts`` as str (results format)."""
    rle = mask_utils.encode(np.asfortranarray(mask.cpu().numpy().astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


class OnlineTracker:
    """Frame-by-frame association; ``step`` per frame, then ``results`` for the video."""

    def __init__(self, associate: AssociateFn, cfg: TrackerConfig | None = None) -> None:
        self.associate = associate
        self.cfg = cfg or TrackerConfig()
        self.live: list[Track] = []
        self.ended: list[Track] = []
        self.next_id = 1
        self.frame_index = 0

    def _select(self, frame: FrameProposals) -> torch.Tensor:
        """Indices of confident, non-duplicate proposals, best first."""
        scores = frame.logits.float().sigmoid().amax(-1)
        keep = torch.nonzero(scores >= self.cfg.det_threshold).flatten()
        if keep.numel() == 0:
            return keep
        xyxy = box_convert(frame.boxes[keep].float(), "cxcywh", "xyxy")
        keep = keep[nms(xyxy, scores[keep], self.cfg.nms_iou)]
        return keep[: self.cfg.max_proposals]

    @torch.no_grad()
    def step(self, frame: FrameProposals) -> list[tuple[int, int]]:
        """Associate one frame; returns ``(track_id, proposal index)`` for every track seen."""
        cfg = self.cfg
        t = self.frame_index
        self.frame_index += 1
        keep = self._select(frame)
        probs = frame.logits[keep].float().sigmoid()
        embeds = frame.embeds[keep].float()
        boxes = frame.boxes[keep].float()
        matches: dict[int, int] = {}  # position in self.live -> position in keep
        if self.live and keep.numel() > 0:
            track_embeds = torch.stack([tr.node_embed() for tr in self.live])[None]
            track_boxes = torch.stack([tr.box for tr in self.live])[None]
            assign = self.associate(track_embeds, track_boxes, embeds[None], boxes[None])
            soft = assign[0, : len(self.live), : keep.numel()].float().cpu()
            rows, cols = linear_sum_assignment(-soft.numpy())
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if soft[r, c] >= cfg.match_threshold:
                    matches[r] = c
        used = set(matches.values())
        births = [
            c
            for c in range(keep.numel())
            if c not in used and probs[c].max() >= cfg.birth_threshold
        ]
        if births and used:
            # a proposal overlapping one that continues a track is a duplicate, not a newcomer
            xyxy = box_convert(boxes, "cxcywh", "xyxy")
            overlap = box_iou(xyxy[births], xyxy[sorted(used)]).amax(1)
            births = [c for c, o in zip(births, overlap.tolist(), strict=True)
                      if o <= cfg.birth_max_overlap]  # fmt: skip
        wanted = sorted(used | set(births))
        masks = frame.mask_fn(keep[wanted]) if wanted else None
        mask_of = {c: masks[i] for i, c in enumerate(wanted)} if masks is not None else {}

        seen: list[tuple[int, int]] = []
        survivors = []
        for pos, track in enumerate(self.live):
            if pos in matches:
                c = matches[pos]
                self._update(track, t, embeds[c], boxes[c], probs[c], mask_of[c])
                seen.append((track.track_id, int(keep[c])))
                survivors.append(track)
            else:
                track.missing += 1
                (self.ended if track.missing > cfg.max_missing else survivors).append(track)
        for c in births:
            track = Track(
                track_id=self.next_id,
                embeds=deque(maxlen=cfg.memory),
                box=boxes[c],
                class_prob_sum=torch.zeros_like(probs[c]),
            )
            self.next_id += 1
            self._update(track, t, embeds[c], boxes[c], probs[c], mask_of[c])
            seen.append((track.track_id, int(keep[c])))
            survivors.append(track)
        if len(survivors) > cfg.max_live_tracks:
            survivors.sort(key=lambda tr: tr.missing)  # stable: birth order among equals
            self.ended.extend(survivors[cfg.max_live_tracks :])
            survivors = survivors[: cfg.max_live_tracks]
        self.live = survivors
        return seen

    @staticmethod
    def _update(track: Track, t: int, embed, box, prob, mask) -> None:
        track.embeds.append(embed)
        track.box = box
        track.class_prob_sum = track.class_prob_sum + prob
        track.num_frames += 1
        track.missing = 0
        track.frames[t] = encode_mask(mask)

    def results(self, video_id: int, num_frames: int, category_ids: list[int]) -> list[dict]:
        """YouTube-VIS results for every track: one entry per top category of the track.

        The score is the track's mean class probability over the frames where it was seen.
        """
        out = []
        for track in self.ended + self.live:
            out.extend(
                track_results(
                    video_id,
                    num_frames,
                    category_ids,
                    track.class_prob_sum,
                    track.num_frames,
                    track.frames,
                    self.cfg.categories_per_track,
                )
            )
        return out


def track_results(
    video_id: int,
    num_frames: int,
    category_ids: list[int],
    prob_sum: torch.Tensor,
    frames_seen: int,
    masks: dict[int, dict],
    categories: int,
) -> list[dict]:
    """YouTube-VIS results of one track: one entry per top category, scored by the mean class
    probability ``prob_sum [C] / frames_seen``; ``masks`` maps frame index -> RLE."""
    if frames_seen == 0:
        return []
    mean_prob = prob_sum / frames_seen
    top = torch.topk(mean_prob, min(categories, mean_prob.numel()))
    segmentations = [masks.get(t) for t in range(num_frames)]
    return [
        {
            "video_id": int(video_id),
            "category_id": int(category_ids[label]),
            "score": float(score),
            "segmentations": segmentations,
        }
        for score, label in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
