"""Per-frame latency: model time without synchronising the device, and summaries."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


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


class ModelTimer:
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
