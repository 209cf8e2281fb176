"""Batched log-domain Sinkhorn normalisation: Triton kernels, torch.library op, public function.

Semantics are those of :func:`gmpvis.kernels.reference.sinkhorn`: ``x = min(scores / tau,
1e30)``, masked entries ``-inf``, an optional dustbin row and column with SuperGlue's
marginals, then ``iters`` rounds of ``x = x - lse_row(x) + log mu; x = x - lse_col(x) + log nu``
and ``P = exp(x)``.

Kernel design: one program per batch element keeps its whole ``R x C`` matrix
(``R = n1 [+1]``, ``C = n2 [+1]``, padded to powers of two and masked) in registers for
every iteration, so a call reads the scores once and writes the probabilities once.
``R`` and ``C`` are limited to :data:`MAX_SIDE` (128); larger problems raise a ValueError
on the Triton backend (never a silent fallback).

Backward (exact for the unrolled iterations, not implicit differentiation): the backward
kernel first re-runs the forward iterations, storing the shift ``c = lse - log mu`` of every
half step ``x' = (x - lse) + log mu`` (``iters * (R + C)`` floats per batch element, a small
global scratch), then walks the iterations in reverse, entirely on chip. A half step has
the vector-Jacobian product ``g_x = g' - softmax(x) * rowsum(g')``, with
``softmax(x) = softmax(x') = exp(x') / rowsum(exp(x'))`` (``exp(x' - log mu)`` alone sums
to 1 only up to rounding, and not at all when float32 absorbs ``log n`` into a huge lse);
the previous iterate is rebuilt as ``x = x' + c``. Recomputing the forward instead of
saving its state keeps the forward op a plain ``scores -> P`` op (one output, as the
reference) at the price of one extra forward pass in the backward.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from gmpvis.kernels import reference
from gmpvis.kernels._amp import cast_float32
from gmpvis.kernels._backend import autograd_enabled, resolve
from gmpvis.kernels._checks import check_tensor
from gmpvis.kernels._launch import Arch, arch_for, launch

MAX_SIDE = 128  # largest R (= n1 [+1]) and C (= n2 [+1]) one program holds on chip
TILE_PER_THREAD = 16  # tile elements per thread (see _config)
_CAP = 1e30  # reference._LOGIT_CAP: +inf and overflowing logits are clamped here
_TINY = 1.1754943508222875e-38  # float32 tiny: log(tiny) is the lse of an all -inf slice
CAP: tl.constexpr = tl.constexpr(_CAP)  # the same two, as kernel constants
TINY: tl.constexpr = tl.constexpr(_TINY)


# --- Triton kernels


@triton.jit
def _real(RM, CM, b, n1, n2, HAS_RM: tl.constexpr, HAS_CM: tl.constexpr,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """Real rows ``[BLOCK_M]`` and columns ``[BLOCK_N]``: inside the scores and unmasked."""
    offs_i = tl.arange(0, BLOCK_M)
    offs_j = tl.arange(0, BLOCK_N)
    real_i = offs_i < n1
    real_j = offs_j < n2
    if HAS_RM:
        real_i = real_i & (tl.load(RM + b * n1 + offs_i, mask=offs_i < n1, other=0) != 0)
    if HAS_CM:
        real_j = real_j & (tl.load(CM + b * n2 + offs_j, mask=offs_j < n2, other=0) != 0)
    return real_i, real_j


@triton.jit
def _load_problem(
    S, RM, CM, b, n1, n2, ld, tau, bin_logit,
    HAS_RM: tl.constexpr, HAS_CM: tl.constexpr, HAS_BIN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """The initial ``[BLOCK_M, BLOCK_N]`` logits and the dustbin's log masses.

    ``S`` has rows of ``ld`` (a multiple of 16) elements: the column mask ``j < ld`` then
    has 16-wide constancy, so Triton vectorises the loads and spreads the tile over the
    warps in 4 x 4 blocks per thread (with rows of ``n2`` every thread held a column strip
    and every row vector took one register per row of the strip).
    """
    offs_i = tl.arange(0, BLOCK_M)
    offs_j = tl.arange(0, BLOCK_N)
    real_i, real_j = _real(RM, CM, b, n1, n2, HAS_RM, HAS_CM, BLOCK_M, BLOCK_N)
    real = real_i[:, None] & real_j[None, :]
    ptrs = S + b * n1 * ld + offs_i[:, None] * ld + offs_j[None, :]
    s = tl.load(ptrs, mask=(offs_i < n1)[:, None] & (offs_j < ld)[None, :], other=0.0)
    s = tl.where(real, s.to(tl.float32), float("-inf"))
    x = s / tau
    x = tl.where(x > CAP, CAP, x)  # min(x, cap) that keeps NaN (tl.minimum may drop it)
    log_n = 0.0
    log_m = 0.0
    if HAS_BIN:
        # SuperGlue marginals: the dustbin row holds mass n (real columns), the dustbin
        # column mass m (real rows); each real row / column holds mass 1.
        m = tl.sum(real_i.to(tl.float32), axis=0)
        n = tl.sum(real_j.to(tl.float32), axis=0)
        bin_i = offs_i == n1
        bin_j = offs_j == n2
        live = (real_i | bin_i)[:, None] & (real_j | bin_j)[None, :]
        on_bin = live & (bin_i[:, None] | bin_j[None, :])
        x = tl.where(on_bin, bin_logit, x)
        log_n = tl.log(tl.maximum(n, 1.0))
        log_m = tl.log(tl.maximum(m, 1.0))
    return x, log_n, log_m


@triton.jit
def _lse(x, AXIS: tl.constexpr):
    """Safe logsumexp along ``AXIS``: an all ``-inf`` slice gives ``log(tiny)``, not NaN."""
    peak = tl.max(x, axis=AXIS)
    peak = tl.where(peak == float("-inf"), 0.0, peak)
    if AXIS == 1:
        total = tl.sum(tl.exp(x - peak[:, None]), axis=1)
    else:
        total = tl.sum(tl.exp(x - peak[None, :]), axis=0)
    # propagate_nan: a NaN logit must reach the output (plain max.f32 drops NaN)
    return peak + tl.log(tl.maximum(total, TINY, propagate_nan=tl.PropagateNan.ALL))


@triton.jit
def _iterate(
    x, n1, n2, log_n, log_m, LSE, iters,
    HAS_BIN: tl.constexpr, SAVE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """``iters`` Sinkhorn rounds on the register tile; with SAVE, the shifts go to LSE
    (this batch element's ``[iters, BLOCK_M + BLOCK_N]`` scratch).

    A half step is ``x = (x - lse(x)) + log mu``, in the reference's order: with a huge
    ``lse`` float32 absorbs ``log mu`` in ``lse - log mu``, not in ``(x - lse) + log mu``.
    The backward reads the shift ``c = lse - log mu`` (``x = x' + c`` rebuilds the iterate).
    ``log mu`` is 0 on real rows and ``log_n`` on the dustbin row ``n1`` (``log nu``
    likewise): rebuilt from the row index each step, not held as a vector in registers.
    """
    offs_i = tl.arange(0, BLOCK_M)
    offs_j = tl.arange(0, BLOCK_N)
    for t in range(iters):
        lse_r = _lse(x, 1)
        x = x - lse_r[:, None]
        if HAS_BIN:  # log mu = log nu = 0 without a dustbin
            x = tl.where(offs_i[:, None] == n1, x + log_n, x)
        lse_c = _lse(x, 0)
        x = x - lse_c[None, :]
        if HAS_BIN:
            x = tl.where(offs_j[None, :] == n2, x + log_m, x)
        if SAVE:
            base = LSE + t * (BLOCK_M + BLOCK_N)
            tl.store(base + offs_i, tl.where(offs_i == n1, lse_r - log_n, lse_r))
            tl.store(base + BLOCK_M + offs_j, tl.where(offs_j == n2, lse_c - log_m, lse_c))
    return x


@triton.jit
def _sinkhorn_fwd_kernel(
    S, RM, CM, P, n1, n2, ld, tau, bin_logit, iters,
    HAS_RM: tl.constexpr, HAS_CM: tl.constexpr, HAS_BIN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One program per batch element: ``P[b] = exp(x)`` after ``iters`` rounds."""
    b = tl.program_id(0)
    x, log_n, log_m = _load_problem(
        S, RM, CM, b, n1, n2, ld, tau, bin_logit, HAS_RM, HAS_CM, HAS_BIN, BLOCK_M, BLOCK_N
    )
    x = _iterate(x, n1, n2, log_n, log_m, S, iters, HAS_BIN, False, BLOCK_M, BLOCK_N)
    R = n1 + 1 if HAS_BIN else n1
    C = n2 + 1 if HAS_BIN else n2
    offs_i = tl.arange(0, BLOCK_M)
    offs_j = tl.arange(0, BLOCK_N)
    inside = (offs_i < R)[:, None] & (offs_j < C)[None, :]
    ptrs = P + b * R * C + offs_i[:, None] * C + offs_j[None, :]
    tl.store(ptrs, tl.exp(x).to(P.dtype.element_ty), mask=inside)


@triton.jit
def _sinkhorn_bwd_kernel(
    G, S, RM, CM, LSE, DS, n1, n2, ld, tau, bin_logit, iters,
    HAS_RM: tl.constexpr, HAS_CM: tl.constexpr, HAS_BIN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Recompute the forward (saving the shifts), then reverse the iterations: ``DS = dL/dS``."""
    b = tl.program_id(0)
    x, log_n, log_m = _load_problem(
        S, RM, CM, b, n1, n2, ld, tau, bin_logit, HAS_RM, HAS_CM, HAS_BIN, BLOCK_M, BLOCK_N
    )
    LSE += b.to(tl.int64) * iters * (BLOCK_M + BLOCK_N)  # int64: B * iters * 256 may pass 2**31
    x = _iterate(x, n1, n2, log_n, log_m, LSE, iters, HAS_BIN, True, BLOCK_M, BLOCK_N)
    tl.debug_barrier()  # the shifts stored above are read back below
    R = n1 + 1 if HAS_BIN else n1
    C = n2 + 1 if HAS_BIN else n2
    offs_i = tl.arange(0, BLOCK_M)
    offs_j = tl.arange(0, BLOCK_N)
    inside = (offs_i < R)[:, None] & (offs_j < C)[None, :]
    go = tl.load(G + b * R * C + offs_i[:, None] * C + offs_j[None, :], mask=inside, other=0.0)
    g = go.to(tl.float32) * tl.exp(x)  # d exp(x) / dx = exp(x)
    for k in range(iters):
        t = iters - 1 - k
        base = LSE + t * (BLOCK_M + BLOCK_N)
        # column half step x' = x - c: its VJP is g - softmax_col(x) * colsum(g), and
        # softmax_col(x) = softmax_col(x') (a shift per column) = exp(x') / colsum(exp(x')).
        # exp(x') cannot overflow: x' <= log nu <= log(MAX_SIDE) after a column step.
        # (exp(x) is evaluated twice rather than kept: one tile less in registers)
        scale = tl.sum(g, axis=0) / tl.maximum(
            tl.sum(tl.exp(x), axis=0), TINY, propagate_nan=tl.PropagateNan.ALL
        )
        g = g - tl.exp(x) * scale[None, :]
        x = x + tl.load(base + BLOCK_M + offs_j)[None, :]  # the iterate before the step
        # row half step, the same along the other axis (x' <= log mu after a row step)
        scale = tl.sum(g, axis=1) / tl.maximum(
            tl.sum(tl.exp(x), axis=1), TINY, propagate_nan=tl.PropagateNan.ALL
        )
        g = g - tl.exp(x) * scale[:, None]
        x = x + tl.load(base + offs_i)[:, None]
    # x = min(scores / tau, cap): the clamp passes the gradient only below the cap
    real_i, real_j = _real(RM, CM, b, n1, n2, HAS_RM, HAS_CM, BLOCK_M, BLOCK_N)
    real = real_i[:, None] & real_j[None, :]
    s_ptrs = S + b * n1 * ld + offs_i[:, None] * ld + offs_j[None, :]
    s = tl.load(s_ptrs, mask=(offs_i < n1)[:, None] & (offs_j < ld)[None, :], other=0.0)
    ds = tl.where(real & (s.to(tl.float32) / tau < CAP), g / tau, 0.0)
    in_scores = (offs_i < n1)[:, None] & (offs_j < n2)[None, :]
    ds_ptrs = DS + b * n1 * n2 + offs_i[:, None] * n2 + offs_j[None, :]
    tl.store(ds_ptrs, ds.to(DS.dtype.element_ty), mask=in_scores)


# --- launchers


def _config(n1: int, n2: int, has_bin: bool, arch: Arch) -> dict:
    """Power-of-two tile sides and a warp count for an ``R x C`` problem on ``arch``.

    The tile lives in registers (shared memory holds only the reductions' scratch): up to
    32 warps, each thread holds at most ``TILE_PER_THREAD`` elements of it (a 4 x 4 block
    at 128 x 128), so that the forward's ``x`` and its row and column vectors stay within
    the 64 registers a thread has at 32 warps; the backward also holds ``g``.
    The size depends on nothing architecture-specific: every arch from sm_80 on has
    65536 registers per SM.
    """
    R, C = n1 + has_bin, n2 + has_bin
    if R > MAX_SIDE or C > MAX_SIDE:
        raise ValueError(
            f"sinkhorn: the Triton kernel holds the whole (n1{' + 1' if has_bin else ''}) x "
            f"(n2{' + 1' if has_bin else ''}) matrix on chip, at most {MAX_SIDE} per side; "
            f"got {R} x {C} (use GMPVIS_KERNELS=torch for larger problems)"
        )
    block_m = triton.next_power_of_2(max(R, 1))
    block_n = triton.next_power_of_2(max(C, 1))
    num_warps = min(32, max(1, block_m * block_n // (32 * TILE_PER_THREAD)))
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": num_warps}


def _padded(scores: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``scores`` with rows padded to ``ld`` elements, a multiple of 16 (see _load_problem):
    a copy of ``B * n1 * ld`` elements when ``n2`` is not already a multiple."""
    n2 = scores.shape[2]
    ld = triton.cdiv(n2, 16) * 16
    if ld != n2:
        return torch.nn.functional.pad(scores, (0, ld - n2)), ld
    return scores.contiguous(), ld


def _mask_arg(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    # bool -> uint8 view (same bytes); a dummy pointer when absent (never read: HAS_* is False)
    return like if mask is None else mask.contiguous().view(torch.uint8)


def _forward(
    scores: torch.Tensor,
    iters: int,
    tau: float,
    row_mask: torch.Tensor | None,
    col_mask: torch.Tensor | None,
    dustbin: float | None,
) -> torch.Tensor:
    """Launch the forward kernel: ``scores [B, n1, n2]`` -> ``P [B, R, C]`` (scores' dtype)."""
    B, n1, n2 = scores.shape
    has_bin = dustbin is not None
    cfg = _config(n1, n2, has_bin, arch_for(scores.device))
    out = scores.new_empty(B, n1 + has_bin, n2 + has_bin)
    if B == 0 or out.numel() == 0:
        return out
    scores, ld = _padded(scores)
    launch(
        _sinkhorn_fwd_kernel, (B,),
        scores, _mask_arg(row_mask, scores), _mask_arg(col_mask, scores), out,
        n1, n2, ld, float(tau), _bin_logit(dustbin, tau), int(iters),
        HAS_RM=row_mask is not None, HAS_CM=col_mask is not None, HAS_BIN=has_bin,
        device=scores.device, **cfg,
    )  # fmt: skip
    return out


def _backward(
    grad: torch.Tensor,
    scores: torch.Tensor,
    iters: int,
    tau: float,
    row_mask: torch.Tensor | None,
    col_mask: torch.Tensor | None,
    dustbin: float | None,
) -> torch.Tensor:
    """Launch the backward kernel: ``grad [B, R, C]`` -> ``dL/dscores [B, n1, n2]``."""
    B, n1, n2 = scores.shape
    has_bin = dustbin is not None
    cfg = _config(n1, n2, has_bin, arch_for(scores.device))
    grad = grad.contiguous()
    d_scores = scores.new_empty(scores.shape)
    if scores.numel() == 0:
        return d_scores
    scores, ld = _padded(scores)
    shifts = torch.empty(
        B, max(iters, 1), cfg["BLOCK_M"] + cfg["BLOCK_N"], device=scores.device,
        dtype=torch.float32,
    )  # fmt: skip
    launch(
        _sinkhorn_bwd_kernel, (B,),
        grad, scores, _mask_arg(row_mask, scores), _mask_arg(col_mask, scores), shifts, d_scores,
        n1, n2, ld, float(tau), _bin_logit(dustbin, tau), int(iters),
        HAS_RM=row_mask is not None, HAS_CM=col_mask is not None, HAS_BIN=has_bin,
        device=scores.device, **cfg,
    )  # fmt: skip
    return d_scores


def _bin_logit(dustbin: float | None, tau: float) -> float:
    """``dustbin / tau`` as the reference rounds it (capped, float32)."""
    return 0.0 if dustbin is None else reference.dustbin_logit(dustbin, tau)


# --- registration


def _use_triton(scores: torch.Tensor) -> bool:
    return scores.dtype != torch.float64 and resolve(scores.device, "sinkhorn") == "triton"


@torch.library.custom_op("gmpvis::sinkhorn", mutates_args=())
def _sinkhorn_op(
    scores: torch.Tensor,
    iters: int,
    tau: float,
    row_mask: torch.Tensor | None,
    col_mask: torch.Tensor | None,
    dustbin: float | None,
) -> torch.Tensor:
    if _use_triton(scores):
        return _forward(scores, iters, tau, row_mask, col_mask, dustbin)
    out = reference.sinkhorn(
        scores, iters, tau=tau, row_mask=row_mask, col_mask=col_mask, dustbin=dustbin
    )
    return out.contiguous()


@_sinkhorn_op.register_fake
def _(scores, iters, tau, row_mask, col_mask, dustbin):
    B, n1, n2 = scores.shape
    extra = 0 if dustbin is None else 1
    return scores.new_empty(B, n1 + extra, n2 + extra)


@torch.library.custom_op("gmpvis::sinkhorn_backward", mutates_args=())
def _sinkhorn_backward_op(
    grad: torch.Tensor,
    scores: torch.Tensor,
    iters: int,
    tau: float,
    row_mask: torch.Tensor | None,
    col_mask: torch.Tensor | None,
    dustbin: float | None,
) -> torch.Tensor:
    if _use_triton(scores):
        return _backward(grad, scores, iters, tau, row_mask, col_mask, dustbin)

    with autograd_enabled():
        leaf = scores.detach().requires_grad_(True)
        out = reference.sinkhorn(
            leaf, iters, tau=tau, row_mask=row_mask, col_mask=col_mask, dustbin=dustbin
        )
        (d_scores,) = torch.autograd.grad(out, leaf, grad)
    return d_scores.contiguous()


@_sinkhorn_backward_op.register_fake
def _(grad, scores, iters, tau, row_mask, col_mask, dustbin):
    return scores.new_empty(scores.shape)  # contiguous, as both backends return it


def _setup_context(ctx, inputs, output):
    scores, iters, tau, row_mask, col_mask, dustbin = inputs
    ctx.save_for_backward(scores, row_mask, col_mask)
    ctx.args = (iters, tau, dustbin)


def _autograd_backward(ctx, grad):
    scores, row_mask, col_mask = ctx.saved_tensors
    iters, tau, dustbin = ctx.args
    d_scores = _sinkhorn_backward_op(grad, scores, iters, tau, row_mask, col_mask, dustbin)
    return d_scores, None, None, None, None, None


_sinkhorn_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# --- public API


def sinkhorn(
    scores: torch.Tensor,
    iters: int,
    *,
    tau: float = 1.0,
    row_mask: torch.Tensor | None = None,
    col_mask: torch.Tensor | None = None,
    dustbin: float | None = None,
) -> torch.Tensor:
    """Batched log-domain Sinkhorn normalisation (see :func:`reference.sinkhorn`).

    Args:
        scores: ``[B, n1, n2]`` logits (float16, bfloat16, float32; float64 runs the reference).
        iters: number of (row, column) normalisation rounds, ``>= 0``.
        tau: temperature ``> 0`` (at least float32's smallest normal number), ``x = scores / tau``.
        row_mask / col_mask: ``[B, n1]`` / ``[B, n2]`` bool, True for real rows / columns.
        dustbin: a score for an extra row and column with SuperGlue's marginals, or None.

    Returns:
        ``[B, n1, n2]`` (or ``[B, n1 + 1, n2 + 1]`` with a dustbin) probabilities in
        ``scores``' dtype; masked and all ``-inf`` rows / columns are exactly 0.

    The Triton backend holds the whole matrix on chip: ``n1 (+1)`` and ``n2 (+1)`` must be at
    most :data:`MAX_SIDE`, else ValueError.
    """
    dims: dict[str, int] = {}
    check_tensor("sinkhorn", "scores", scores, ("B", "n1", "n2"), dims)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"sinkhorn: iters must be an int >= 0, got {iters!r}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise ValueError(f"sinkhorn: tau must be a float, got {type(tau).__name__}")
    if not (math.isfinite(tau) and tau >= _TINY):
        raise ValueError(f"sinkhorn: tau must be finite and >= {_TINY:.3g}, got {tau!r}")
    for name, mask, spec in (
        ("row_mask", row_mask, ("B", "n1")),
        ("col_mask", col_mask, ("B", "n2")),
    ):
        if mask is not None:
            check_tensor(
                "sinkhorn", name, mask, spec, dims, dtypes=(torch.bool,), device=scores.device
            )
    if dustbin is not None:
        if (
            isinstance(dustbin, bool)
            or not isinstance(dustbin, (int, float))
            or math.isnan(dustbin)
        ):
            raise ValueError(
                f"sinkhorn: dustbin must be a float (not NaN) or None, got {dustbin!r}"
            )
        dustbin = float(dustbin)
    (scores,) = cast_float32(scores.device, scores)  # autocast: float32 (see _amp)
    if _use_triton(scores):
        _config(dims["n1"], dims["n2"], dustbin is not None, arch_for(scores.device))
    return torch.ops.gmpvis.sinkhorn(scores, iters, float(tau), row_mask, col_mask, dustbin)
