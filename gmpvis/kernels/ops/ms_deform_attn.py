"""Multi-scale deformable attention (Deformable DETR) as fused Triton kernels.

Three public functions share one forward and one backward kernel:

* ``ms_deform_attn`` takes sampling locations and attention weights;
* ``ms_deform_attn_fused`` takes attention logits and does the softmax over the ``L * P``
  sampling points of a (query, head) inside the kernel;
* ``ms_deform_attn_offsets`` takes reference points and sampling offsets and computes the
  locations inside the kernel (``loc = ref + offset / (W_l, H_l)`` for points,
  ``loc = ref_xy + offset / P * ref_wh / 2`` for boxes): no location tensor is written or
  read, and the offsets may be half precision (pixels) while the reference points keep
  float32 (normalised coordinates: bfloat16 would quantise them to ~1/256 of the image).

Layout (all contiguous):
    value               [B, S, H, D]        S = sum_l H_l * W_l
    spatial_shapes      [L, 2]   int        (H_l, W_l)
    level_start_index   [L]      int        first row of level l in S
    sampling_locations  [B, Q, H, L, P, 2]  (x, y) in [0, 1]
    reference_points    [B, Q, L, 2 or 4]   (x, y) or (cx, cy, w, h)
    sampling_offsets    [B, Q, H, L, P, 2]
    attention           [B, Q, H, L, P]     weights or logits
    output              [B, Q, H * D]

Sampling is bilinear with zero padding and ``align_corners=False``: pixel ``x = loc_x * W_l - 0.5``
(the ``F.grid_sample`` convention). One program handles ``BLOCK_Q`` queries of one (batch, head)
and all ``D`` channels; it loops over levels and points and accumulates in float32.
The backward recomputes the four corners and scatters ``grad_value`` with float32 atomics
(under ``torch.use_deterministic_algorithms(True)`` the Triton backward raises torch's
error: no deterministic variant yet); the location (or offset), weight (or logit) and
reference-point gradients of its queries are gathered in registers and stored once per
tile, in the inputs' dtypes.
"""

from __future__ import annotations

import weakref

import torch
import triton
import triton.language as tl

from gmpvis.kernels import reference
from gmpvis.kernels._amp import cast_lower
from gmpvis.kernels._backend import autograd_enabled, resolve
from gmpvis.kernels._checks import check_tensor
from gmpvis.kernels._launch import Arch, alert_nondeterministic, arch_for, launch

_INT_DTYPES = (torch.int64, torch.int32)
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# LOC constexpr: where the sampling locations come from
LOC_GIVEN, LOC_POINTS, LOC_BOXES = 0, 1, 2


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
def _location(loc_row, ref_row, k, lvl, w_l, h_l, q_mask, P: tl.constexpr, LOC: tl.constexpr):
    """Normalised location ``(lx, ly)`` of point ``k`` of each query, and (boxes) the
    reference box size ``(rw, rh)`` the offsets are scaled by."""
    ox = tl.load(loc_row + 2 * k, mask=q_mask, other=0.0).to(tl.float32)
    oy = tl.load(loc_row + 2 * k + 1, mask=q_mask, other=0.0).to(tl.float32)
    rw = tl.zeros_like(ox)
    rh = tl.zeros_like(ox)
    if LOC == 0:
        lx, ly = ox, oy
    elif LOC == 1:
        lx = tl.load(ref_row + 2 * lvl, mask=q_mask, other=0.0).to(tl.float32) + ox / w_l
        ly = tl.load(ref_row + 2 * lvl + 1, mask=q_mask, other=0.0).to(tl.float32) + oy / h_l
    else:
        rw = tl.load(ref_row + 4 * lvl + 2, mask=q_mask, other=0.0).to(tl.float32)
        rh = tl.load(ref_row + 4 * lvl + 3, mask=q_mask, other=0.0).to(tl.float32)
        lx = tl.load(ref_row + 4 * lvl, mask=q_mask, other=0.0).to(tl.float32)
        ly = tl.load(ref_row + 4 * lvl + 1, mask=q_mask, other=0.0).to(tl.float32)
        lx += ox * (0.5 / P) * rw
        ly += oy * (0.5 / P) * rh
    return lx, ly, ox, oy, rw, rh


@triton.jit
def _pixel(lx, ly, w_l, h_l):
    """Floor corner and fractional parts of ``(lx, ly)`` in pixels (``align_corners=False``),
    and whether the location is NaN.

    Clamping to [-2, size + 1] leaves every in-range corner unchanged and keeps the int32
    conversion finite for far-away locations (all corners outside -> 0). A NaN location is
    moved outside too (never an index); the caller makes its sample NaN.
    """
    x = lx * w_l - 0.5
    y = ly * h_l - 0.5
    nan = (x != x) | (y != y)
    x = tl.minimum(tl.maximum(tl.where(nan, -2.0, x), -2.0), w_l + 1.0)
    y = tl.minimum(tl.maximum(tl.where(nan, -2.0, y), -2.0), h_l + 1.0)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    return x0f.to(tl.int32), y0f.to(tl.int32), x - x0f, y - y0f, nan


@triton.jit
def _ms_deform_attn_fwd_kernel(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, ref_ptr, attn_ptr, out_ptr,
    Q, S, H, D, L,
    P: tl.constexpr, LP_PAD: tl.constexpr, FUSED: tl.constexpr, LOC: tl.constexpr,
    REF_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
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
    ref_row = ref_ptr + (b * Q + q).to(tl.int64) * (L * REF_DIM)
    value_bh = value_ptr + b.to(tl.int64) * S * HD + h * D

    row_max = tl.zeros([BLOCK_Q], dtype=tl.float32)
    inv_denom = tl.zeros([BLOCK_Q], dtype=tl.float32)
    if FUSED:
        row_max, inv_denom = _softmax_stats(attn_row, q_mask, LP, LP_PAD)[1:]

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
            lx, ly = _location(loc_row, ref_row, k, lvl, w_l, h_l, q_mask, P, LOC)[:2]
            x0, y0, fx, fy, nan = _pixel(lx, ly, w_l, h_l)
            x1 = x0 + 1
            y1 = y0 + 1
            v00 = _corner(value_bh, x0, y0, w_l, h_l, start, S, HD, q_mask, d, d_mask)[2]
            v01 = _corner(value_bh, x1, y0, w_l, h_l, start, S, HD, q_mask, d, d_mask)[2]
            v10 = _corner(value_bh, x0, y1, w_l, h_l, start, S, HD, q_mask, d, d_mask)[2]
            v11 = _corner(value_bh, x1, y1, w_l, h_l, start, S, HD, q_mask, d, d_mask)[2]
            # bilinear: (1-fy) * ((1-fx) v00 + fx v01) + fy * ((1-fx) v10 + fx v11)
            top = v00 + fx[:, None] * (v01 - v00)
            bottom = v10 + fx[:, None] * (v11 - v10)
            sample = top + fy[:, None] * (bottom - top)
            acc += tl.where(nan[:, None], float("nan"), a[:, None] * sample)

    out_offs = row[:, None] * D + d[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask)


@triton.jit
def _ms_deform_attn_bwd_kernel(
    grad_out_ptr, value_ptr, shapes_ptr, starts_ptr, loc_ptr, ref_ptr, attn_ptr,
    grad_value_ptr, grad_loc_ptr, grad_ref_ptr, grad_attn_ptr,
    Q, S, H, D, L,
    P: tl.constexpr, LP_PAD: tl.constexpr, FUSED: tl.constexpr, LOC: tl.constexpr,
    REF_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Grads of value (atomics), of the locations / offsets, the attention and (LOC > 0)
    the reference points, the last as this head's share ``[B, Q, H, L, REF_DIM]``."""
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
    ref_row = ref_ptr + (b * Q + q).to(tl.int64) * (L * REF_DIM)
    bh_offset = b.to(tl.int64) * S * HD + h * D
    value_bh = value_ptr + bh_offset
    grad_value_bh = grad_value_ptr + bh_offset  # float32 buffer with value's layout
    go_mask = q_mask[:, None] & d_mask[None, :]
    go = tl.load(grad_out_ptr + row[:, None] * D + d[None, :], mask=go_mask, other=0.0)
    go = go.to(tl.float32)

    cols = tl.arange(0, LP_PAD)
    cols2 = tl.arange(0, 2 * LP_PAD)  # (point, x/y) of the location gradient tile
    logits = tl.zeros([BLOCK_Q, LP_PAD], dtype=tl.float32)
    row_max = tl.zeros([BLOCK_Q], dtype=tl.float32)
    inv_denom = tl.zeros([BLOCK_Q], dtype=tl.float32)
    grad_w = tl.zeros([BLOCK_Q, LP_PAD], dtype=tl.float32)  # dL/dw per point
    grad_loc = tl.zeros([BLOCK_Q, 2 * LP_PAD], dtype=tl.float32)  # dL/d(loc or offset)
    if FUSED:
        logits, row_max, inv_denom = _softmax_stats(attn_row, q_mask, LP, LP_PAD)

    for lvl in range(L):
        h_l = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
        w_l = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
        start = tl.load(starts_ptr + lvl).to(tl.int64)
        g_ref_x = tl.zeros([BLOCK_Q], dtype=tl.float32)  # this level's reference grads
        g_ref_y = tl.zeros([BLOCK_Q], dtype=tl.float32)
        g_ref_w = tl.zeros([BLOCK_Q], dtype=tl.float32)
        g_ref_h = tl.zeros([BLOCK_Q], dtype=tl.float32)
        for p in tl.static_range(P):
            k = lvl * P + p
            a = tl.load(attn_row + k, mask=q_mask, other=0.0).to(tl.float32)
            if FUSED:
                a = tl.exp(a - row_max) * inv_denom
            lx, ly, ox, oy, rw, rh = _location(loc_row, ref_row, k, lvl, w_l, h_l, q_mask, P, LOC)
            x0, y0, fx, fy, _nan = _pixel(lx, ly, w_l, h_l)
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
            grad_w += tl.where(cols[None, :] == k, tl.sum(go * sample, axis=1)[:, None], 0.0)
            g_x = a * tl.sum(go * dsdx, axis=1) * w_l  # dL / d loc_x
            g_y = a * tl.sum(go * dsdy, axis=1) * h_l
            if LOC == 1:  # loc = ref + offset / (W_l, H_l)
                g_ref_x += g_x
                g_ref_y += g_y
                g_x = g_x / w_l
                g_y = g_y / h_l
            elif LOC == 2:  # loc = ref_xy + offset * ref_wh / (2 P)
                g_ref_x += g_x
                g_ref_y += g_y
                g_ref_w += g_x * ox * (0.5 / P)
                g_ref_h += g_y * oy * (0.5 / P)
                g_x = g_x * rw * (0.5 / P)
                g_y = g_y * rh * (0.5 / P)
            grad_loc += tl.where(cols2[None, :] == 2 * k, g_x[:, None], 0.0)
            grad_loc += tl.where(cols2[None, :] == 2 * k + 1, g_y[:, None], 0.0)
            # dL/dvalue[corner] += w * bilinear_weight(corner) * grad_out
            g_top = (a * (1.0 - fy))[:, None] * go
            g_bottom = (a * fy)[:, None] * go
            tl.atomic_add(grad_value_bh + o00, g_top * (1.0 - gx), mask=m00, sem="relaxed")
            tl.atomic_add(grad_value_bh + o01, g_top * gx, mask=m01, sem="relaxed")
            tl.atomic_add(grad_value_bh + o10, g_bottom * (1.0 - gx), mask=m10, sem="relaxed")
            tl.atomic_add(grad_value_bh + o11, g_bottom * gx, mask=m11, sem="relaxed")
        if LOC > 0:  # this head's share; the launcher sums the heads
            ref_out = grad_ref_ptr + (row * L + lvl) * REF_DIM
            tl.store(ref_out, g_ref_x, mask=q_mask)
            tl.store(ref_out + 1, g_ref_y, mask=q_mask)
            if LOC == 2:
                tl.store(ref_out + 2, g_ref_w, mask=q_mask)
                tl.store(ref_out + 3, g_ref_h, mask=q_mask)

    loc_mask = q_mask[:, None] & (cols2[None, :] < 2 * LP)
    loc_ptrs = grad_loc_ptr + row[:, None] * (2 * LP) + cols2[None, :]
    tl.store(loc_ptrs, grad_loc.to(grad_loc_ptr.dtype.element_ty), mask=loc_mask)
    if FUSED:
        # softmax Jacobian: g_logit = w * (g_w - sum_j w_j g_w_j)
        w = tl.exp(logits - row_max[:, None]) * inv_denom[:, None]
        dot = tl.sum(w * grad_w, axis=1)
        grad_w = w * (grad_w - dot[:, None])
    lp_mask = q_mask[:, None] & (cols[None, :] < LP)
    attn_ptrs = grad_attn_ptr + row[:, None] * LP + cols[None, :]
    tl.store(attn_ptrs, grad_w.to(grad_attn_ptr.dtype.element_ty), mask=lp_mask)


# --- launchers


def _config(
    Q: int, D: int, programs_per_q: int, backward: bool, dtype: torch.dtype, arch: Arch
) -> dict:
    """BLOCK_D covers D (masked when D is not a power of two); BLOCK_Q fills a register
    budget (1024 tile elements forward, 512 backward, at 4 warps: spill-free in the compile
    report at the model's D = 32, P = 4), then halves (down to 16) until the grid has two
    programs per SM (the decoder's 100 queries). No dots and no pipelined loads: shared
    memory only holds the reductions' scratch, on every arch.

    Register caps (``maxnreg``): left alone, ptxas sometimes trades a few spill bytes for
    occupancy (half-precision forward on sm_90, the backward on sm_80); a cap of 128 keeps 4
    blocks per SM for the half forward, 255 lets the backward keep its state. The float32
    forward needs no cap (about 86 registers, no spills).
    """
    block_d = max(triton.next_power_of_2(D), 16)
    budget = 512 if backward else 1024
    block_q = max(16, min(64, budget // block_d, triton.next_power_of_2(max(Q, 1))))
    if not arch.interpreted:
        while block_q > 16 and triton.cdiv(Q, block_q) * programs_per_q < 2 * arch.sm_count:
            block_q //= 2
    cfg = {"BLOCK_Q": block_q, "BLOCK_D": block_d, "num_warps": 4, "num_stages": 1}
    if not arch.interpreted and (backward or dtype != torch.float32):
        cfg["maxnreg"] = 255 if backward else 128
    return cfg


def _loc_args(loc, ref):
    """(LOC mode, reference tensor or a dummy pointer, REF_DIM)."""
    if ref is None:
        return LOC_GIVEN, loc, 2
    return (LOC_POINTS if ref.shape[-1] == 2 else LOC_BOXES), ref.contiguous(), ref.shape[-1]


def _forward(value, spatial_shapes, level_start_index, loc, attn, fused: bool, ref=None):
    """``loc``: sampling locations, or (with ``ref``) the sampling offsets."""
    value, loc, attn = value.contiguous(), loc.contiguous(), attn.contiguous()
    B, S, H, D = value.shape
    _, Q, _, L, P, _ = loc.shape
    out = value.new_empty(B, Q, H * D)
    if out.numel() == 0:
        return out
    if L * P == 0:
        return out.zero_()
    mode, ref, ref_dim = _loc_args(loc, ref)
    cfg = _config(Q, D, B * H, False, value.dtype, arch_for(value.device))
    launch(
        _ms_deform_attn_fwd_kernel, (triton.cdiv(Q, cfg["BLOCK_Q"]), B * H),
        value, spatial_shapes.contiguous(), level_start_index.contiguous(), loc, ref, attn, out,
        Q, S, H, D, L,
        P=P, LP_PAD=triton.next_power_of_2(L * P), FUSED=fused, LOC=mode, REF_DIM=ref_dim,
        device=value.device, **cfg,
    )  # fmt: skip
    return out


def _backward(grad_out, value, spatial_shapes, level_start_index, loc, attn, fused: bool, ref=None):
    """Grads of value, loc (or the offsets), attn and (with ``ref``) the reference points."""
    alert_nondeterministic("ms_deform_attn backward", "grad_value uses float32 atomics")
    value, loc, attn = value.contiguous(), loc.contiguous(), attn.contiguous()
    grad_out = grad_out.contiguous()
    B, S, H, D = value.shape
    _, Q, _, L, P, _ = loc.shape
    mode, ref_t, ref_dim = _loc_args(loc, ref)
    grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)  # atomics
    grad_loc = loc.new_empty(loc.shape)  # every entry is written
    grad_attn = attn.new_empty(attn.shape)
    grad_ref = torch.empty(B, Q, H, L, ref_dim, dtype=torch.float32, device=value.device)
    if B * Q * H * D * L * P > 0:
        cfg = _config(Q, D, B * H, True, value.dtype, arch_for(value.device))
        launch(
            _ms_deform_attn_bwd_kernel, (triton.cdiv(Q, cfg["BLOCK_Q"]), B * H),
            grad_out, value, spatial_shapes.contiguous(), level_start_index.contiguous(), loc,
            ref_t, attn, grad_value, grad_loc, grad_ref, grad_attn,
            Q, S, H, D, L,
            P=P, LP_PAD=triton.next_power_of_2(L * P), FUSED=fused, LOC=mode, REF_DIM=ref_dim,
            device=value.device, **cfg,
        )  # fmt: skip
    else:
        grad_loc.zero_()
        grad_attn.zero_()
        grad_ref.zero_()
    # float32 value grads: no extra pass; half ones are rounded once from the atomics' buffer
    grads = [grad_value.to(value.dtype), grad_loc, grad_attn]
    if ref is not None:
        grads.append(grad_ref.sum(2).to(ref.dtype))  # sum the heads' shares
    return tuple(grads)


_LEVELS_CHECKED: dict[tuple, tuple] = {}  # (ids, S) -> (weakrefs, versions)


def _check_levels(op: str, S: int, spatial_shapes, level_start_index) -> None:
    """ValueError unless ``sum_l H_l W_l == S`` and ``level_start_index`` is the exclusive
    cumulative sum of the areas (both backends; the kernels would read wrong rows).

    Reading the shapes costs a device sync, so a pair of tensors is checked once (until
    written in place); during CUDA graph capture an unseen pair is not checked (the
    warm-up before capture checks it).
    """
    key = (id(spatial_shapes), id(level_start_index), S)
    versions = (spatial_shapes._version, level_start_index._version)
    hit = _LEVELS_CHECKED.get(key)
    if hit and hit[0]() is spatial_shapes and hit[1]() is level_start_index and hit[2] == versions:
        return
    if spatial_shapes.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    L = spatial_shapes.shape[0]
    values = torch.cat([spatial_shapes.flatten(), level_start_index]).tolist()
    shapes = [values[2 * i : 2 * i + 2] for i in range(L)]
    if any(h < 0 or w < 0 for h, w in shapes):
        raise ValueError(f"{op}: spatial_shapes must be >= 0, got {shapes}")
    areas = [h * w for h, w in shapes]
    if sum(areas) != S:
        raise ValueError(
            f"{op}: spatial_shapes {shapes} cover {sum(areas)} positions but value has S={S}"
        )
    starts = [sum(areas[:i]) for i in range(L)]
    if values[2 * L :] != starts:
        raise ValueError(
            f"{op}: level_start_index must be {starts} (the cumulative sums of H_l * W_l of "
            f"spatial_shapes {shapes}), got {values[2 * L :]}"
        )
    if len(_LEVELS_CHECKED) > 256:  # forget dead entries now and then
        for k in [k for k, v in _LEVELS_CHECKED.items() if v[0]() is None or v[1]() is None]:
            del _LEVELS_CHECKED[k]
    _LEVELS_CHECKED[key] = (weakref.ref(spatial_shapes), weakref.ref(level_start_index), versions)


def _use_triton(op: str, *tensors) -> bool:
    """Triton when the backend says so; float64 (gradcheck) always takes the reference."""
    if resolve(tensors[0].device, op) != "triton":
        return False
    return all(t.dtype in _KERNEL_DTYPES for t in tensors)


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
        _check_levels(name, value.shape[1], spatial_shapes, level_start_index)
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
        # contiguous, as both backends return them (whatever the inputs' strides)
        return tuple(t.new_empty(t.shape) for t in (value, sampling_locations, attention))

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


@torch.library.custom_op("gmpvis::ms_deform_attn_offsets", mutates_args=())
def _offsets_op(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    reference_points: torch.Tensor,
    sampling_offsets: torch.Tensor,
    attention: torch.Tensor,
    fused: bool,
) -> torch.Tensor:
    tensors = (value, reference_points, sampling_offsets, attention)
    _check_levels("ms_deform_attn_offsets", value.shape[1], spatial_shapes, level_start_index)
    if _use_triton("ms_deform_attn_offsets", *tensors):
        return _forward(
            value, spatial_shapes, level_start_index, sampling_offsets, attention, fused,
            ref=reference_points,
        )  # fmt: skip
    return reference.ms_deform_attn_offsets(
        value, spatial_shapes, level_start_index, reference_points, sampling_offsets, attention,
        fused=fused,
    )  # fmt: skip


@_offsets_op.register_fake
def _(value, spatial_shapes, level_start_index, reference_points, sampling_offsets, attention,
      fused):  # fmt: skip
    B, _, H, D = value.shape
    return value.new_empty(B, sampling_offsets.shape[1], H * D)


@torch.library.custom_op("gmpvis::ms_deform_attn_offsets_backward", mutates_args=())
def _offsets_backward_op(
    grad_out: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    reference_points: torch.Tensor,
    sampling_offsets: torch.Tensor,
    attention: torch.Tensor,
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grads of value, reference points, offsets and attention."""
    tensors = (value, reference_points, sampling_offsets, attention)
    if _use_triton("ms_deform_attn_offsets", *tensors):
        g_value, g_off, g_attn, g_ref = _backward(
            grad_out, value, spatial_shapes, level_start_index, sampling_offsets, attention,
            fused, ref=reference_points,
        )  # fmt: skip
        return g_value, g_ref, g_off, g_attn
    leaves = [t.detach().requires_grad_() for t in tensors]
    with autograd_enabled():
        out = reference.ms_deform_attn_offsets(
            leaves[0], spatial_shapes, level_start_index, *leaves[1:], fused=fused
        )
        grads = torch.autograd.grad(out, leaves, grad_out)
    return tuple(g.contiguous() for g in grads)


@_offsets_backward_op.register_fake
def _(grad_out, value, spatial_shapes, level_start_index, reference_points, sampling_offsets,
      attention, fused):  # fmt: skip
    return tuple(
        t.new_empty(t.shape) for t in (value, reference_points, sampling_offsets, attention)
    )


def _offsets_setup_context(ctx, inputs, output):
    *tensors, fused = inputs
    ctx.save_for_backward(*tensors)
    ctx.fused = fused


def _offsets_autograd_backward(ctx, grad_out):
    value, shapes, starts, ref, off, attn = ctx.saved_tensors
    g_value, g_ref, g_off, g_attn = _offsets_backward_op(
        grad_out, value, shapes, starts, ref, off, attn, ctx.fused
    )
    return g_value, None, None, g_ref, g_off, g_attn, None


_offsets_op.register_autograd(_offsets_autograd_backward, setup_context=_offsets_setup_context)


# --- public API


def _check_args(op, value, spatial_shapes, level_start_index, locations, attention, names):
    dims: dict[str, int] = {}
    check_tensor(op, "value", value, ("B", "S", "H", "D"), dims)
    device = value.device
    check_tensor(op, "spatial_shapes", spatial_shapes, ("L", 2), dims, dtypes=_INT_DTYPES,
                 device=device)  # fmt: skip
    check_tensor(op, "level_start_index", level_start_index, ("L",), dims, dtypes=_INT_DTYPES,
                 device=device)  # fmt: skip
    check_tensor(op, names[0], locations, ("B", "Q", "H", "L", "P", 2), dims, device=device)
    check_tensor(op, names[1], attention, ("B", "Q", "H", "L", "P"), dims, device=device)
    return dims


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
        ``[B, Q, H * D]`` in value's dtype. Under autocast, value and the weights take the
        autocast dtype (the locations keep theirs).
    """
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    _check_args("ms_deform_attn", *args, names=("sampling_locations", "attention_weights"))
    value, attention_weights = cast_lower(value.device, value, attention_weights)
    return torch.ops.gmpvis.ms_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


def ms_deform_attn_fused(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_logits: torch.Tensor,
) -> torch.Tensor:
    """:func:`ms_deform_attn` on ``softmax(attention_logits [B, Q, H, L, P])`` over ``L * P``."""
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_logits)
    _check_args("ms_deform_attn_fused", *args, names=("sampling_locations", "attention_logits"))
    value, attention_logits = cast_lower(value.device, value, attention_logits)
    return torch.ops.gmpvis.ms_deform_attn_fused(
        value, spatial_shapes, level_start_index, sampling_locations, attention_logits
    )


def ms_deform_attn_offsets(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    reference_points: torch.Tensor,
    sampling_offsets: torch.Tensor,
    attention: torch.Tensor,
    *,
    fused: bool = True,
) -> torch.Tensor:
    """:func:`ms_deform_attn` (``fused=False``: ``attention`` holds weights) or
    :func:`ms_deform_attn_fused` (``fused=True``: logits) with the sampling locations made
    inside the kernel from reference points and offsets, as Deformable DETR makes them:

    * ``reference_points [B, Q, L, 2]`` ``(x, y)``: ``loc = ref + offset / (W_l, H_l)``;
    * ``reference_points [B, Q, L, 4]`` ``(cx, cy, w, h)``:
      ``loc = ref_xy + offset / P * ref_wh / 2``.

    ``sampling_offsets``: ``[B, Q, H, L, P, 2]``. Under autocast, value, the offsets and the
    attention take the autocast dtype; the reference points keep theirs (float32 or more:
    normalised coordinates). Returns ``[B, Q, H * D]`` in value's dtype.
    """
    op = "ms_deform_attn_offsets"
    args = (value, spatial_shapes, level_start_index, sampling_offsets, attention)
    dims = _check_args(op, *args, names=("sampling_offsets", "attention"))
    if isinstance(reference_points, torch.Tensor) and reference_points.dim() == 4:
        ref_spec = ("B", "Q", "L", reference_points.shape[-1] if reference_points.shape[-1]
                    in (2, 4) else "2 or 4")  # fmt: skip
    else:
        ref_spec = ("B", "Q", "L", "2 or 4")
    if ref_spec[-1] == "2 or 4":
        raise ValueError(
            f"{op}: reference_points must have shape [B={dims['B']}, Q={dims['Q']}, "
            f"L={dims['L']}, 2 or 4], got "
            f"{list(getattr(reference_points, 'shape', [type(reference_points).__name__]))}"
        )
    check_tensor(op, "reference_points", reference_points, ref_spec, dims, device=value.device)
    value, sampling_offsets, attention = cast_lower(
        value.device, value, sampling_offsets, attention
    )
    return torch.ops.gmpvis.ms_deform_attn_offsets(
        value, spatial_shapes, level_start_index, reference_points, sampling_offsets, attention,
        bool(fused),
    )  # fmt: skip
