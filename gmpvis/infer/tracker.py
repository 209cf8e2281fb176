"""Tracks, and associating proposals to them: the online tracker and the shared match rule.

Per frame the model gives ``Nq`` proposals (class logits, box, mask logits, instance
embedding). :class:`OnlineTracker` keeps the confident ones (score >= ``det_threshold``,
duplicates removed by box NMS), then solves a graph matching between the live tracks (nodes:
each track's node embedding and its last box) and the proposals with ``associate`` (the
model's graph matching head: soft assignment with a dustbin). :func:`accept_matches` reads
pairs off the soft assignment (Hungarian, then ``match_threshold``); the offline stitcher
uses the same rule. Unmatched proposals scoring at least ``birth_threshold`` and overlapping
no matched proposal (box IoU above ``birth_max_overlap``) start tracks; a track unmatched
for more than ``max_missing`` frames ends.

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

from gmpvis.config import TrackerConfig
from gmpvis.infer.frames import FrameProposals

# associate(embeds1 [1,n1,E], boxes1 [1,n1,4], embeds2 [1,n2,E], boxes2 [1,n2,4]) -> [1,n1+1,n2+1]
AssociateFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Observation:
    """What a track saw in one frame: embedding ``[E]``, box ``[4]`` cxcywh, class
    probabilities ``[C]``."""

    frame: int
    embed: torch.Tensor
    box: torch.Tensor
    prob: torch.Tensor


@dataclass
class Track:
    """One object through the video: per frame its RLE, the running class evidence, and the
    most recent observations (``recent``, bounded) that matching reads."""

    track_id: int
    recent: deque  # of Observation, oldest first
    prob_sum: torch.Tensor  # [C], summed over the frames seen
    frames: dict[int, dict] = field(default_factory=dict)  # frame index -> compressed RLE
    missing: int = 0  # frames since last seen

    @classmethod
    def start(cls, track_id: int, keep: int, num_classes: int) -> Track:
        """An empty track keeping its last ``keep`` observations."""
        return cls(track_id, deque(maxlen=keep), torch.zeros(num_classes))

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def box(self) -> torch.Tensor:
        return self.recent[-1].box

    @property
    def last_frame(self) -> int:
        return max(self.frames)

    def node_embed(self, history: int) -> torch.Tensor:
        """Mean of the last ``history`` embeddings ``[E]``."""
        return torch.stack([o.embed for o in list(self.recent)[-history:]]).mean(0)

    def add(self, obs: Observation, rle: dict) -> None:
        """Record a frame; a frame already recorded (an earlier clip's overlap) is kept."""
        if obs.frame in self.frames:
            return
        self.frames[obs.frame] = rle
        self.recent.append(obs)
        self.prob_sum = self.prob_sum + obs.prob
        self.missing = 0

    def results(
        self, video_id: int, num_frames: int, category_ids: list[int], categories: int
    ) -> list[dict]:
        """YouTube-VIS results: one entry per top category, scored by the mean class
        probability over the frames seen; one RLE or None per frame of the video."""
        if not self.frames:
            return []
        mean_prob = self.prob_sum / self.num_frames
        top = torch.topk(mean_prob, min(categories, mean_prob.numel()))
        segmentations = [self.frames.get(t) for t in range(num_frames)]
        return [
            {
                "video_id": int(video_id),
                "category_id": int(category_ids[label]),
                "score": float(score),
                "segmentations": segmentations,
            }
            for score, label in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]


def accept_matches(soft: torch.Tensor, threshold: float) -> dict[int, int]:
    """``soft [n1, n2]`` assignment probabilities (dustbin removed) -> ``{row: column}``:
    the Hungarian solution, each pair kept where its probability is >= ``threshold``."""
    soft = soft.float().cpu()
    rows, cols = linear_sum_assignment(-soft.numpy())
    return {
        r: c for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if soft[r, c] >= threshold
    }


def encode_mask(mask: torch.Tensor) -> dict:
    """``[H, W]`` bool -> compressed RLE with ``counts`` as str (results format)."""
    rle = mask_utils.encode(np.asfortranarray(mask.cpu().numpy().astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


class OnlineTracker:
    """Frame-by-frame association; ``step`` per frame, then ``results`` for the video.

    ``keep``: observations kept per track (default ``cfg.embed_history``; the offline driver
    keeps a whole clip's); ``first_frame``: video index of the first frame stepped."""

    def __init__(
        self,
        associate: AssociateFn,
        cfg: TrackerConfig | None = None,
        *,
        keep: int | None = None,
        first_frame: int = 0,
    ) -> None:
        self.associate = associate
        self.cfg = cfg or TrackerConfig()
        self.keep = keep or self.cfg.embed_history
        self.live: list[Track] = []
        self.ended: list[Track] = []
        self.next_id = 1
        self.frame_index = first_frame  # index of the next frame stepped

    @property
    def tracks(self) -> list[Track]:
        return self.ended + self.live

    def _select(self, frame: FrameProposals) -> torch.Tensor:
        """Indices of confident, non-duplicate proposals, best first."""
        scores = frame.logits.float().sigmoid().amax(-1)
        keep = torch.nonzero(scores >= self.cfg.det_threshold).flatten()
        if keep.numel() == 0:
            return keep
        xyxy = box_convert(frame.boxes[keep].float(), "cxcywh", "xyxy")
        keep = keep[nms(xyxy, scores[keep], self.cfg.nms_iou)]
        return keep[: self.cfg.max_proposals]

    def _births(self, boxes: torch.Tensor, probs: torch.Tensor, used: set[int]) -> list[int]:
        """Unmatched proposals confident enough to start a track and not overlapping a
        proposal that continues one (that would be a duplicate, not a newcomer)."""
        births = [
            c
            for c in range(boxes.shape[0])
            if c not in used and probs[c].max() >= self.cfg.birth_threshold
        ]
        if births and used:
            xyxy = box_convert(boxes, "cxcywh", "xyxy")
            overlap = box_iou(xyxy[births], xyxy[sorted(used)]).amax(1)
            births = [
                c
                for c, o in zip(births, overlap.tolist(), strict=True)
                if o <= self.cfg.birth_max_overlap
            ]
        return births

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
            track_embeds = torch.stack([tr.node_embed(cfg.embed_history) for tr in self.live])
            track_boxes = torch.stack([tr.box for tr in self.live])
            assign = self.associate(
                track_embeds[None], track_boxes[None], embeds[None], boxes[None]
            )
            matches = accept_matches(
                assign[0, : len(self.live), : keep.numel()], cfg.match_threshold
            )
        used = set(matches.values())
        births = self._births(boxes, probs, used)
        wanted = sorted(used | set(births))
        masks = frame.mask_fn(keep[wanted]) if wanted else None
        rle_of = {c: encode_mask(masks[i]) for i, c in enumerate(wanted)} if wanted else {}

        def observe(track: Track, c: int) -> None:
            track.add(Observation(t, embeds[c], boxes[c], probs[c].cpu()), rle_of[c])
            seen.append((track.track_id, int(keep[c])))

        seen: list[tuple[int, int]] = []
        survivors = []
        for pos, track in enumerate(self.live):
            if pos in matches:
                observe(track, matches[pos])
                survivors.append(track)
            else:
                track.missing += 1
                (self.ended if track.missing > cfg.max_missing else survivors).append(track)
        for c in births:
            track = Track.start(self.next_id, self.keep, probs.shape[1])
            self.next_id += 1
            observe(track, c)
            survivors.append(track)
        if len(survivors) > cfg.max_live_tracks:
            survivors.sort(key=lambda tr: tr.missing)  # stable: birth order among equals
            self.ended.extend(survivors[cfg.max_live_tracks :])
            survivors = survivors[: cfg.max_live_tracks]
        self.live = survivors
        return seen

    def results(self, video_id: int, num_frames: int, category_ids: list[int]) -> list[dict]:
        """YouTube-VIS results for every track (see :meth:`Track.results`)."""
        out = []
        for track in self.tracks:
            out.extend(
                track.results(video_id, num_frames, category_ids, self.cfg.categories_per_track)
            )
        return out
