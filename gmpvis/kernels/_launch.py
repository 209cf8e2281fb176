"""Kernel launches: the target architecture, the device guard, and launch recording.

Every launcher asks :func:`arch_for` which GPU it compiles for (shared memory per block and
SM count decide its tile sizes and pipeline depth) and starts its kernels through
:func:`launch`, which runs them on the CUDA device of their tensors (Triton otherwise
launches on ``torch.cuda.current_device()``).

:func:`recording` swaps both for an ahead-of-time build: inside it ``arch_for`` answers the
given architecture and ``launch`` records ``(kernel, grid, args, kwargs)`` instead of
running, so that ``benchmarks.compile_report`` compiles exactly what the launchers would
launch, from ``meta`` tensors, without a GPU.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Arch:
    """What a launcher needs to know about the GPU it targets."""

    name: str  # "sm_90", or "interpreter"
    capability: int  # 10 * major + minor (0 for the interpreter)
    smem_per_block: int  # bytes a block may opt in to
    sm_count: int

    @property
    def interpreted(self) -> bool:
        return self.capability == 0


# The architectures the project targets; the shared memory a block may opt in to
# (cudaDevAttrMaxSharedMemoryPerBlockOptin) and the SM count of one representative part
# (A100, L40S, H100 SXM).
ARCHS = {
    80: Arch("sm_80", 80, 163 * 1024, 108),
    89: Arch("sm_89", 89, 99 * 1024, 142),
    90: Arch("sm_90", 90, 227 * 1024, 132),
}
# Triton's interpreter: no shared memory limit and no SMs; launchers pick tiles that keep
# the number of interpreted programs small.
INTERPRETER = Arch("interpreter", 0, 1 << 30, 1)


@dataclass
class Launch:
    """One recorded kernel launch."""

    kernel: object  # a triton JITFunction
    grid: tuple[int, ...]
    args: tuple
    kwargs: dict = field(default_factory=dict)


_recording: tuple[Arch, list[Launch]] | None = None


def arch_for(device: torch.device) -> Arch:
    """The architecture a launch on ``device`` compiles for."""
    if _recording is not None:
        return _recording[0]
    if device.type != "cuda":
        return INTERPRETER
    props = torch.cuda.get_device_properties(device)
    return Arch(
        f"sm_{props.major}{props.minor}",
        10 * props.major + props.minor,
        props.shared_memory_per_block_optin,
        props.multi_processor_count,
    )


def launch(kernel, grid: tuple[int, ...], *args, device: torch.device, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)`` on ``device`` (its current stream), or recorded."""
    if _recording is not None:
        _recording[1].append(Launch(kernel, tuple(grid), args, kwargs))
        return
    if device.type == "cuda":
        with torch.cuda.device(device):
            kernel[grid](*args, **kwargs)
    else:
        kernel[grid](*args, **kwargs)


@contextlib.contextmanager
def recording(arch: Arch) -> Iterator[list[Launch]]:
    """Record launches (not run them) as if on ``arch``: for ahead-of-time builds."""
    global _recording
    previous = _recording
    launches: list[Launch] = []
    _recording = (arch, launches)
    try:
        yield launches
    finally:
        _recording = previous


def alert_nondeterministic(op: str, why: str) -> None:
    """Under ``torch.use_deterministic_algorithms(True)`` do what torch does for its own
    nondeterministic ops: raise a RuntimeError naming the op, or (``warn_only=True``) warn.

    For a backward without a deterministic variant (torch has no public hook for this).
    """
    if not torch.are_deterministic_algorithms_enabled():
        return
    message = (
        f"{op} has no deterministic implementation ({why}) but "
        "torch.use_deterministic_algorithms(True) is set; run it with "
        "GMPVIS_KERNELS=torch (whose CPU reference is deterministic), disable determinism "
        "for this step, or pass warn_only=True"
    )
    if torch.is_deterministic_algorithms_warn_only_enabled():
        warnings.warn(message, UserWarning, stacklevel=3)
    else:
        raise RuntimeError(message)
