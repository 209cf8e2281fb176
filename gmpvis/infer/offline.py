"""Offline inference: overlapping clips, tracked inside each clip, stitched by graph matching.

For users who prefer accuracy over latency. The video is cut into clips of ``clip_len``
frames that overlap by ``overlap`` frames (clip starts ``0, s, 2s, ...`` with
``s = clip_len - overlap``). Each clip runs through the model in clip mode (temporal
aggregation over the whole clip) and an :class:`OnlineTracker` links its proposals into
clip tracks (the same loop as online inference, :func:`track_outputs`). Clip tracks are then
stitched to the video's tracks with the same association function: nodes are a video track
(its memory, motion predicted to the clip's first frame) and a clip track (mean embedding
over its first ``overlap + 1`` frames, its first box, its mean score); pairs are accepted by
the tracker's rule
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

from gmpvis.association import proposal_nodes, track_nodes
from gmpvis.association.associate import ScoreFn
from gmpvis.config import TrackerConfig
from gmpvis.infer.frames import FrameOutput, FramePreprocessor
from gmpvis.infer.online import track_outputs
from gmpvis.infer.stepper import Stepper
from gmpvis.infer.timing import LatencyStats
from gmpvis.infer.tracker import (
    OnlineTracker,
    Track,
    accept_matches,
    match_threshold,
)
from gmpvis.model.build import build_memory_spec
from gmpvis.model.gmpvis_model import OUTPUT_KEYS


def clip_node(track: Track, overlap: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A clip track as a node: mean embedding ``[E]`` of its first ``overlap + 1`` frames,
    its first box ``[4]`` and its mean score."""
    ts = sorted(track.observations)
    first = [track.observations[t] for t in ts[: overlap + 1]]
    embed = torch.stack([o.embed for o in first]).mean(0)
    score = sum(o.score for o in first) / len(first)
    return embed, first[0].box, score


class ClipStitcher:
    """Joins clip tracks into video tracks (see the module docstring)."""

    def __init__(self, associate: ScoreFn, cfg: TrackerConfig | None = None) -> None:
        self.associate = associate
        self.cfg = cfg or TrackerConfig()
        self.spec = build_memory_spec(self.cfg)
        self.threshold = match_threshold(self.cfg)
        self.tracks: list[Track] = []
        self.covered = 0  # frames [0, covered) already processed by earlier clips

    @staticmethod
    def _extend(track: Track, clip_track: Track) -> None:
        for t in sorted(clip_track.observations):
            track.add(t, clip_track.observations[t], clip_track.frames[t])

    def _new_track(self, clip_track: Track) -> None:
        ts = sorted(clip_track.observations)
        t0 = ts[0]
        track = Track.start(
            len(self.tracks) + 1, t0, clip_track.observations[t0], clip_track.frames[t0],
            self.spec, confirmed=True,
        )  # fmt: skip
        self._extend(track, clip_track)
        self.tracks.append(track)

    @torch.no_grad()
    def add_clip(self, clip_tracks: list[Track], start: int, end: int, overlap: int) -> None:
        """Stitch the tracks of the clip covering video frames ``[start, end)``."""
        cfg = self.cfg
        clip_tracks = [ct for ct in clip_tracks if ct.observations]
        # candidates: video tracks seen recently enough to be the same object
        cands = [tr for tr in self.tracks if start - tr.last_frame <= cfg.max_missing + 1]
        # one graph holds at most max_live_tracks nodes a side (the Triton sinkhorn's limit):
        # the most recently seen candidates; clip tracks past the cap start new tracks
        cands = sorted(cands, key=lambda tr: start - tr.last_frame)[: cfg.max_live_tracks]
        joinable = clip_tracks[: cfg.max_live_tracks]
        matches: dict[int, Track] = {}
        if cands and joinable:
            for tr in cands:
                tr.memory.advance_to(start)
            nodes = [clip_node(ct, overlap) for ct in joinable]
            E = nodes[0][0].shape[-1]
            tracks = track_nodes([[tr.memory for tr in cands]], E, nodes[0][0].device)
            props = proposal_nodes(
                [torch.stack([n[0] for n in nodes])],
                [torch.stack([n[1] for n in nodes])],
                [torch.tensor([n[2] for n in nodes])],
            )
            scores = self.associate(tracks, props)[0, : len(cands), : len(joinable)]
            for r, c in accept_matches(scores, self.threshold).items():
                matches[c] = cands[r]
        for c, ct in enumerate(clip_tracks):
            if c in matches:
                self._extend(matches[c], ct)
            elif max(ct.observations) >= self.covered:
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
        tracker = OnlineTracker(
            stitcher.associate, stitcher.cfg, first_frame=start, keep_observations=True
        )
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
