"""Online inference: one frame at a time through the model step and the tracker.

Per frame: the uint8 frame goes to the device (pinned, non-blocking), is normalised and
resized there, and the :class:`~gmpvis.infer.stepper.Stepper` runs backbone + encoder with
the rolling temporal memory (the last ``K - 1`` frames only), decoder and segmentation head.
The frame's outputs become :class:`~gmpvis.infer.frames.FrameProposals` and go to the
tracker, which RLE-encodes the kept masks at once. Nothing per frame is kept besides the
compact RLEs and two floats of timing, so memory is flat however long the video is.

:func:`track_outputs` is the one loop from model outputs to the tracker: online inference,
the offline driver's clips and the experiments (on cached outputs) all run through it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from gmpvis.infer.frames import FrameOutput, FramePreprocessor, proposals
from gmpvis.infer.stepper import Stepper
from gmpvis.infer.timing import LatencyStats, ModelTimer
from gmpvis.infer.tracker import OnlineTracker
from gmpvis.model.gmpvis_model import OUTPUT_KEYS


def track_outputs(
    tracker: OnlineTracker,
    outputs: Iterable[FrameOutput],
    orig_hw: tuple[int, int],
    stats: LatencyStats | None = None,
) -> int:
    """Feed every frame's outputs to ``tracker`` in order; returns the frames seen.

    With ``stats``, each frame's total time (producing its outputs, which for a generator
    includes reading and the model step, plus tracking) is appended to ``stats.total_ms``."""
    n = 0
    t_frame = time.perf_counter()
    for frame in outputs:
        tracker.step(proposals(frame, orig_hw))
        if stats is not None:
            now = time.perf_counter()
            stats.total_ms.append((now - t_frame) * 1e3)
            t_frame = now
        n += 1
    return n


def frame_outputs(
    stepper: Stepper,
    frames: Iterable[np.ndarray],
    preprocess: FramePreprocessor,
    timer: ModelTimer | None = None,
) -> Iterator[FrameOutput]:
    """uint8 ``[H, W, 3]`` frames -> per-frame model outputs, the temporal memory carried
    from frame to frame (``timer`` measures each model step)."""
    state = None
    for frame in frames:
        x = preprocess(frame)
        if timer is None:
            out, state = stepper(x, state)
        else:
            with timer.time():
                out, state = stepper(x, state)
        yield FrameOutput({k: out[k][0] for k in OUTPUT_KEYS}, tuple(x.shape[-2:]))


@torch.no_grad()
def track_online(
    stepper: Stepper,
    frames: Iterable[np.ndarray],
    orig_hw: tuple[int, int],
    preprocess: FramePreprocessor,
    tracker: OnlineTracker,
) -> tuple[LatencyStats, int]:
    """Online tracking of uint8 frames into ``tracker`` -> (latency, frames read)."""
    timer = ModelTimer(stepper.device)
    stats = LatencyStats()
    n = track_outputs(tracker, frame_outputs(stepper, frames, preprocess, timer), orig_hw, stats)
    stats.model_ms = timer.collect()
    return stats, n
