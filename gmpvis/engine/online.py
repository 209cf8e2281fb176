"""Low-latency online inference: one frame at a time through ``model.step`` and the tracker.

Per frame: the uint8 frame goes to the device (pinned, non-blocking), is normalised and
resized there, and ``model.step`` runs backbone + encoder with the rolling temporal memory
(the last ``K - 1`` frames only), decoder and segmentation head. The frame's proposals then go
to :class:`OnlineTracker`, which associates them to live tracks with the model's graph
matching head and RLE-encodes the kept masks at once. Nothing per frame is kept besides the
compact RLEs and two floats of timing, so memory is flat however long the video is.

Latency options (:class:`RunOptions`): autocast (``bf16``/``fp16``), ``torch.compile``,
CUDA graphs for the per-frame step (``torch.compile(mode="reduce-overhead")`` when compiling,
else a hand-captured ``torch.cuda.CUDAGraph`` per input shape), and channels-last. The loop
itself never synchronises with the device: model time is measured with CUDA events read
once the video is done; the only synchronisations are where results leave the GPU (the
tracker's selection, Hungarian read-out and mask encoding).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gmpvis.config import Config
from gmpvis.data.inputs import VideoSource
from gmpvis.data.transforms import IMAGENET_MEAN, IMAGENET_STD, resized_hw
from gmpvis.engine.tracker import FrameProposals, OnlineTracker, TrackerConfig
from gmpvis.engine.video_inference import mask_decoder

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "off": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


class FrameReadError(ValueError):
    """A frame of a video that cannot be read or decoded; the message names its index."""


@dataclass
class RunOptions:
    """How the per-frame step runs. ``device="auto"`` picks CUDA when available."""

    device: str = "auto"
    amp: str = "off"  # off | bf16 | fp16
    compile: bool = False
    cuda_graphs: bool = False  # CUDA only: replay a captured graph of model.step per shape
    channels_last: bool = False

    def resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r}: CUDA is not available on this machine")
        return dev

    def validate(self) -> RunOptions:
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp: expected one of {sorted(AMP_DTYPES)}, got {self.amp!r}")
        if self.cuda_graphs and self.resolve_device().type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device (got device {self.device!r})")
        return self


# --------------------------------------------------------------------------- latency
@dataclass
class LatencyStats:
    """Per-frame model time (``model.step`` only) and total time (read, preprocess, step,
    tracking, mask encoding), in milliseconds."""

    model_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)

    def extend(self, other: LatencyStats) -> None:
        self.model_ms.extend(other.model_ms)
        self.total_ms.extend(other.total_ms)

    @staticmethod
    def _pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0]
        # statistics.quantiles with n=100 gives the 1st..99th percentiles (inclusive method)
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]

    def summary(self, skip: int = 0) -> dict[str, float]:
        """p50/p90 per frame and FPS (frames / summed time), the first ``skip`` frames
        (warm-up, compilation, graph capture) left out when there are more."""
        m = self.model_ms[skip:] if len(self.model_ms) > skip else self.model_ms
        t = self.total_ms[skip:] if len(self.total_ms) > skip else self.total_ms
        return {
            "frames": len(self.total_ms),
            "model_p50_ms": self._pct(m, 50),
            "model_p90_ms": self._pct(m, 90),
            "total_p50_ms": self._pct(t, 50),
            "total_p90_ms": self._pct(t, 90),
            "model_fps": 1000.0 * len(m) / sum(m) if m and sum(m) > 0 else float("nan"),
            "fps": 1000.0 * len(t) / sum(t) if t and sum(t) > 0 else float("nan"),
        }

    def format(self, skip: int = 0) -> str:
        s = self.summary(skip)
        return (
            f"{s['frames']} frames | model p50 {s['model_p50_ms']:.1f} ms p90 "
            f"{s['model_p90_ms']:.1f} ms ({s['model_fps']:.1f} FPS) | total p50 "
            f"{s['total_p50_ms']:.1f} ms p90 {s['total_p90_ms']:.1f} ms ({s['fps']:.1f} FPS)"
        )


class _ModelTimer:
    """Model time per frame without synchronising: CUDA events, read once finished."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.done: list[float] = []

    @contextlib.contextmanager
    def time(self) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.pending.append((start, end))
            # read finished pairs (query() does not block) so events do not pile up
            while self.pending and self.pending[0][1].query():
                s, e = self.pending.pop(0)
                self.done.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            yield
            self.done.append((time.perf_counter() - t0) * 1e3)

    def collect(self) -> list[float]:
        if self.pending:
            self.pending[-1][1].synchronize()
            self.done.extend(s.elapsed_time(e) for s, e in self.pending)
            self.pending.clear()
        return self.done


# --------------------------------------------------------------------------- frames
class FramePreprocessor:
    """uint8 ``[H, W, 3]`` -> normalised ``[1, 3, h, w]`` on the device at the evaluation
    size (short side ``max(cfg.data.scales)``, long side at most ``cfg.data.max_size``).

    Normalising before or after the bilinear resize is the same map (both are affine per
    channel and the bilinear weights sum to 1), so this matches the evaluation transforms.
    """

    def __init__(self, cfg: Config, device: torch.device, channels_last: bool = False) -> None:
        self.short, self.max_size = max(cfg.data.scales), cfg.data.max_size
        self.device, self.channels_last = device, channels_last
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frame))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1)[None].float()
        x = (x - self.mean) / self.std
        h, w = frame.shape[:2]
        hw = resized_hw(h, w, self.short, self.max_size)
        if hw != (h, w):
            # antialiased, as the training / evaluation transforms resize
            x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()


def checked_frames(source: VideoSource) -> Iterator[np.ndarray]:
    """The source's frames; a frame that fails to read or has the wrong size raises
    :class:`FrameReadError` naming the video and the frame index."""
    it = iter(source.frames())
    t = 0
    while True:
        try:
            frame = next(it)
        except StopIteration:
            return
        except Exception as err:
            raise FrameReadError(
                f"video {source.name!r} (id {source.video_id}): frame {t} cannot be read: {err}"
            ) from err
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise FrameReadError(
                f"video {source.name!r} (id {source.video_id}): frame {t} is "
                f"{frame.dtype} {list(frame.shape)}, expected uint8 [H, W, 3]"
            )
        if frame.shape[:2] != (source.height, source.width):
            raise FrameReadError(
                f"video {source.name!r} (id {source.video_id}): frame {t} is "
                f"{frame.shape[0]}x{frame.shape[1]}, expected {source.height}x{source.width}"
            )
        yield frame
        t += 1


# --------------------------------------------------------------------------- step
StepFn = Callable[[torch.Tensor, torch.Tensor | None, list | None], tuple[dict, list | None]]


class CudaGraphStep:
    """Replays a captured CUDA graph of ``step(frame, pad_mask, state)`` per input signature.

    The first frames of a video (memory still filling, so the state grows) run eagerly; once
    a signature (frame shape + state shapes) repeats, the step is captured with static input
    buffers and replayed from then on: one graph launch per frame instead of hundreds of
    kernel launches. Outputs live in the graph's static buffers and are valid until the next
    call, which is all the tracker needs (it copies what it keeps).
    """

    def __init__(self, step: StepFn, autocast_dtype: torch.dtype | None) -> None:
        self.step, self.dtype = step, autocast_dtype
        self.graphs: dict[tuple, tuple] = {}
        self.last_key: tuple | None = None

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        # the autocast weight cache must be off under capture (cached casts would be freed)
        return torch.autocast("cuda", dtype=self.dtype, cache_enabled=False)

    def _capture(self, frame, state):
        static_frame = frame.clone()
        static_state = [s.clone() for s in state] if state is not None else None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), self._autocast():
            for _ in range(2):  # warm-up: lazy init, Triton autotune, cuBLAS workspaces
                self.step(static_frame, None, static_state)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph), self._autocast():
                out, new_state = self.step(static_frame, None, static_state)
        except RuntimeError as err:
            # e.g. a host->device copy or .item() inside the step: not capturable
            raise RuntimeError(
                "CUDA graph capture of model.step failed (the step must not synchronise "
                f"with the host or copy from pageable memory): {err}; run without "
                "--cuda-graphs, or with --compile --cuda-graphs (torch.compile's own graphs)"
            ) from err
        return graph, static_frame, static_state, out, new_state

    def __call__(self, frame, pad_mask, state):
        if pad_mask is not None and bool(pad_mask.any()):
            raise ValueError("CudaGraphStep: padded frames are not supported (one video)")
        key = (
            tuple(frame.shape),
            frame.stride(),
            None if state is None else tuple(tuple(s.shape) for s in state),
        )
        if key not in self.graphs and key != self.last_key:
            self.last_key = key
            with self._autocast():
                return self.step(frame, None, state)
        if key not in self.graphs:
            self.graphs[key] = self._capture(frame, state)
        graph, static_frame, static_state, out, new_state = self.graphs[key]
        static_frame.copy_(frame)
        if state is not None:
            for dst, src in zip(static_state, state, strict=True):
                dst.copy_(src)
        graph.replay()
        return out, new_state


class Stepper:
    """``model.step`` with the chosen latency options (see :class:`RunOptions`). Puts the
    model in eval mode on the device (in place)."""

    def __init__(self, model: nn.Module, opts: RunOptions) -> None:
        self.opts = opts.validate()
        self.device = opts.resolve_device()
        self.amp_dtype = AMP_DTYPES[opts.amp]
        model.eval().to(self.device)
        if opts.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        step: StepFn = model.step
        if opts.compile:
            # reduce-overhead = torch.compile's own CUDA graphs (static buffers, replay)
            mode = "reduce-overhead" if opts.cuda_graphs else None
            step = torch.compile(model.step, mode=mode, dynamic=False)
        self.graph_step = (
            CudaGraphStep(step, self.amp_dtype) if opts.cuda_graphs and not opts.compile else None
        )
        self.step = step

    def autocast(self):
        if self.amp_dtype is None or self.graph_step is not None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def __call__(self, frame: torch.Tensor, state):
        if self.graph_step is not None:
            return self.graph_step(frame, None, state)
        if self.opts.compile and self.opts.cuda_graphs:
            # a new iteration: torch.compile's graphs may now overwrite the last outputs, so
            # the memory state (one of them, [B, K-1, M, D]: tiny) is copied out first
            state = [s.clone() for s in state] if state is not None else None
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast():
            return self.step(frame, None, state)


def build_stepper(model: nn.Module, opts: RunOptions | None = None) -> Stepper:
    return Stepper(model, opts or RunOptions())


# --------------------------------------------------------------------------- video loop
@dataclass
class VideoRun:
    """One video's tracks and timings. ``num_frames``: frames actually read."""

    source: VideoSource
    tracker: OnlineTracker
    stats: LatencyStats
    num_frames: int

    def results(self, category_ids: list[int]) -> list[dict]:
        return self.tracker.results(self.source.video_id, self.num_frames, category_ids)


@torch.no_grad()
def track_frames(
    stepper: Stepper,
    frames: Iterable[np.ndarray],
    orig_hw: tuple[int, int],
    cfg: Config,
    tracker_cfg: TrackerConfig | None = None,
) -> tuple[OnlineTracker, LatencyStats, int]:
    """Online tracking of uint8 ``[H, W, 3]`` frames -> (tracker, latency, frames read)."""
    model = stepper.model
    pre = FramePreprocessor(cfg, stepper.device, stepper.opts.channels_last)
    tracker = OnlineTracker(model.associate, tracker_cfg)
    timer = _ModelTimer(stepper.device)
    stats = LatencyStats()
    state = None
    n = 0
    t_frame = time.perf_counter()
    for frame in frames:
        x = pre(frame)
        with timer.time():
            out, state = stepper(x, state)
        with stepper.autocast():  # the GM head matches the model's precision
            tracker.step(
                FrameProposals(
                    logits=out["pred_logits"][0],
                    boxes=out["pred_boxes"][0],
                    embeds=out["pred_embeds"][0],
                    mask_fn=mask_decoder(out["pred_masks"][0], tuple(x.shape[-2:]), orig_hw),
                )
            )
        now = time.perf_counter()
        stats.total_ms.append((now - t_frame) * 1e3)
        t_frame = now
        n += 1
    stats.model_ms = timer.collect()
    return tracker, stats, n


def run_video(
    stepper: Stepper, source: VideoSource, cfg: Config, tracker_cfg: TrackerConfig | None = None
) -> VideoRun:
    """Track one :class:`VideoSource` online."""
    tracker, stats, n = track_frames(
        stepper, checked_frames(source), (source.height, source.width), cfg, tracker_cfg
    )
    if n == 0:
        raise FrameReadError(f"video {source.name!r} (id {source.video_id}): no frames decoded")
    return VideoRun(source, tracker, stats, n)
