"""The per-frame model step with the latency options: autocast, torch.compile, CUDA graphs.

:class:`Stepper` calls ``model.step(frame, pad_mask, state)`` (backbone, encoder with the
rolling temporal memory, decoder, segmentation head) under the chosen options. It leaves the
model as it finds it: :func:`prepare_model` is the one place that moves a model to its
device, puts it in eval mode and converts it to channels-last, and the caller calls it.

CUDA graphs: ``torch.compile(mode="reduce-overhead")`` when compiling, else a hand-captured
``torch.cuda.CUDAGraph`` per input signature (:class:`CudaGraphStep`). The step never
synchronises with the device; results leave the GPU only in the tracker.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gmpvis.runtime import amp_dtype, autocast

StepFn = Callable[[torch.Tensor, torch.Tensor | None, list | None], tuple[dict, list | None]]


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool = False) -> nn.Module:
    """``model`` in eval mode on ``device`` (in place, returned), channels-last if asked."""
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


class CudaGraphStep:
    """Replays a captured CUDA graph of ``step(frame, pad_mask, state)`` per input signature.

    The first frames of a video (memory still filling, so the state grows) run eagerly; once
    a signature (frame shape + state shapes) repeats, the step is captured with static input
    buffers and replayed from then on: one graph launch per frame instead of hundreds of
    kernel launches. Outputs live in the graph's static buffers and are valid until the next
    call, which is all the tracker needs (it copies what it keeps).
    """

    def __init__(self, step: StepFn, device: torch.device, amp: str) -> None:
        self.step, self.device, self.amp = step, device, amp
        self.graphs: dict[tuple, tuple] = {}
        self.last_key: tuple | None = None

    def _autocast(self):
        return autocast(self.device, self.amp, cache_enabled=False)

    def _capture(self, frame, state):
        static_frame = frame.clone()
        static_state = [s.clone() for s in state] if state is not None else None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), self._autocast():
            for _ in range(2):  # warm-up: lazy init, Triton compilation, cuBLAS workspaces
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
                "infer.cuda_graphs, or with infer.compile as well (torch.compile's own graphs)"
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
    """``model.step`` under the latency options; ``stepper(frame, state) -> (outputs,
    state)``. The model must already be prepared (:func:`prepare_model`) for ``device``."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        *,
        amp: str = "off",
        compile: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        amp_dtype(amp)  # validates the name
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device (got device {str(device)!r})")
        if model.training:
            raise ValueError("Stepper: the model is in training mode (call prepare_model)")
        param = next(model.parameters(), None)
        if param is not None and param.device != device:
            raise ValueError(
                f"Stepper: the model is on {param.device}, the step on {device} "
                "(call prepare_model)"
            )
        self.model, self.device, self.amp = model, device, amp
        self.compiled_graphs = compile and cuda_graphs
        step: StepFn = model.step
        if compile:
            # reduce-overhead = torch.compile's own CUDA graphs (static buffers, replay)
            mode = "reduce-overhead" if cuda_graphs else None
            step = torch.compile(model.step, mode=mode, dynamic=False)
        self.graph_step = CudaGraphStep(step, device, amp) if cuda_graphs and not compile else None
        self.step = step

    def clip(self, frames: torch.Tensor) -> dict:
        """Clip mode (offline): ``frames [1, T, 3, h, w]`` through ``model(...)`` under the
        same autocast; the temporal layer aggregates over the whole clip."""
        with autocast(self.device, self.amp):
            return self.model(frames)

    def __call__(self, frame: torch.Tensor, state):
        if self.graph_step is not None:
            return self.graph_step(frame, None, state)
        if self.compiled_graphs:
            # a new iteration: torch.compile's graphs may now overwrite the last outputs, so
            # the memory state (one of them, [B, K-1, M, D]: tiny) is copied out first
            state = [s.clone() for s in state] if state is not None else None
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, self.amp):
            return self.step(frame, None, state)
