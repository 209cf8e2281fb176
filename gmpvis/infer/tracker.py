"""Tracks, and associating proposals to them: the online tracker and the shared match rule.

Per frame the model gives ``Nq`` proposals (class logits, box, mask logits, instance
embedding). :class:`OnlineTracker`:

1. keeps the proposals :func:`select_proposals` keeps (score >= ``det_threshold``, box NMS,
   at most ``max_proposals``);
2. predicts every live track's box to this frame (its :class:`TrackMemory` motion state);
3. scores tracks x proposals with the association function (``tracker.association``:
   the graph matching head, embedding cosine or predicted-box IoU) and accepts the
   Hungarian pairs scoring at least that association's threshold (:func:`accept_matches`,
   also the offline stitcher's rule);
4. updates matched tracks (embedding memory and motion, the same ``update`` that builds the
   training graphs); an unmatched tentative track is dropped, a confirmed one survives
   ``max_missing`` frames on its predicted motion;
5. starts a tentative track from each unmatched proposal scoring at least
   ``birth_threshold`` that overlaps (box IoU > ``birth_max_overlap``) neither a matched
   proposal nor a live track's predicted box; it is confirmed after ``confirm_hits``
   sightings. Only confirmed tracks are reported.

Masks are RLE-encoded as soon as a frame is done, so memory stays flat over a video of any
length (only the compact output grows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, box_iou

from gmpvis.association import (
    MemorySpec,
    TrackMemory,
    proposal_nodes,
    select_proposals,
    track_nodes,
)
from gmpvis.association.associate import ScoreFn
from gmpvis.config import TrackerConfig
from gmpvis.infer.frames import FrameProposals, encode_mask
from gmpvis.model.build import build_memory_spec

__all__ = ["OnlineTracker", "Track", "accept_matches", "encode_mask"]


def match_threshold(cfg: TrackerConfig) -> float:
    """The accept threshold of ``cfg.association``."""
    return {
        "graph": cfg.match_threshold,
        "cosine": cfg.cosine_threshold,
        "iou": cfg.iou_threshold,
    }[cfg.association]


@dataclass
class Observation:
    """What a track saw in one frame: embedding ``[E]``, box ``[4]`` cxcywh, class
    probabilities ``[C]``, score (max probability)."""

    embed: torch.Tensor
    box: torch.Tensor
    prob: torch.Tensor
    score: float


@dataclass
class Track:
    """One object through the video: its memory (what matching reads), per frame its RLE,
    the running class evidence, and (for the offline driver) its observations."""

    track_id: int
    memory: TrackMemory
    prob_sum: torch.Tensor  # [C], summed over the frames seen
    frames: dict[int, dict] = field(default_factory=dict)  # frame index -> compressed RLE
    confirmed: bool = False
    observations: dict[int, Observation] | None = None

    @classmethod
    def start(
        cls, track_id: int, t: int, obs: Observation, rle: dict, spec: MemorySpec, **kw
    ) -> Track:
        track = cls(track_id, TrackMemory(t, obs.embed, obs.box, spec), obs.prob.clone(), **kw)
        track.frames[t] = rle
        if track.observations is not None:
            track.observations[t] = obs
        return track

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def last_frame(self) -> int:
        return self.memory.last_seen

    def add(self, t: int, obs: Observation, rle: dict) -> None:
        """Record a sighting; a frame already recorded (an earlier clip's overlap) is kept,
        and one before the memory's current frame only adds its mask."""
        if t in self.frames:
            return
        self.frames[t] = rle
        self.prob_sum = self.prob_sum + obs.prob
        if t >= self.memory.frame:
            self.memory.update(t, obs.embed, obs.box)
        if self.observations is not None:
            self.observations[t] = obs

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


def accept_matches(scores: torch.Tensor, threshold: float) -> dict[int, int]:
    """``scores [n1, n2]`` (higher is better) -> ``{row: column}``: the Hungarian solution,
    each pair kept where its score is >= ``threshold``."""
    scores = scores.float().cpu()
    rows, cols = linear_sum_assignment(-scores.numpy())
    return {
        r: c for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if scores[r, c] >= threshold
    }


class OnlineTracker:
    """Frame-by-frame association; ``step`` per frame, then ``results`` for the video.

    ``associate(tracks, proposals) -> [1, n, m]`` scores (``gmpvis.association``);
    ``first_frame``: video index of the first frame stepped; ``keep_observations``: keep
    every sighting's embedding and box (the offline driver stitches clips with them)."""

    def __init__(
        self,
        associate: ScoreFn,
        cfg: TrackerConfig | None = None,
        *,
        first_frame: int = 0,
        keep_observations: bool = False,
    ) -> None:
        self.associate = associate
        self.cfg = cfg or TrackerConfig()
        self.spec = build_memory_spec(self.cfg)
        self.threshold = match_threshold(self.cfg)
        self.keep_observations = keep_observations
        self.live: list[Track] = []
        self.ended: list[Track] = []
        self.next_id = 1
        self.frame_index = first_frame  # index of the next frame stepped

    @property
    def tracks(self) -> list[Track]:
        """Every confirmed track, ended ones first."""
        return [tr for tr in self.ended + self.live if tr.confirmed]

    def _births(
        self, boxes: torch.Tensor, scores: torch.Tensor, used: set[int], track_boxes
    ) -> list[int]:
        """Unmatched proposals confident enough to start a track that overlap neither a
        proposal continuing a track (a duplicate) nor a live track's predicted box (an
        object already tracked, briefly unmatched)."""
        cfg = self.cfg
        births = [
            c for c in range(boxes.shape[0]) if c not in used and scores[c] >= cfg.birth_threshold
        ]
        if not births:
            return births
        taken = [boxes[sorted(used)]] if used else []
        if track_boxes is not None and len(track_boxes):
            taken.append(track_boxes.to(boxes.device))
        if not taken:
            return births
        xyxy = box_convert(boxes[births], "cxcywh", "xyxy")
        other = box_convert(torch.cat(taken), "cxcywh", "xyxy")
        overlap = box_iou(xyxy, other).amax(1)
        return [
            c for c, o in zip(births, overlap.tolist(), strict=True) if o <= cfg.birth_max_overlap
        ]

    @torch.no_grad()
    def step(self, frame: FrameProposals) -> list[tuple[int, int]]:
        """Associate one frame; returns ``(track_id, proposal index)`` for every track seen
        (tentative ones included)."""
        cfg = self.cfg
        t = self.frame_index
        self.frame_index += 1
        all_scores = frame.logits.float().sigmoid().amax(-1)
        keep = select_proposals(
            all_scores, frame.boxes, cfg.det_threshold, cfg.nms_iou, cfg.max_proposals
        )
        probs = frame.logits[keep].float().sigmoid()
        scores = all_scores[keep]
        embeds = frame.embeds[keep].float()
        boxes = frame.boxes[keep].float()
        for track in self.live:
            track.memory.advance_to(t)
        matches: dict[int, int] = {}  # position in self.live -> position in keep
        track_boxes = None
        if self.live:
            tracks = track_nodes([[tr.memory for tr in self.live]], embeds.shape[-1], embeds.device)
            track_boxes = tracks.boxes[0]
            if keep.numel() > 0:
                props = proposal_nodes([embeds], [boxes], [scores])
                matched = self.associate(tracks, props)[0, : len(self.live), : keep.numel()]
                matches = accept_matches(matched, self.threshold)
        used = set(matches.values())
        unmatched = [pos for pos in range(len(self.live)) if pos not in matches]
        births = self._births(boxes, scores, used, track_boxes[unmatched] if unmatched else None)
        wanted = sorted(used | set(births))
        rle_of = dict(zip(wanted, frame.rles(keep[wanted]), strict=True)) if wanted else {}

        def observation(c: int) -> Observation:
            return Observation(embeds[c], boxes[c], probs[c].cpu(), float(scores[c]))

        seen: list[tuple[int, int]] = []
        survivors = []
        for pos, track in enumerate(self.live):
            if pos in matches:
                c = matches[pos]
                track.add(t, observation(c), rle_of[c])
                track.confirmed = track.confirmed or track.memory.hits >= cfg.confirm_hits
                seen.append((track.track_id, int(keep[c])))
                survivors.append(track)
            elif not track.confirmed:
                continue  # a tentative track that is not seen again was a false start
            elif t - track.last_frame > cfg.max_missing:
                self.ended.append(track)
            else:
                survivors.append(track)
        for c in births:
            track = Track.start(
                self.next_id, t, observation(c), rle_of[c], self.spec,
                confirmed=cfg.confirm_hits <= 1,
                observations={} if self.keep_observations else None,
            )  # fmt: skip
            self.next_id += 1
            seen.append((track.track_id, int(keep[c])))
            survivors.append(track)
        if len(survivors) > cfg.max_live_tracks:
            survivors.sort(key=lambda tr: t - tr.last_frame)  # stable: birth order among equals
            self.ended.extend(survivors[cfg.max_live_tracks :])
            survivors = survivors[: cfg.max_live_tracks]
        self.live = survivors
        return seen

    def results(self, video_id: int, num_frames: int, category_ids: list[int]) -> list[dict]:
        """YouTube-VIS results for every confirmed track (see :meth:`Track.results`)."""
        out = []
        for track in self.tracks:
            out.extend(
                track.results(video_id, num_frames, category_ids, self.cfg.categories_per_track)
            )
        return out
