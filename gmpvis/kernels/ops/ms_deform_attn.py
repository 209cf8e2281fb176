"""Multi-scale deformable attention (Deformable DETR) as fused Triton kernels.

``ms_deform_attn`` takes attention weights, ``ms_deform_attn_fused`` takes attention logits and
does the softmax over the ``L * P`` sampling points of a (query, head) inside the kernel.

Layout (all contiguous):
    value               [B, S, H, D]        S = sum_l H_l * W_l
    spatial_shapes      [L, 2]   int        (H_l, W_l)
    level_start_index   [L]      int        first row of level l in S
    sampling_locations  [B, Q, H, L, P, 2]  (x, y) in [0, 1]
    attention           [B, Q, H, L, P]     weights or logits
    output              [B, Q, H * D]

Sampling is bilinear with zero padding and ``align_corners=False``: pixel ``x = loc_x * W_l - 0.5``
(the ``F.grid_sample`` convention). One program handles ``BLOCK_Q`` queries of one (batch, head)
and all ``D`` channels; it loops over levels and points and accumulates in float32.
The backward recomputes the four corners, scatters ``grad_value`` with float32 atomics and writes
the location and weight (or logit) gradients of its queries directly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gmpvis.kernels import reference
from gmpvis.kernels._backend import autograd_enabled, resolve
from gmpvis.kernels._checks import check_tensor

_INT_DTYPES = (torch.int64, torch.int32)
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --- Triton kernels


@triton.jit
def _softmax_stats(attn_row, q_mask, LP, LP_PAD: tl.constexpr):
    """Row max and 1 / sum(exp(logit - max)) over the ``L * P`` logits of each query."""
    cols = tl.arange(0, LP_PAD)
    mask = q_mask[:, None] & (cols[None, :] < LP)
    logits = tl.load(attn_row[:, None] + cols[None, :], mask=mask, other=-float("inf"))
    logits = logits.to(tl.float32)
    row_max = tl.where(q_mask, tl.max(logits, axis=1), 0.0)  # padded rows: avoid -inf - -inf
    denom = tl.sum(tl.exp(logits - row_max[:, None]), axis=1)
    return logits, row_max, 1.0 / tl.where(q_mask, denom, 1.0)


@triton.jit
def _corner(value_bh, xi, yi, w_l, h_l, start, S, HD, q_mask, d, d_mask):
    """Corner (xi, yi) [BQ] of one (batch, head) of value: offsets, mask and float32 values.

    Corners outside the level (or rows outside S, for inconsistent shapes) read as 0.
    """
    inside = (xi >= 0) & (xi < w_l) & (yi >= 0) & (yi < h_l)
    row = start + yi.to(tl.int64) * w_l + xi  # row of value in S
    valid = inside & q_mask & (row >= 0) & (row < S)
    offs = row[:, None] * HD + d[None, :]
    mask = valid[:, None] & d_mask[None, :]
    return offs, mask, tl.load(value_bh + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _sample_point(loc_row, k, w_l, h_l, q_mask):
    """Pixel coordinates of point ``k`` of each query: floor corner and fractional parts."""
    lx = tl.load(loc_row + 2 * k, mask=q_mask, other=0.0).to(tl.float32)
    ly = tl.load(loc_row + 2 * k + 1, mask=q_mask, other=0.0).to(tl.float32)
    # align_corners=False; clamping to [-2, size + 1] leaves every in-range corner unchanged and
    # keeps the int32 conversion finite for far-away locations (all corners outside -> 0).
    x = tl.minimum(tl.maximum(lx * w_l - 0.5, -2.0), w_l + 1.0)
    y = tl.minimum(tl.maximum(ly * h_l - 0.5, -2.0), h_l + 1.0)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    return x0f.to(tl.int32), y0f.to(tl.int32), x - x0f, y - y0f


@triton.jit
def _ms_deform_attn_fwd_kernel(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
    Q, S, H, D, L,
    P: tl.constexpr, LP_PAD: tl.constexpr, FUSED: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_q = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = q < Q
    d = tl.arange(0, BLOCK_D)
    d_mask = d < D
    HD = H * D
    LP = L * P
    row = (b * Q + q).to(tl.int64) * H + h  # index of (b, q, h) in [B, Q, H]
    attn_row = attn_ptr + row * LP
    loc_row = loc_ptr + row * (2 * LP)
    value_bh = value_ptr + b.to(tl.int64) * S * HD + h * D

    row_max = tl.zeros([BLOCK_Q], dtype=tl.float32)
    inv_denom = tl.zeros([BLOCK_Q], dtype=tl.float32)
    if FUSED:
        _, row_max, inv_denom = _softmax_stats(attn_row, q_mask, LP, LP_PAD)

    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
    for lvl in range(L):
        h_l = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
        w_l = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
        start = tl.load(starts_ptr + lvl).to(tl.int64)
        for p in tl.static_range(P):
            k = lvl * P + p
            a = tl.load(attn_row + k, mask=q_mask, other=0.0).to(tl.float32)
            if FUSED:
                a = tl.exp(a - row_max) * inv_denom
            x0, y0, fx, fy = _sample_point(loc_row, k, w_l, h_l, q_mask)
            x1 = x0 + 1
            y1 = y0 + 1
            o00, m00, v00 = _corner(value_bh, x0, y0, w_l, h_l, start, S, HD, q_mask, d, d_mask)
            o01, m01, v01 = _corner(value_bh, x1, y0, w_l, h_l, start, S, HD, q_mask, d, d_mask)
            o10, m10, v10 = _corner(value_bh, x0, y1, w_l, h_l, start, S, HD, q_mask, d, d_mask)
            o11, m11, v11 = _corner(value_bh, x1, y1, w_l, h_l, start, S, HD, q_mask, d, d_mask)
            # bilinear: (1-fy) * ((1-fx) v00 + fx v01) + fy * ((1-fx) v10 + fx v11)
            top = v00 + fx[:, None] * (v01 - v00)
            bottom = v10 + fx[:, None] * (v11 - v10)
            acc += a[:, None] * (top + fy[:, None] * (bottom - top))

    out_offs = row[:, None] * D + d[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask)


@triton.jit
def _ms_deform_attn_bwd_kernel(
    grad_out_ptr, value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr,
    grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
    Q, S, H, D, L,
    P: tl.constexpr, LP_PAD: tl.constexpr, FUSED: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_q = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = q < Q
    d = tl.arange(0, BLOCK_D)
    d_mask = d < D
    HD = H * D
    LP = L * P
    row = (b * Q + q).to(tl.int64) * H + h
    attn_row = attn_ptr + row * LP
    loc_row = loc_ptr + row * (2 * LP)
    bh_offset = b.to(tl.int64) * S * HD + h * D
    value_bh = value_ptr + bh_offset
    grad_value_bh = grad_value_ptr + bh_offset  # float32 buffer with value's layout
    go_mask = q_mask[:, None] & d_mask[None, :]
    go = tl.load(grad_out_ptr + row[:, None] * D + d[None, :], mask=go_mask, other=0.0)
    go = go.to(tl.float32)

    cols = tl.arange(0, LP_PAD)
    logits = tl.zeros([BLOCK_Q, LP_PAD], dtype=tl.float32)
    row_max = tl.zeros([BLOCK_Q], dtype=tl.float32)
    inv_denom = tl.zeros([BLOCK_Q], dtype=tl.float32)
    grad_w = tl.zeros([BLOCK_Q, LP_PAD], dtype=tl.float32)  # dL/dw per point (fused only)
    if FUSED:
        logits, row_max, inv_denom = _softmax_stats(attn_row, q_mask, LP, LP_PAD)

    for lvl in range(L):
        h_l = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
        w_l = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
        start = tl.load(starts_ptr + lvl).to(tl.int64)
        for p in tl.static_range(P):
            k = lvl * P + p
            a = tl.load(attn_row + k, mask=q_mask, other=0.0).to(tl.float32)
            if FUSED:
                a = tl.exp(a - row_max) * inv_denom
            x0, y0, fx, fy = _sample_point(loc_row, k, w_l, h_l, q_mask)
            x1 = x0 + 1
            y1 = y0 + 1
            o00, m00, v00 = _corner(value_bh, x0, y0, w_l, h_l, start, S, HD, q_mask, d, d_mask)
            o01, m01, v01 = _corner(value_bh, x1, y0, w_l, h_l, start, S, HD, q_mask, d, d_mask)
            o10, m10, v10 = _corner(value_bh, x0, y1, w_l, h_l, start, S, HD, q_mask, d, d_mask)
            o11, m11, v11 = _corner(value_bh, x1, y1, w_l, h_l, start, S, HD, q_mask, d, d_mask)
            gx = fx[:, None]
            gy = fy[:, None]
            top = v00 + gx * (v01 - v00)
            bottom = v10 + gx * (v11 - v10)
            sample = top + gy * (bottom - top)
            # d sample / d x = (1-fy)(v01 - v00) + fy(v11 - v10); d x / d loc_x = W_l
            dsdx = (v01 - v00) + gy * ((v11 - v10) - (v01 - v00))
            dsdy = bottom - top
            g_point = tl.sum(go * sample, axis=1)  # dL/dw
            g_x = a * tl.sum(go * dsdx, axis=1) * w_l
            g_y = a * tl.sum(go * dsdy, axis=1) * h_l
            tl.store(grad_loc_ptr + row * (2 * LP) + 2 * k, g_x, mask=q_mask)
            tl.store(grad_loc_ptr + row * (2 * LP) + 2 * k + 1, g_y, mask=q_mask)
            if FUSED:
                grad_w += tl.where(cols[None, :] == k, g_point[:, None], 0.0)
            else:
                tl.store(grad_attn_ptr + row * LP + k, g_point, mask=q_mask)
            # dL/dvalue[corner] += w * bilinear_weight(corner) * grad_out
            g_top = (a * (1.0 - fy))[:, None] * go
            g_bottom = (a * fy)[:, None] * go
            tl.atomic_add(grad_value_bh + o00, g_top * (1.0 - gx), mask=m00, sem="relaxed")
            tl.atomic_add(grad_value_bh + o01, g_top * gx, mask=m01, sem="relaxed")
            tl.atomic_add(grad_value_bh + o10, g_bottom * (1.0 - gx), mask=m10, sem="relaxed")
            tl.atomic_add(grad_value_bh + o11, g_bottom * gx, mask=m11, sem="relaxed")

    if FUSED:
        # softmax Jacobian: g_logit = w * (g_w - sum_j w_j g_w_j)
        w = tl.exp(logits - row_max[:, None]) * inv_denom[:, None]
        dot = tl.sum(w * grad_w, axis=1)
        g_logit = w * (grad_w - dot[:, None])
        lp_mask = q_mask[:, None] & (cols[None, :] < LP)
        tl.store(grad_attn_ptr + row[:, None] * LP + cols[None, :], g_logit, mask=lp_mask)


# --- launchers


def _blocks(Q: int, D: int, budget: int) -> tuple[int, int]:
    """BLOCK_D covers D (masked when D is not a power of two); BLOCK_Q fills ``budget``.

    Budgets (1024 elements forward, 512 backward, 4 warps) keep the sm_90 builds spill-free
    (ptxas -v: about 70 and 56-80 registers per thread at D=32, P=4).
    """
    block_d = max(triton.next_power_of_2(D), 16)
    block_q = max(16, min(64, budget // block_d, triton.next_power_of_2(Q)))
    return block_q, block_d


def _forward(value, spatial_shapes, level_start_index, loc, attn, fused: bool):
    value, loc, attn = value.contiguous(), loc.contiguous(), attn.contiguous()
    B, S, H, D = value.shape
    _, Q, _, L, P, _ = loc.shape
    out = value.new_empty(B, Q, H * D)
    if out.numel() == 0:
        return out
    if L * P == 0:
        return out.zero_()
    block_q, block_d = _blocks(Q, D, budget=1024)
    grid = (triton.cdiv(Q, block_q), B * H)
    _ms_deform_attn_fwd_kernel[grid](
        value, spatial_shapes.contiguous(), level_start_index.contiguous(), loc, attn, out,
        Q, S, H, D, L,
        P=P, LP_PAD=triton.next_power_of_2(L * P), FUSED=fused,
        BLOCK_Q=block_q, BLOCK_D=block_d, num_warps=4,
    )  # fmt: skip
    return out


def _backward(grad_out, value, spatial_shapes, level_start_index, loc, attn, fused: bool):
    value, loc, attn = value.contiguous(), loc.contiguous(), attn.contiguous()
    grad_out = grad_out.contiguous()
    B, S, H, D = value.shape
    _, Q, _, L, P, _ = loc.shape
    grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
    grad_loc = torch.zeros(loc.shape, dtype=torch.float32, device=loc.device)
    grad_attn = torch.zeros(attn.shape, dtype=torch.float32, device=attn.device)
    if B * Q * H * D * L * P > 0:
        block_q, block_d = _blocks(Q, D, budget=512)
        grid = (triton.cdiv(Q, block_q), B * H)
        _ms_deform_attn_bwd_kernel[grid](
            grad_out, value, spatial_shapes.contiguous(), level_start_index.contiguous(), loc,
            attn, grad_value, grad_loc, grad_attn,
            Q, S, H, D, L,
            P=P, LP_PAD=triton.next_power_of_2(L * P), FUSED=fused,
            BLOCK_Q=block_q, BLOCK_D=block_d, num_warps=4,
        )  # fmt: skip
    return grad_value.to(value.dtype), grad_loc.to(loc.dtype), grad_attn.to(attn.dtype)


def _use_triton(op: str, value, loc, attn) -> bool:
    """Triton when the backend says so; float64 (gradcheck) always takes the reference."""
    if resolve(value.device, op) != "triton":
        return False
    return all(t.dtype in _KERNEL_DTYPES for t in (value, loc, attn))


# --- registration


def _register(fused: bool):
    """Register ``gmpvis::<name>`` and ``gmpvis::<name>_backward`` with autograd between them."""
    name = "ms_deform_attn_fused" if fused else "ms_deform_attn"
    ref = reference.ms_deform_attn_fused if fused else reference.ms_deform_attn

    @torch.library.custom_op(f"gmpvis::{name}", mutates_args=())
    def forward_op(
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention: torch.Tensor,
    ) -> torch.Tensor:
        args = (value, spatial_shapes, level_start_index, sampling_locations, attention)
        if _use_triton(name, value, sampling_locations, attention):
            return _forward(*args, fused=fused)
        return ref(*args)

    @forward_op.register_fake
    def _(value, spatial_shapes, level_start_index, sampling_locations, attention):
        B, _, H, D = value.shape
        return value.new_empty(B, sampling_locations.shape[1], H * D)

    @torch.library.custom_op(f"gmpvis::{name}_backward", mutates_args=())
    def backward_op(
        grad_out: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if _use_triton(name, value, sampling_locations, attention):
            return _backward(
                grad_out, value, spatial_shapes, level_start_index, sampling_locations,
                attention, fused=fused,
            )  # fmt: skip
        leaves = [t.detach().requires_grad_() for t in (value, sampling_locations, attention)]
        with autograd_enabled():
            out = ref(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
            grads = torch.autograd.grad(out, leaves, grad_out)
        return tuple(g.contiguous() for g in grads)

    @backward_op.register_fake
    def _(grad_out, value, spatial_shapes, level_start_index, sampling_locations, attention):
        return (
            torch.empty_like(value),
            torch.empty_like(sampling_locations),
            torch.empty_like(attention),
        )

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def autograd_backward(ctx, grad_out):
        value, shapes, starts, loc, attn = ctx.saved_tensors
        grad_value, grad_loc, grad_attn = backward_op(grad_out, value, shapes, starts, loc, attn)
        return grad_value, None, None, grad_loc, grad_attn

    forward_op.register_autograd(autograd_backward, setup_context=setup_context)
    return forward_op, backward_op


_register(fused=False)
_register(fused=True)


# --- public API


def _check_args(op, value, spatial_shapes, level_start_index, sampling_locations, attention, name):
    dims: dict[str, int] = {}
    check_tensor(op, "value", value, ("B", "S", "H", "D"), dims)
    device = value.device
    check_tensor(op, "spatial_shapes", spatial_shapes, ("L", 2), dims, dtypes=_INT_DTYPES,
                 device=device)  # fmt: skip
    check_tensor(op, "level_start_index", level_start_index, ("L",), dims, dtypes=_INT_DTYPES,
                 device=device)  # fmt: skip
    check_tensor(op, "sampling_locations", sampling_locations, ("B", "Q", "H", "L", "P", 2), dims,
                 device=device)  # fmt: skip
    check_tensor(op, name, attention, ("B", "Q", "H", "L", "P"), dims, device=device)


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention; see :func:`gmpvis.kernels.reference.ms_deform_attn`.

    Args:
        value: ``[B, S, H, D]``, ``S = sum_l H_l * W_l``.
        spatial_shapes: ``[L, 2]`` int64 ``(H_l, W_l)``, on value's device.
        level_start_index: ``[L]`` int64.
        sampling_locations: ``[B, Q, H, L, P, 2]`` ``(x, y)``, in ``[0, 1]`` inside the image.
        attention_weights: ``[B, Q, H, L, P]``.

    Returns:
        ``[B, Q, H * D]`` in value's dtype.
    """
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    _check_args("ms_deform_attn", *args, name="attention_weights")
    return torch.ops.gmpvis.ms_deform_attn(*args)


def ms_deform_attn_fused(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_logits: torch.Tensor,
) -> torch.Tensor:
    """:func:`ms_deform_attn` on ``softmax(attention_logits [B, Q, H, L, P])`` over ``L * P``."""
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_logits)
    _check_args("ms_deform_attn_fused", *args, name="attention_logits")
    return torch.ops.gmpvis.ms_deform_attn_fused(*args)
