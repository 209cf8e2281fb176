"""Offline inference: overlapping clips, tracked inside each clip, stitched by graph matching.

For users who prefer accuracy over latency. The video is cut into clips of ``clip_len``
frames that overlap by ``overlap`` frames (clip starts ``0, s, 2s, ...`` with
``s = clip_len - overlap``). Each clip runs through the model in clip mode (temporal
aggregation over the whole clip) and an :class:`OnlineTracker` links its proposals into
clip tracks. Clip tracks are then stitched to the video's tracks with the same graph
matching head: nodes are a video track (mean of its last ``memory`` embeddings, its last
box) and a clip track (mean embedding over its first ``overlap + 1`` frames, its first box);
the soft assignment (with dustbin) is read off by the Hungarian algorithm and pairs of
probability >= ``match_threshold`` are joined. Frames already covered by the previous clip
keep their masks; an unmatched clip track starts a video track unless it lives only in the
overlap (the previous clip already had its chance to track it). Only ``clip_len`` frames
are held at a time, so memory stays flat over the video too.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from gmpvis.config import Config
from gmpvis.engine.online import FramePreprocessor, LatencyStats, Stepper
from gmpvis.engine.tracker import (
    FrameProposals,
    OnlineTracker,
    TrackerConfig,
    track_results,
)
from gmpvis.engine.video_inference import mask_decoder


@dataclass
class StitchedTrack:
    """A video track: per global frame its RLE, and the running class evidence."""

    track_id: int
    embeds: deque  # recent embeddings [E]
    box: torch.Tensor  # last box cxcywh [4]
    last_frame: int
    prob_sum: torch.Tensor  # [C]
    num_frames: int = 0
    frames: dict[int, dict] = field(default_factory=dict)  # global frame -> RLE

    def add(self, t: int, embed, box, prob, rle) -> None:
        if t in self.frames:  # covered by an earlier clip: keep it
            return
        self.frames[t] = rle
        self.embeds.append(embed)
        self.box, self.last_frame = box, max(self.last_frame, t)
        self.prob_sum = self.prob_sum + prob
        self.num_frames += 1


@dataclass
class ClipTrack:
    """A track inside one clip: per global frame (embedding, box, class probability, RLE)."""

    frames: dict[int, tuple] = field(default_factory=dict)

    def node(self, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
        ts = sorted(self.frames)
        first = ts[: overlap + 1]
        embed = torch.stack([self.frames[t][0] for t in first]).mean(0)
        return embed, self.frames[ts[0]][1]


class ClipStitcher:
    """Joins clip tracks into video tracks (see the module docstring)."""

    def __init__(self, associate, tracker_cfg: TrackerConfig | None = None) -> None:
        self.associate = associate
        self.cfg = tracker_cfg or TrackerConfig()
        self.tracks: list[StitchedTrack] = []
        self.covered = 0  # frames [0, covered) already processed by earlier clips

    def _new_track(self, ct: ClipTrack) -> None:
        t0 = min(ct.frames)
        e, b, p, _ = ct.frames[t0]
        track = StitchedTrack(
            len(self.tracks) + 1, deque(maxlen=self.cfg.memory), b, t0, torch.zeros_like(p)
        )
        for t in sorted(ct.frames):
            track.add(t, *ct.frames[t])
        self.tracks.append(track)

    @torch.no_grad()
    def add_clip(self, clip_tracks: list[ClipTrack], start: int, end: int, overlap: int) -> None:
        """Stitch the tracks of the clip covering global frames ``[start, end)``."""
        cfg = self.cfg
        clip_tracks = [ct for ct in clip_tracks if ct.frames]
        # candidates: video tracks seen recently enough to be the same object
        cands = [tr for tr in self.tracks if start - tr.last_frame <= cfg.max_missing + 1]
        # one graph holds at most max_live_tracks nodes a side (the Triton sinkhorn's limit):
        # the most recently seen candidates; clip tracks past the cap start new tracks
        cands = sorted(cands, key=lambda tr: start - tr.last_frame)[: cfg.max_live_tracks]
        joinable = clip_tracks[: cfg.max_live_tracks]
        matches: dict[int, StitchedTrack] = {}
        if cands and joinable:
            nodes = [ct.node(overlap) for ct in joinable]
            e1 = torch.stack([torch.stack(list(tr.embeds)).mean(0) for tr in cands])[None]
            b1 = torch.stack([tr.box for tr in cands])[None]
            e2 = torch.stack([n[0] for n in nodes])[None]
            b2 = torch.stack([n[1] for n in nodes])[None]
            soft = self.associate(e1, b1, e2, b2)[0, : len(cands), : len(joinable)]
            soft = soft.float().cpu()
            rows, cols = linear_sum_assignment(-soft.numpy())
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if soft[r, c] >= cfg.match_threshold:
                    matches[c] = cands[r]
        for c, ct in enumerate(clip_tracks):
            if c in matches:
                for t in sorted(ct.frames):
                    matches[c].add(t, *ct.frames[t])
            elif max(ct.frames) >= self.covered:
                self._new_track(ct)
        self.covered = max(self.covered, end)

    def results(self, video_id: int, num_frames: int, category_ids: list[int]) -> list[dict]:
        """YouTube-VIS results, one per track and top category (mean class probability)."""
        out = []
        for tr in self.tracks:
            out.extend(
                track_results(
                    video_id,
                    num_frames,
                    category_ids,
                    tr.prob_sum,
                    tr.num_frames,
                    tr.frames,
                    self.cfg.categories_per_track,
                )
            )
        return out


def clip_starts(num_frames: int, clip_len: int, overlap: int) -> list[int]:
    """Start frames of the clips covering ``num_frames`` (the last clip may be shorter)."""
    if clip_len < 1 or not 0 <= overlap < clip_len:
        raise ValueError(f"clip_len {clip_len} / overlap {overlap}: need 0 <= overlap < clip_len")
    step = clip_len - overlap
    starts = [0]
    while starts[-1] + clip_len < num_frames:
        starts.append(starts[-1] + step)
    return starts


@torch.no_grad()
def _track_clip(stepper: Stepper, clip: torch.Tensor, start: int, orig_hw, tracker_cfg):
    """clip ``[1, T, 3, h, w]`` -> (clip tracks keyed by global frame, model ms)."""
    model = stepper.model
    tm = time.perf_counter()
    with stepper.autocast():
        out = model(clip)
    if stepper.device.type == "cuda":  # offline favours accuracy over latency: honest timing
        torch.cuda.synchronize(stepper.device)
    model_ms = (time.perf_counter() - tm) * 1e3
    tracker = OnlineTracker(model.associate, tracker_cfg)
    tracks: dict[int, ClipTrack] = {}
    for t in range(clip.shape[1]):
        logits, boxes = out["pred_logits"][0, t], out["pred_boxes"][0, t]
        embeds = out["pred_embeds"][0, t]
        with stepper.autocast():
            seen = tracker.step(
                FrameProposals(
                    logits,
                    boxes,
                    embeds,
                    mask_decoder(out["pred_masks"][0, t], clip.shape[-2:], orig_hw),
                )
            )
        if not seen:
            continue
        by_id = {tr.track_id: tr for tr in tracker.live}
        for track_id, q in seen:
            tracks.setdefault(track_id, ClipTrack()).frames[start + t] = (
                embeds[q].float(),
                boxes[q].float(),
                logits[q].float().sigmoid(),
                by_id[track_id].frames[t],
            )
    return list(tracks.values()), model_ms


def track_frames_offline(
    stepper: Stepper,
    frames: Iterable[np.ndarray],
    orig_hw: tuple[int, int],
    cfg: Config,
    tracker_cfg: TrackerConfig | None = None,
    *,
    clip_len: int = 8,
    overlap: int = 2,
) -> tuple[ClipStitcher, LatencyStats, int]:
    """Offline tracking of uint8 frames -> (stitcher with ``.results``, latency, frames).

    Latency is per frame amortised over each clip's new frames (a clip's time divided by the
    frames it adds), so it compares with the online numbers as throughput, not as delay.
    """
    clip_starts(clip_len, clip_len, overlap)  # validates the arguments
    pre = FramePreprocessor(cfg, stepper.device, stepper.opts.channels_last)
    stitcher = ClipStitcher(stepper.model.associate, tracker_cfg)
    stats = LatencyStats()
    buf: list[torch.Tensor] = []
    start = n = 0
    t0 = time.perf_counter()

    def flush(final: bool) -> None:
        nonlocal buf, start, t0
        clip = torch.stack([x[0] for x in buf])[None]
        clip_tracks, model_ms = _track_clip(stepper, clip, start, orig_hw, tracker_cfg)
        stitcher.add_clip(clip_tracks, start, start + len(buf), overlap)
        new = len(buf) - (overlap if start > 0 else 0)
        now = time.perf_counter()
        stats.model_ms.extend([model_ms / max(new, 1)] * new)
        stats.total_ms.extend([(now - t0) * 1e3 / max(new, 1)] * new)
        t0 = now
        if not final:
            start += len(buf) - overlap
            buf = buf[len(buf) - overlap :]

    for frame in frames:
        buf.append(pre(frame))
        n += 1
        if len(buf) == clip_len:
            flush(final=False)
    if n > 0 and (len(buf) > overlap or start == 0):
        flush(final=True)
    return stitcher, stats, n
