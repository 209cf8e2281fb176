"""Offline inference: overlapping clips, tracked inside each clip, stitched by graph matching.

For users who prefer accuracy over latency. The video is cut into clips of ``clip_len``
frames that overlap by ``overlap`` frames (clip starts ``0, s, 2s, ...`` with
``s = clip_len - overlap``). Each clip runs through the model in clip mode (temporal
aggregation over the whole clip) and an :class:`OnlineTracker` links its proposals into
clip tracks (the same loop as online inference, :func:`track_outputs`). Clip tracks are then
stitched to the video's tracks with the same graph matching head: nodes are a video track
(its node embedding, its last box) and a clip track (mean embedding over its first
``overlap + 1`` frames, its first box); pairs are accepted by the tracker's rule
(:func:`accept_matches`). Frames already covered by the previous clip keep their masks; an
unmatched clip track starts a video track unless it lives only in the overlap (the previous
clip already had its chance to track it). Only ``clip_len`` frames are held at a time, so
memory stays flat over the video too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch

from gmpvis.config import TrackerConfig
from gmpvis.infer.frames import OUTPUT_KEYS, FrameOutput, FramePreprocessor
from gmpvis.infer.online import track_outputs
from gmpvis.infer.stepper import Stepper
from gmpvis.infer.timing import LatencyStats
from gmpvis.infer.tracker import AssociateFn, OnlineTracker, Track, accept_matches


def clip_node(track: Track, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip track's node: mean embedding ``[E]`` of its first ``overlap + 1`` frames and
    its first box ``[4]``."""
    first = sorted(track.recent, key=lambda o: o.frame)[: overlap + 1]
    return torch.stack([o.embed for o in first]).mean(0), first[0].box


class ClipStitcher:
    """Joins clip tracks into video tracks (see the module docstring)."""

    def __init__(self, associate: AssociateFn, cfg: TrackerConfig | None = None) -> None:
        self.associate = associate
        self.cfg = cfg or TrackerConfig()
        self.tracks: list[Track] = []
        self.covered = 0  # frames [0, covered) already processed by earlier clips

    def _extend(self, track: Track, clip_track: Track) -> None:
        for obs in sorted(clip_track.recent, key=lambda o: o.frame):
            track.add(obs, clip_track.frames[obs.frame])

    def _new_track(self, clip_track: Track) -> None:
        track = Track.start(
            len(self.tracks) + 1, self.cfg.embed_history, clip_track.prob_sum.numel()
        )
        self._extend(track, clip_track)
        self.tracks.append(track)

    @torch.no_grad()
    def add_clip(self, clip_tracks: list[Track], start: int, end: int, overlap: int) -> None:
        """Stitch the tracks of the clip covering video frames ``[start, end)``."""
        cfg = self.cfg
        clip_tracks = [ct for ct in clip_tracks if ct.frames]
        # candidates: video tracks seen recently enough to be the same object
        cands = [tr for tr in self.tracks if start - tr.last_frame <= cfg.max_missing + 1]
        # one graph holds at most max_live_tracks nodes a side (the Triton sinkhorn's limit):
        # the most recently seen candidates; clip tracks past the cap start new tracks
        cands = sorted(cands, key=lambda tr: start - tr.last_frame)[: cfg.max_live_tracks]
        joinable = clip_tracks[: cfg.max_live_tracks]
        matches: dict[int, Track] = {}
        if cands and joinable:
            nodes = [clip_node(ct, overlap) for ct in joinable]
            e1 = torch.stack([tr.node_embed(cfg.embed_history) for tr in cands])[None]
            b1 = torch.stack([tr.box for tr in cands])[None]
            e2 = torch.stack([n[0] for n in nodes])[None]
            b2 = torch.stack([n[1] for n in nodes])[None]
            soft = self.associate(e1, b1, e2, b2)[0, : len(cands), : len(joinable)]
            for r, c in accept_matches(soft, cfg.match_threshold).items():
                matches[c] = cands[r]
        for c, ct in enumerate(clip_tracks):
            if c in matches:
                self._extend(matches[c], ct)
            elif max(ct.frames) >= self.covered:
                self._new_track(ct)
        self.covered = max(self.covered, end)

    def results(self, video_id: int, num_frames: int, category_ids: list[int]) -> list[dict]:
        """YouTube-VIS results, one per track and top category (mean class probability)."""
        out = []
        for tr in self.tracks:
            out.extend(
                tr.results(video_id, num_frames, category_ids, self.cfg.categories_per_track)
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


def clip_outputs(stepper: Stepper, clip: torch.Tensor) -> list[FrameOutput]:
    """clip ``[1, T, 3, h, w]`` -> one :class:`FrameOutput` per frame (clip mode)."""
    out = stepper.clip(clip)
    hw = tuple(clip.shape[-2:])
    return [FrameOutput({k: out[k][0, t] for k in OUTPUT_KEYS}, hw) for t in range(clip.shape[1])]


@torch.no_grad()
def track_offline(
    stepper: Stepper,
    frames: Iterable[np.ndarray],
    orig_hw: tuple[int, int],
    preprocess: FramePreprocessor,
    stitcher: ClipStitcher,
    *,
    clip_len: int = 8,
    overlap: int = 2,
) -> tuple[LatencyStats, int]:
    """Offline tracking of uint8 frames into ``stitcher`` -> (latency, frames read).

    Latency is per frame amortised over each clip's new frames (a clip's time divided by the
    frames it adds), so it compares with the online numbers as throughput, not as delay.
    """
    clip_starts(clip_len, clip_len, overlap)  # validates the arguments
    stats = LatencyStats()
    buf: list[torch.Tensor] = []
    start = n = 0
    t0 = time.perf_counter()

    def flush(final: bool) -> None:
        nonlocal buf, start, t0
        clip = torch.stack([x[0] for x in buf])[None]
        tm = time.perf_counter()
        outputs = clip_outputs(stepper, clip)
        if stepper.device.type == "cuda":  # offline favours accuracy over latency: honest timing
            torch.cuda.synchronize(stepper.device)
        model_ms = (time.perf_counter() - tm) * 1e3
        tracker = OnlineTracker(stitcher.associate, stitcher.cfg, keep=len(buf), first_frame=start)
        track_outputs(tracker, outputs, orig_hw)
        clip_tracks = sorted(tracker.tracks, key=lambda tr: tr.track_id)  # birth order
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
        buf.append(preprocess(frame))
        n += 1
        if len(buf) == clip_len:
            flush(final=False)
    if n > 0 and (len(buf) > overlap or start == 0):
        flush(final=True)
    return stats, n
