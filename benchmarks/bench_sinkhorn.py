"""sinkhorn benchmark: reference, torch.compile of it, and the Triton kernel.

Providers:
  torch          ``reference.sinkhorn``: ~12 small kernels per half step, so launch-bound.
  torch.compile  the same reference through ``torch.compile`` (the loop unrolls into the
                 graph: compile time grows with ``iters``, so the sweep keeps it for
                 ``iters <= 10`` only and says so in the notes).
  triton         the public op with the Triton backend: one program per batch element keeps
                 the whole matrix on chip for every iteration (one launch forward, one backward).

Group "model": the issue's target case, ``B=64, 64x64, 50 iterations`` (target: triton
>= 20x the reference on an H100), and the graph-matching head's call (config defaults:
100 queries + dustbin, variable sizes by masks, tau = 0.1, 10 iterations, 4 frame pairs of
2 clips). Group "sweep": n in 16..128, iters in 10..100 at B = 64.
On a CPU every shape is scaled down (said in the label) and torch.compile runs for one case
only, so that the reference providers finish in well under a minute; Triton rows need a GPU.
"""

from __future__ import annotations

import functools

import torch

from benchmarks._harness import Case, tensor_bytes
from gmpvis.kernels import reference, sinkhorn, use_backend

OP = "sinkhorn"
COMPILE_MAX_ITERS = 10  # torch.compile unrolls the loop: beyond this, compile time dominates


def make_inputs_fn(
    B: int,
    n1: int,
    n2: int,
    iters: int,
    *,
    tau: float = 1.0,
    dustbin: float | None = None,
    masked: bool = False,
):
    """Scores ``[B, n1, n2]`` (unit normal, requires grad); with ``masked`` the second half
    of the batch keeps only ~3/4 of its rows and columns (variable graph sizes)."""

    def make(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
        g = torch.Generator().manual_seed(0)
        scores = torch.randn(B, n1, n2, generator=g)
        row_mask = col_mask = None
        if masked:
            row_mask = torch.ones(B, n1, dtype=torch.bool)
            col_mask = torch.ones(B, n2, dtype=torch.bool)
            row_mask[B // 2 :, (3 * n1 + 3) // 4 :] = False
            col_mask[B // 2 :, (3 * n2 + 3) // 4 :] = False
            row_mask, col_mask = row_mask.to(device), col_mask.to(device)
        return {
            "scores": scores.to(device=device, dtype=dtype).requires_grad_(True),
            "iters": iters,
            "tau": tau,
            "row_mask": row_mask,
            "col_mask": col_mask,
            "dustbin": dustbin,
        }

    return make


def torch_provider(scores, iters, **kw) -> torch.Tensor:
    return reference.sinkhorn(scores, iters, **kw)


@functools.cache
def _compiled():
    return torch.compile(reference.sinkhorn)


def compile_provider(scores, iters, **kw) -> torch.Tensor:
    return _compiled()(scores, iters, **kw)


def triton_provider(scores, iters, **kw) -> torch.Tensor:
    with use_backend("triton"):
        return sinkhorn(scores, iters, **kw)


def min_bytes(inputs: dict, out: torch.Tensor) -> int:
    """Scores and masks read once, probabilities written once (the iterations stay on chip)."""
    return tensor_bytes(inputs["scores"], inputs["row_mask"], inputs["col_mask"], out)


def _case(
    group: str, B: int, n1: int, n2: int, iters: int, label: str, *, compile_: bool, **kw
) -> Case:
    providers = {"torch": torch_provider}
    notes = {}
    if compile_:
        providers["torch.compile"] = compile_provider
    else:
        notes["torch.compile"] = (
            "omitted: the loop unrolls into the graph, compile time grows with iters "
            f"(GPU: model group and iters <= {COMPILE_MAX_ITERS}; CPU: first case only)"
        )
    providers["triton"] = triton_provider
    extra = " +dustbin" if kw.get("dustbin") is not None else ""
    extra += " masked" if kw.get("masked") else ""
    shape = f"B={B} n1={n1} n2={n2} iters={iters}{extra}{label}"
    return Case(
        op=OP,
        shape=shape,
        make_inputs=make_inputs_fn(B, n1, n2, iters, **kw),
        providers=providers,
        group=group,
        dtypes=(torch.float32, torch.float16),
        notes=notes,
        min_bytes=min_bytes,
    )


def cases(device: torch.device) -> list[Case]:
    """Model and sweep cases; scaled down on a CPU (the label says so)."""
    if device.type != "cuda":
        label = " (CPU-scaled)"
        model = [
            _case("model", 4, 16, 16, 10, label, compile_=True),
            _case("model", 2, 24, 24, 5, label, compile_=False, tau=0.1, dustbin=0.0, masked=True),
        ]
        sweep = [_case("sweep", 4, n, n, 5, label, compile_=False) for n in (8, 32)]
        return model + sweep
    model = [
        _case("model", 64, 64, 64, 50, "", compile_=True),  # the target case
        _case(
            "model", 8, 100, 100, 10, " (GM head)", compile_=True, tau=0.1, dustbin=0.0, masked=True
        ),
    ]
    sweep = [
        _case("sweep", 64, n, n, it, "", compile_=it <= COMPILE_MAX_ITERS)
        for n in (16, 32, 64, 128)
        for it in (10, 50, 100)
    ]
    return model + sweep
