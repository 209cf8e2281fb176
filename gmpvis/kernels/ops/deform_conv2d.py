"""Modulated deformable convolution (DCNv2) as a Triton implicit GEMM.

``out[n, co, p] = bias[co] + sum_{c, k} W[co, c, k] * m[n, g_off(c), k, p]
* bilinear(input[n, c], y[n, g_off(c), k, p], x[n, g_off(c), k, p])`` with
``y = ho * sh - ph + i * dh + offset_y`` (tap ``k = i * kw + j``), the semantics of
``torchvision.ops.deform_conv2d``. Corners outside the image contribute 0.

No im2col buffer is built: each program bilinearly samples a ``[BLOCK_P, BLOCK_C]`` tile
(pixels x input channels) of one tap and feeds it straight to ``tl.dot``. The input is
read channels-last (``[N, H, W, C]``: a channels-last input is read in place, an NCHW one
is copied once) so the four corner gathers of a tile are contiguous along channels.
Channel chunks never straddle an offset group or a conv group (both are contiguous channel
ranges), so one set of sampling coordinates serves a whole chunk. Offsets, masks, the
output and its gradient are addressed through their strides, so channels-last tensors pass
through without copies; the output and the input gradient are channels-last (``CL``).

Backward: one kernel for the data gradients (``ds = grad_out @ W`` per tile, scattered to
``grad_input`` through the bilinear weights with float32 atomics; ``grad_offset`` from the
coordinate derivatives, ``grad_mask`` from the unmodulated sample), split over pixel tiles
and (on coarse levels) channel blocks; one for the weight gradient (``sample^T @ grad_out``
reduced over pixels, split over programs, one slice per split summed afterwards: the same
bits every run). Under ``torch.use_deterministic_algorithms(True)`` the Triton backward
raises torch's error (the input-gradient atomics have no deterministic variant yet).
float32 dots run as tf32x3 (float32-level accuracy) unless
``torch.backends.cuda.matmul.allow_tf32`` is set (then single-pass TF32, faster).
"""

import math

import torch
import triton
import triton.language as tl

from gmpvis.kernels import reference
from gmpvis.kernels._amp import cast_lower
from gmpvis.kernels._backend import autograd_enabled, resolve
from gmpvis.kernels._checks import check_tensor
from gmpvis.kernels._launch import Arch, alert_nondeterministic, arch_for, launch

OP = "deform_conv2d"


# --- Triton kernels


@triton.jit
def _tap_coords(off_ptr, mask_ptr, n, hw, ho, wo, p_ok, og, k, i, j, K, H, W,
                sh, sw, ph, pw, dh, dw, s_fn, s_fc, s_fp, s_mn, s_mc, s_mp,
                HAS_MASK: tl.constexpr):  # fmt: skip
    """Corner indices (into ``[N*H*W]``), validity, fractions and modulation of one tap.

    Offsets (and the mask) are read through their (batch, channel, pixel) strides.
    """
    ch = og * K + k
    base = n * s_fn + (2 * ch) * s_fc + hw * s_fp
    oy = tl.load(off_ptr + base, mask=p_ok, other=0.0).to(tl.float32)
    ox = tl.load(off_ptr + base + s_fc, mask=p_ok, other=0.0).to(tl.float32)
    if HAS_MASK:
        m = tl.load(mask_ptr + n * s_mn + ch * s_mc + hw * s_mp, mask=p_ok, other=0.0)
        m = m.to(tl.float32)
    else:
        m = tl.full(oy.shape, 1.0, tl.float32)
    # Outside [-2, H + 1] every corner is invalid: clamping keeps the int cast finite. A NaN
    # offset is moved outside too (never an index) and its NaN carried by the modulation.
    bad = (oy != oy) | (ox != ox)
    m = tl.where(bad, float("nan"), m)
    y = tl.where(bad, -2.0, (ho * sh - ph + i * dh).to(tl.float32) + oy)
    x = tl.where(bad, -2.0, (wo * sw - pw + j * dw).to(tl.float32) + ox)
    y = tl.minimum(tl.maximum(y, -2.0), H + 1.0)
    x = tl.minimum(tl.maximum(x, -2.0), W + 1.0)
    y0f = tl.floor(y)
    x0f = tl.floor(x)
    ly = y - y0f
    lx = x - x0f
    y0 = y0f.to(tl.int32)
    x0 = x0f.to(tl.int32)
    oky0 = p_ok & (y0 >= 0) & (y0 < H)
    oky1 = p_ok & (y0 + 1 >= 0) & (y0 + 1 < H)
    okx0 = (x0 >= 0) & (x0 < W)
    okx1 = (x0 + 1 >= 0) & (x0 + 1 < W)
    ok00 = oky0 & okx0
    ok01 = oky0 & okx1
    ok10 = oky1 & okx0
    ok11 = oky1 & okx1
    row = n * H + y0
    i00 = tl.where(ok00, row * W + x0, 0)
    i01 = tl.where(ok01, row * W + x0 + 1, 0)
    i10 = tl.where(ok10, (row + 1) * W + x0, 0)
    i11 = tl.where(ok11, (row + 1) * W + x0 + 1, 0)
    return i00, i01, i10, i11, ok00, ok01, ok10, ok11, ly, lx, m


@triton.jit
def _corners(x_ptr, C, cols, c_ok, i00, i01, i10, i11, ok00, ok01, ok10, ok11):
    """The four corner values ``[BLOCK_P, BLOCK_C]`` (float32, 0 outside) of channels-last x."""
    c = cols[None, :]
    cm = c_ok[None, :]
    v00 = tl.load(x_ptr + i00[:, None] * C + c, mask=ok00[:, None] & cm, other=0.0)
    v01 = tl.load(x_ptr + i01[:, None] * C + c, mask=ok01[:, None] & cm, other=0.0)
    v10 = tl.load(x_ptr + i10[:, None] * C + c, mask=ok10[:, None] & cm, other=0.0)
    v11 = tl.load(x_ptr + i11[:, None] * C + c, mask=ok11[:, None] & cm, other=0.0)
    return v00.to(tl.float32), v01.to(tl.float32), v10.to(tl.float32), v11.to(tl.float32)


@triton.jit
def _scatter(gx_ptr, C, cols, c_ok, idx, ok, val):
    """``grad_input[idx, cols] += val`` (channels-last float32; rows may repeat: atomics)."""
    ptrs = gx_ptr + idx[:, None] * C + cols[None, :]
    tl.atomic_add(ptrs, val, mask=ok[:, None] & c_ok[None, :], sem="relaxed")


@triton.jit
def _gout_tile(gout_ptr, n, g, co, hw, p_ok, C_OUT_G, s_gn, s_gc, s_gp):
    """``grad_out[n, g * C_out_g + co, hw]`` as a ``[BLOCK_P, BLOCK_CO]`` tile (strided)."""
    offs = n * s_gn + (g * C_OUT_G + co[None, :]) * s_gc + hw[:, None] * s_gp
    return tl.load(gout_ptr + offs, mask=p_ok[:, None] & (co < C_OUT_G)[None, :], other=0.0)


@triton.jit
def _pixels(tile, H_out, W_out, BLOCK_P: tl.constexpr):
    """Pixel tile ``tile`` of ``N * cdiv(H_out * W_out, BLOCK_P)``: tiles never straddle two
    images, so ``hw`` is contiguous (coalesced loads and stores along pixels)."""
    HWo = H_out * W_out
    per_image = tl.cdiv(HWo, BLOCK_P)
    n = tile // per_image
    hw = (tile % per_image) * BLOCK_P + tl.arange(0, BLOCK_P)
    return hw < HWo, n, hw, hw // W_out, hw % W_out


@triton.jit
def _fwd_kernel(x_ptr, off_ptr, mask_ptr, w_ptr, b_ptr, out_ptr, N, C, H, W, H_out, W_out,
                C_OUT_G, C_IN_G, C_OG, G_OFF, KH, KW, sh, sw, ph, pw, dh, dw,
                s_fn, s_fc, s_fp, s_mn, s_mc, s_mp, s_on, s_oc, s_op,
                HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
                CH_ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                BLOCK_CO: tl.constexpr):  # fmt: skip
    """Program = [BLOCK_P pixels] x [BLOCK_CO output channels of conv group g]."""
    pid_co = tl.program_id(1)
    n_co = tl.cdiv(C_OUT_G, BLOCK_CO)
    g = pid_co // n_co
    co = (pid_co % n_co) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_ok = co < C_OUT_G
    p_ok, n, hw, ho, wo = _pixels(tl.program_id(0), H_out, W_out, BLOCK_P)
    K = KH * KW
    c_lo = g * C_IN_G
    c_hi = c_lo + C_IN_G
    acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
    for k in range(K):
        i = k // KW
        j = k % KW
        for og in range(c_lo // C_OG, (c_hi - 1) // C_OG + 1):
            i00, i01, i10, i11, ok00, ok01, ok10, ok11, ly, lx, m = _tap_coords(
                off_ptr, mask_ptr, n, hw, ho, wo, p_ok, og, k, i, j, K, H, W,
                sh, sw, ph, pw, dh, dw, s_fn, s_fc, s_fp, s_mn, s_mc, s_mp, HAS_MASK)  # fmt: skip
            w00 = ((1 - ly) * (1 - lx) * m)[:, None]
            w01 = ((1 - ly) * lx * m)[:, None]
            w10 = (ly * (1 - lx) * m)[:, None]
            w11 = (ly * lx * m)[:, None]
            c_end = tl.minimum(c_hi, (og + 1) * C_OG)
            for c0 in range(tl.maximum(c_lo, og * C_OG), c_end, BLOCK_C):
                c0 = tl.multiple_of(c0, CH_ALIGN)  # lets the corner gathers vectorise
                cols = c0 + tl.arange(0, BLOCK_C)
                c_ok = cols < c_end
                v00, v01, v10, v11 = _corners(
                    x_ptr, C, cols, c_ok, i00, i01, i10, i11, ok00, ok01, ok10, ok11
                )
                s = w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11
                # weight laid out [groups, K, C_in_g, C_out_g]
                w_off = ((g * K + k) * C_IN_G + cols - c_lo)[:, None] * C_OUT_G + co[None, :]
                wt = tl.load(w_ptr + w_off, mask=c_ok[:, None] & co_ok[None, :], other=0.0)
                acc = tl.dot(s.to(wt.dtype), wt, acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + g * C_OUT_G + co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
    o_off = n * s_on + (g * C_OUT_G + co[None, :]) * s_oc + hw[:, None] * s_op
    tl.store(out_ptr + o_off, acc.to(out_ptr.dtype.element_ty), mask=p_ok[:, None] & co_ok[None, :])


@triton.jit
def _bwd_data_kernel(x_ptr, off_ptr, mask_ptr, w_ptr, gout_ptr, gx_ptr, goff_ptr, gmask_ptr, N,
                     C, H, W, H_out, W_out, C_OUT_G, C_IN_G, C_OG, G_OFF, KH, KW, sh, sw, ph,
                     pw, dh, dw, s_fn, s_fc, s_fp, s_mn, s_mc, s_mp, s_gn, s_gc, s_gp, CB,
                     HAS_MASK: tl.constexpr, ATOMIC_OFF: tl.constexpr,
                     SINGLE_CO: tl.constexpr, DOT_PRECISION: tl.constexpr,
                     CH_ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_CO: tl.constexpr):  # fmt: skip
    """Program = BLOCK_P pixels x channel block ``[cb * CB, (cb + 1) * CB)``: grads of input
    (atomics), offset and mask (contiguous float32; atomics when several programs add to
    one entry: ``ATOMIC_OFF``)."""
    p_ok, n, hw, ho, wo = _pixels(tl.program_id(0), H_out, W_out, BLOCK_P)
    cb_lo = tl.program_id(1) * CB
    cb_hi = tl.minimum(cb_lo + CB, C)
    K = KH * KW
    HWo = H_out * W_out
    cor = tl.arange(0, BLOCK_CO)
    for g in range(cb_lo // C_IN_G, (cb_hi - 1) // C_IN_G + 1):
        c_lo = tl.maximum(g * C_IN_G, cb_lo)
        c_hi = tl.minimum(c_lo + C_IN_G, cb_hi)
        if SINGLE_CO:  # the whole grad_out tile of group g stays in registers
            gt = _gout_tile(gout_ptr, n, g, cor, hw, p_ok, C_OUT_G, s_gn, s_gc, s_gp)
        for k in range(K):
            i = k // KW
            j = k % KW
            for og in range(c_lo // C_OG, (c_hi - 1) // C_OG + 1):
                i00, i01, i10, i11, ok00, ok01, ok10, ok11, ly, lx, m = _tap_coords(
                    off_ptr, mask_ptr, n, hw, ho, wo, p_ok, og, k, i, j, K, H, W,
                    sh, sw, ph, pw, dh, dw, s_fn, s_fc, s_fp, s_mn, s_mc, s_mp,
                    HAS_MASK)  # fmt: skip
                # per-channel partials, reduced over channels once per tap (not per chunk)
                acc_y = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
                acc_x = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
                acc_m = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
                c_end = tl.minimum(c_hi, (og + 1) * C_OG)
                for c0 in range(tl.maximum(c_lo, og * C_OG), c_end, BLOCK_C):
                    c0 = tl.multiple_of(c0, CH_ALIGN)  # lets the corner gathers vectorise
                    cols = c0 + tl.arange(0, BLOCK_C)
                    c_ok = cols < c_end
                    w_row = ((g * K + k) * C_IN_G + cols - g * C_IN_G)[None, :] * C_OUT_G
                    # ds[p, c] = sum_co grad_out[p, co] * W[co, c, k]
                    if SINGLE_CO:
                        w_ok = c_ok[None, :] & (cor < C_OUT_G)[:, None]
                        wt = tl.load(w_ptr + w_row + cor[:, None], mask=w_ok, other=0.0)
                        ds = tl.dot(gt, wt, input_precision=DOT_PRECISION)
                    else:
                        ds = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
                        for co0 in range(0, C_OUT_G, BLOCK_CO):
                            co = co0 + cor
                            gc = _gout_tile(gout_ptr, n, g, co, hw, p_ok, C_OUT_G, s_gn, s_gc,
                                            s_gp)  # fmt: skip
                            w_ok = c_ok[None, :] & (co < C_OUT_G)[:, None]
                            wt = tl.load(w_ptr + w_row + co[:, None], mask=w_ok, other=0.0)
                            ds = tl.dot(gc, wt, ds, input_precision=DOT_PRECISION)
                    v00, v01, v10, v11 = _corners(
                        x_ptr, C, cols, c_ok, i00, i01, i10, i11, ok00, ok01, ok10, ok11
                    )
                    hy = 1 - ly[:, None]
                    hx = 1 - lx[:, None]
                    vy = ly[:, None]
                    vx = lx[:, None]
                    val = hy * hx * v00 + hy * vx * v01 + vy * hx * v10 + vy * vx * v11
                    acc_m += ds * val
                    dm = ds * m[:, None]
                    # d(bilinear)/dy and /dx of the four-corner blend
                    acc_y += dm * (hx * (v10 - v00) + vx * (v11 - v01))
                    acc_x += dm * (hy * (v01 - v00) + vy * (v11 - v10))
                    _scatter(gx_ptr, C, cols, c_ok, i00, ok00, dm * hy * hx)
                    _scatter(gx_ptr, C, cols, c_ok, i01, ok01, dm * hy * vx)
                    _scatter(gx_ptr, C, cols, c_ok, i10, ok10, dm * vy * hx)
                    _scatter(gx_ptr, C, cols, c_ok, i11, ok11, dm * vy * vx)
                sum_y, sum_x, sum_m = tl.sum(acc_y, 1), tl.sum(acc_x, 1), tl.sum(acc_m, 1)
                ch = og * K + k
                o_off = (n * (2 * G_OFF * K) + 2 * ch) * HWo + hw
                m_off = (n * (G_OFF * K) + ch) * HWo + hw
                if ATOMIC_OFF:  # several programs (channel blocks, conv groups) add here
                    tl.atomic_add(goff_ptr + o_off, sum_y, mask=p_ok, sem="relaxed")
                    tl.atomic_add(goff_ptr + o_off + HWo, sum_x, mask=p_ok, sem="relaxed")
                    if HAS_MASK:
                        tl.atomic_add(gmask_ptr + m_off, sum_m, mask=p_ok, sem="relaxed")
                else:  # this program is the only writer of these entries
                    tl.store(goff_ptr + o_off, sum_y, mask=p_ok)
                    tl.store(goff_ptr + o_off + HWo, sum_x, mask=p_ok)
                    if HAS_MASK:
                        tl.store(gmask_ptr + m_off, sum_m, mask=p_ok)


@triton.jit
def _bwd_weight_kernel(x_ptr, off_ptr, mask_ptr, gout_ptr, gw_ptr, N, C, H, W, H_out, W_out,
                       C_OUT_G, C_IN_G, C_OG, G_OFF, KH, KW, sh, sw, ph, pw, dh, dw,
                       s_fn, s_fc, s_fp, s_mn, s_mc, s_mp, s_gn, s_gc, s_gp,
                       TILES_PER_SPLIT, HAS_MASK: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, CH_ALIGN: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_CO: tl.constexpr):  # fmt: skip
    """Program = (conv group, C_in tile, C_out tile) x tap k x pixel split: sample^T @ grad_out
    into this split's slice of ``gw [splits, groups, K, C_in_g, C_out_g]``."""
    pid_t = tl.program_id(0)
    k = tl.program_id(1)
    split = tl.program_id(2)
    n_co = tl.cdiv(C_OUT_G, BLOCK_CO)
    n_c = tl.cdiv(C_IN_G, BLOCK_C)
    g = pid_t // (n_co * n_c)
    ct = (pid_t // n_co) % n_c
    co = (pid_t % n_co) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_ok = co < C_OUT_G
    c_lo = g * C_IN_G + ct * BLOCK_C
    c_hi = tl.minimum(c_lo + BLOCK_C, (g + 1) * C_IN_G)
    cols = tl.multiple_of(c_lo, CH_ALIGN) + tl.arange(0, BLOCK_C)
    c_ok = cols < c_hi
    i = k // KW
    j = k % KW
    K = KH * KW
    acc = tl.zeros((BLOCK_C, BLOCK_CO), dtype=tl.float32)
    t_start = split * TILES_PER_SPLIT
    t_end = tl.minimum(t_start + TILES_PER_SPLIT, N * tl.cdiv(H_out * W_out, BLOCK_P))
    for t in range(t_start, t_end):
        p_ok, n, hw, ho, wo = _pixels(t, H_out, W_out, BLOCK_P)
        gt = _gout_tile(gout_ptr, n, g, co, hw, p_ok, C_OUT_G, s_gn, s_gc, s_gp)
        s = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        # a C_in tile may cover several offset groups: each column takes its own group's taps
        for og in range(c_lo // C_OG, (c_hi - 1) // C_OG + 1):
            i00, i01, i10, i11, ok00, ok01, ok10, ok11, ly, lx, m = _tap_coords(
                off_ptr, mask_ptr, n, hw, ho, wo, p_ok, og, k, i, j, K, H, W,
                sh, sw, ph, pw, dh, dw, s_fn, s_fc, s_fp, s_mn, s_mc, s_mp, HAS_MASK)  # fmt: skip
            in_og = c_ok & (cols >= og * C_OG) & (cols < (og + 1) * C_OG)
            v00, v01, v10, v11 = _corners(
                x_ptr, C, cols, in_og, i00, i01, i10, i11, ok00, ok01, ok10, ok11
            )
            s += ((1 - ly) * (1 - lx) * m)[:, None] * v00 + ((1 - ly) * lx * m)[:, None] * v01
            s += (ly * (1 - lx) * m)[:, None] * v10 + (ly * lx * m)[:, None] * v11
        acc = tl.dot(tl.trans(s.to(gt.dtype)), gt, acc, input_precision=DOT_PRECISION)
    # this split's slice, laid out [groups, K, C_in_g, C_out_g] (float32)
    slice_off = split.to(tl.int64) * (C // C_IN_G) * K * C_IN_G * C_OUT_G
    w_off = ((g * K + k) * C_IN_G + cols - g * C_IN_G)[:, None] * C_OUT_G + co[None, :]
    tl.store(gw_ptr + slice_off + w_off, acc, mask=c_ok[:, None] & co_ok[None, :])


# --- launchers


def _geometry(input, offset, weight, stride, padding, dilation):
    N, C, H, W = input.shape
    C_out, C_in_g, kh, kw = weight.shape
    H_out, W_out = offset.shape[2], offset.shape[3]
    g_off = offset.shape[1] // (2 * kh * kw)
    return dict(
        N=N, C=C, H=H, W=W, H_out=H_out, W_out=W_out, C_OUT_G=C_out // (C // C_in_g),
        C_IN_G=C_in_g, C_OG=C // g_off, G_OFF=g_off, KH=kh, KW=kw,
        sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1], dh=dilation[0], dw=dilation[1],
    )  # fmt: skip


def _pow2(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(x), 1))))


def _dot_precision(dtype: torch.dtype) -> str:
    """float32: tf32x3 (float32-level accuracy, like torchvision's GEMM) unless TF32 matmuls
    are allowed (``torch.backends.cuda.matmul.allow_tf32``): then one TF32 pass, 3x fewer MMAs.
    Half inputs: the flag is ignored by ``tl.dot``."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "tf32x3"
    return "tf32"


def _weight_tiles(weight: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """``[C_out, C_in_g, kh, kw]`` -> ``[groups, K, C_in_g, C_out_g]`` (C_out contiguous)."""
    C_out, C_in_g, kh, kw = weight.shape
    w = weight.to(dtype).reshape(groups, C_out // groups, C_in_g, kh * kw)
    return w.permute(0, 3, 2, 1).contiguous()


def _ch_align(geo: dict) -> int:
    """Largest power of two (<= 16) dividing every channel-chunk start: a vectorising hint."""
    g = math.gcd(geo["C_IN_G"], geo["C_OG"])
    return min(16, g & -g)


def _check_int32(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.numel() >= 2**31:
            raise RuntimeError(f"{OP}: Triton kernels index with int32; got {t.numel()} elements")


# The output and the input gradient are channels-last whatever the input's layout: the
# kernels write them along channels, and a layout that depended on the input's strides
# would disagree with Inductor, which may re-lay out an input after tracing the fake.
CL = torch.channels_last


def _strided(t: torch.Tensor | None, name: str, like: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``t [N, C, H, W]`` (copied only when H and W cannot be one pixel axis) and its
    (batch, channel, pixel) strides as the kernels' ``s_<name>n, s_<name>c, s_<name>p``;
    ``like`` and zero strides when ``t`` is None (never read)."""
    if t is None:
        return like, {f"s_{name}n": 0, f"s_{name}c": 0, f"s_{name}p": 0}
    if t.shape[3] > 1 and t.shape[2] > 1 and t.stride(2) != t.shape[3] * t.stride(3):
        t = t.contiguous()
    s_p = t.stride(3) if t.shape[3] > 1 else t.stride(2)
    return t, {f"s_{name}n": t.stride(0), f"s_{name}c": t.stride(1), f"s_{name}p": s_p}


def _stages(p: int, c: int, co: int, elem: int, arch: Arch, most: int = 3) -> int:
    """The deepest software pipeline (1..``most`` stages) of a ``[p, c] x [c, co]`` dot
    whose shared memory fits the arch. The estimate, ``stages * (p*c + c*co) * elem`` plus
    the float32 epilogue ``p * co * 4``, is an upper bound of what Triton allocates at every
    config in the compile report (``elem`` counts 8 bytes for float32: tf32x3 keeps two
    parts of each operand)."""
    for stages in range(most, 1, -1):
        if stages * (p * c + c * co) * elem + p * co * 4 <= arch.smem_per_block:
            return stages
    return 1


def _config(geo: dict, dtype: torch.dtype, arch: Arch) -> dict:
    """Tiles, warps and pipeline depth per kernel for ``arch``.

    Half inputs cover up to 256 output channels per program (one sampling pass per tile);
    float32 (tf32x3 dots, 3x the operand registers) stops at 128 and at 32 pixels. The
    data-gradient kernel keeps ``gt``, ``ds`` and four corner tiles live: its pixel tile
    stops at 32 (half) or 16 (float32, with 64-channel ``grad_out`` chunks and no software
    pipeline), where ptxas fits them in 255 registers (the compile report). ``BLOCK_C``
    never spans two offset groups or conv groups, so it follows their width. The stages
    come from the arch's shared memory (:func:`_stages`). On coarse levels the pixel tile
    shrinks (down to 16, ``tl.dot``'s smallest) and then the output channels split until
    the grid has a program per SM; the data-gradient kernel splits its input channels
    instead (it needs every output channel for ``ds``). Every kernel gets an explicit
    register cap (128 at 4 warps, 255 at 8): left alone, ptxas may trade spills for
    occupancy.
    """
    half = dtype != torch.float32
    elem = 2 if half else 8
    groups = geo["C"] // geo["C_IN_G"]
    hw = geo["H_out"] * geo["W_out"]
    co = _pow2(geo["C_OUT_G"], 16, 256 if half else 128)
    c = _pow2(min(geo["C_IN_G"], geo["C_OG"]), 16, 32)
    wc = _pow2(geo["C_IN_G"], 16, 64)  # weight kernel: C_in tile (may span offset groups)
    wp = _pow2(hw, 16, 64)
    target = 1 if arch.interpreted else arch.sm_count

    def fwd_programs(p_, co_):
        return geo["N"] * triton.cdiv(hw, p_) * groups * triton.cdiv(geo["C_OUT_G"], co_)

    fp, fco = _pow2(hw, 16, 64 if half else 32), co
    while fp > 16 and fwd_programs(fp, fco) < target:
        fp //= 2
    while fco > 64 and fwd_programs(fp, fco) < target:
        fco //= 2
    dp, dco = _pow2(hw, 16, 32 if half else 16), co if half else min(co, 64)
    while dp > 16 and geo["N"] * triton.cdiv(hw, dp) < target:
        dp //= 2
    # channel blocks of the data gradient (one conv group, one offset group only: blocks
    # then never straddle a group)
    cb = geo["C"]
    if groups == 1 and geo["G_OFF"] == 1:
        while cb > 2 * c and cb % 2 == 0 and geo["N"] * triton.cdiv(hw, dp) * (
            geo["C"] // cb
        ) < target:  # fmt: skip
            cb //= 2
    fwd_warps = 4 if half and fco <= 128 else 8

    def cap(warps):
        return {} if arch.interpreted else {"maxnreg": 128 if warps == 4 else 255}

    return {
        "fwd": dict(BLOCK_P=fp, BLOCK_C=c, BLOCK_CO=fco, num_warps=fwd_warps,
                    num_stages=_stages(fp, c, fco, elem, arch), **cap(fwd_warps)),
        "data": dict(BLOCK_P=dp, BLOCK_C=c, BLOCK_CO=dco, CB=cb, num_warps=8,
                     num_stages=_stages(dp, dco, c, elem, arch) if half else 1, **cap(8)),
        "weight": dict(BLOCK_P=wp, BLOCK_C=wc, BLOCK_CO=co, num_warps=8,
                       num_stages=_stages(wc, wp, co, elem, arch), **cap(8)),
    }  # fmt: skip


def _forward(input, offset, weight, bias, stride, padding, dilation, mask):
    geo = _geometry(input, offset, weight, stride, padding, dilation)
    groups = geo["C"] // geo["C_IN_G"]
    shape = (geo["N"], weight.shape[0], geo["H_out"], geo["W_out"])
    out = torch.empty(shape, dtype=input.dtype, device=input.device,
                      memory_format=CL)  # fmt: skip
    if out.numel() == 0:
        return out.zero_()
    _check_int32(input, offset, out)
    x = input.permute(0, 2, 3, 1).contiguous()  # no copy for a channels-last input
    off, s_off = _strided(offset, "f", x)
    msk, s_msk = _strided(mask, "m", x)
    cfg = _config(geo, input.dtype, arch_for(input.device))["fwd"]
    p_tiles = geo["N"] * triton.cdiv(geo["H_out"] * geo["W_out"], cfg["BLOCK_P"])
    grid = (p_tiles, groups * triton.cdiv(geo["C_OUT_G"], cfg["BLOCK_CO"]))
    launch(
        _fwd_kernel, grid,
        x, off, msk, _weight_tiles(weight, groups, input.dtype),
        x if bias is None else bias.contiguous(), out, **geo, **s_off, **s_msk,
        **_strided(out, "o", x)[1],
        HAS_MASK=mask is not None, HAS_BIAS=bias is not None,
        DOT_PRECISION=_dot_precision(input.dtype), CH_ALIGN=_ch_align(geo),
        device=input.device, **cfg,
    )  # fmt: skip
    return out


def _split_count(programs: int, tiles: int, arch: Arch) -> int:
    """Pixel splits of the weight-gradient reduction: about one program per SM (8 warps at
    up to 255 registers: one block per SM)."""
    target = 2 * programs if arch.interpreted else arch.sm_count  # interpreter: >1 split
    return max(1, min(tiles, triton.cdiv(target, programs)))


def _backward(grad_out, input, offset, weight, bias, stride, padding, dilation, mask):
    alert_nondeterministic("deform_conv2d backward", "grad_input uses float32 atomics")
    geo = _geometry(input, offset, weight, stride, padding, dilation)
    groups = geo["C"] // geo["C_IN_G"]
    N, C, H, W = input.shape
    K = geo["KH"] * geo["KW"]
    dt = input.dtype
    arch = arch_for(input.device)
    cfg = _config(geo, dt, arch)
    f32 = dict(dtype=torch.float32, device=input.device)
    atomic_off = cfg["data"]["CB"] < C or geo["C_IN_G"] % geo["C_OG"] != 0
    fill = torch.zeros if atomic_off else torch.empty  # stores cover every entry otherwise
    grad_x = torch.zeros(N, H, W, C, **f32)  # channels-last float32 atomic target
    grad_off = fill(offset.shape, **f32)
    grad_mask = fill(mask.shape if mask is not None else (0,), **f32)
    tiles = N * triton.cdiv(geo["H_out"] * geo["W_out"], cfg["weight"]["BLOCK_P"])
    programs = groups * triton.cdiv(geo["C_IN_G"], cfg["weight"]["BLOCK_C"])
    programs *= triton.cdiv(geo["C_OUT_G"], cfg["weight"]["BLOCK_CO"])
    per_split = triton.cdiv(tiles, _split_count(programs * K, tiles, arch))
    splits = triton.cdiv(tiles, per_split)
    grad_w = torch.empty(splits, groups, K, geo["C_IN_G"], geo["C_OUT_G"], **f32)
    if grad_out.numel() > 0 and input.numel() > 0:
        _check_int32(input, offset, grad_out)
        x = input.permute(0, 2, 3, 1).contiguous()  # no copy for a channels-last input
        go, s_go = _strided(grad_out, "g", x)
        off, s_off = _strided(offset, "f", x)
        msk, s_msk = _strided(mask, "m", x)
        common = dict(HAS_MASK=mask is not None, DOT_PRECISION=_dot_precision(dt),
                      CH_ALIGN=_ch_align(geo), device=input.device)  # fmt: skip
        data = cfg["data"]
        d_tiles = N * triton.cdiv(geo["H_out"] * geo["W_out"], data["BLOCK_P"])
        launch(
            _bwd_data_kernel, (d_tiles, triton.cdiv(C, data["CB"])),
            x, off, msk, _weight_tiles(weight, groups, dt), go, grad_x, grad_off, grad_mask,
            **geo, **s_off, **s_msk, **s_go, CB=data["CB"],
            **common, ATOMIC_OFF=atomic_off, SINGLE_CO=geo["C_OUT_G"] <= data["BLOCK_CO"],
            **{k: v for k, v in data.items() if k != "CB"},
        )  # fmt: skip
        launch(
            _bwd_weight_kernel, (programs, K, splits),
            x, off, msk, go, grad_w, **geo, **s_off, **s_msk, **s_go, TILES_PER_SPLIT=per_split,
            **common, **cfg["weight"],
        )  # fmt: skip
        grad_w = grad_w.sum(0)  # the splits' slices, in a fixed order
    else:
        grad_w = grad_w.zero_().sum(0)
        grad_off.zero_()
        grad_mask.zero_()
    grad_weight = grad_w.permute(0, 3, 2, 1).reshape(weight.shape)  # back to [C_out, C_in_g, ..]
    grad_bias = grad_out.sum((0, 2, 3), dtype=torch.float32) if bias is not None else None
    return (
        grad_x.permute(0, 3, 1, 2).to(dt),  # channels-last, no copy in float32
        grad_off.to(dt),
        grad_weight.to(dt).contiguous(),
        grad_bias.to(dt) if bias is not None else grad_out.new_empty(0),
        grad_mask.to(dt),
    )


# --- registration


def _use_triton(input: torch.Tensor) -> bool:
    # resolve() first: an explicit but impossible "triton" request raises even for float64
    return resolve(input.device, OP) == "triton" and input.dtype != torch.float64


@torch.library.custom_op("gmpvis::deform_conv2d", mutates_args=())
def _deform_conv2d_op(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    mask: torch.Tensor | None,
) -> torch.Tensor:
    if _use_triton(input):
        return _forward(input, offset, weight, bias, stride, padding, dilation, mask)
    out = reference.deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)
    return out.contiguous(memory_format=CL)


@_deform_conv2d_op.register_fake
def _(input, offset, weight, bias, stride, padding, dilation, mask):
    shape = (input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])
    return input.new_empty(shape).contiguous(memory_format=CL)


@torch.library.custom_op("gmpvis::deform_conv2d_backward", mutates_args=())
def _deform_conv2d_backward_op(
    grad_out: torch.Tensor,
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grads of input, offset, weight, bias and mask (``[0]``-sized when bias/mask is None)."""
    args = (input, offset, weight, bias, stride, padding, dilation, mask)
    if _use_triton(input):
        return _backward(grad_out, *args)
    with autograd_enabled():
        leaves = [t.detach().requires_grad_() if t is not None else None for t in args[:4]]
        m = mask.detach().requires_grad_() if mask is not None else None
        out = reference.deform_conv2d(*leaves, stride, padding, dilation, m)
        wrt = [t for t in (*leaves, m) if t is not None]
        grads = list(torch.autograd.grad(out, wrt, grad_out))
    g_in = grads[0].contiguous(memory_format=CL)
    g_off, g_w = grads[1].contiguous(), grads[2].contiguous()
    g_b = grads[3].contiguous() if bias is not None else grad_out.new_empty(0)
    g_m = grads[-1].contiguous() if mask is not None else grad_out.new_empty(0)
    return g_in, g_off, g_w, g_b, g_m


@_deform_conv2d_backward_op.register_fake
def _(grad_out, input, offset, weight, bias, stride, padding, dilation, mask):
    # the input gradient channels-last, the others contiguous (both backends)
    return (
        input.new_empty(input.shape).contiguous(memory_format=CL),
        offset.new_empty(offset.shape),
        weight.new_empty(weight.shape),
        bias.new_empty(bias.shape) if bias is not None else grad_out.new_empty(0),
        mask.new_empty(mask.shape) if mask is not None else grad_out.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    input, offset, weight, bias, stride, padding, dilation, mask = inputs
    ctx.save_for_backward(input, offset, weight, bias, mask)
    ctx.conv = (stride, padding, dilation)


def _autograd_backward(ctx, grad_out):
    input, offset, weight, bias, mask = ctx.saved_tensors
    g_in, g_off, g_w, g_b, g_m = torch.ops.gmpvis.deform_conv2d_backward(
        grad_out, input, offset, weight, bias, *ctx.conv, mask
    )
    return (
        g_in,
        g_off,
        g_w,
        g_b if bias is not None else None,
        None,
        None,
        None,
        g_m if mask is not None else None,
    )


_deform_conv2d_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# --- public API


def _pair(name: str, value, minimum: int) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = [value, value]
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        pair = [int(v) for v in value]
    else:
        raise ValueError(f"{OP}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{OP}: {name} must be >= {minimum}, got {value!r}")
    return pair


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated deformable convolution v2, ``torchvision.ops.deform_conv2d`` semantics.

    Args:
        input: ``[N, C_in, H, W]``.
        offset: ``[N, 2 * G_off * kh * kw, H_out, W_out]``; ``(dy, dx)`` of tap
            ``k = i * kw + j`` in offset group ``g`` at channels ``2 * (g * kh * kw + k)``
            and ``+1``. ``G_off`` (which must divide ``C_in``) is inferred from the shape.
        weight: ``[C_out, C_in / groups, kh, kw]``; ``groups`` is inferred from the shape.
        bias: ``[C_out]`` or None.
        stride, padding, dilation: int or ``(h, w)``.
        mask: ``[N, G_off * kh * kw, H_out, W_out]`` modulation, or None (all ones).

    Returns:
        ``[N, C_out, H_out, W_out]`` with ``H_out = (H + 2 ph - dh (kh - 1) - 1) // sh + 1``,
        in channels-last memory format (both backends; its input gradient too). Under
        autocast every float tensor takes the autocast dtype.
    """
    stride_ = _pair("stride", stride, 1)
    padding_ = _pair("padding", padding, 0)
    dilation_ = _pair("dilation", dilation, 1)
    dims: dict[str, int] = {}
    check_tensor(OP, "input", input, ("N", "C_in", "H", "W"), dims)
    input, offset, weight, bias, mask = cast_lower(input.device, input, offset, weight, bias, mask)
    same = dict(dtypes=(input.dtype,), device=input.device)
    check_tensor(OP, "weight", weight, ("C_out", "C_in/groups", "kh", "kw"), dims, **same)
    N, C_in, H, W = input.shape
    C_out, C_in_g, kh, kw = weight.shape
    if C_in_g == 0 or C_in % C_in_g or C_out % (C_in // C_in_g) or kh == 0 or kw == 0:
        raise ValueError(
            f"{OP}: weight {list(weight.shape)} must be [C_out, C_in / groups, kh, kw] with "
            f"groups dividing C_in={C_in} and C_out, and kh, kw > 0"
        )
    dims["H_out"] = (H + 2 * padding_[0] - dilation_[0] * (kh - 1) - 1) // stride_[0] + 1
    dims["W_out"] = (W + 2 * padding_[1] - dilation_[1] * (kw - 1) - 1) // stride_[1] + 1
    if dims["H_out"] <= 0 or dims["W_out"] <= 0:
        raise ValueError(
            f"{OP}: input {list(input.shape)} is too small for a {kh}x{kw} kernel with "
            f"padding {padding_} and dilation {dilation_} (output {dims['H_out']}x{dims['W_out']})"
        )
    check_tensor(OP, "offset", offset, ("N", "2*G_off*kh*kw", "H_out", "W_out"), dims, **same)
    g_off = offset.shape[1] // (2 * kh * kw)
    if g_off == 0 or offset.shape[1] != 2 * g_off * kh * kw or C_in % g_off:
        raise ValueError(
            f"{OP}: offset must have shape [N, 2*G_off*kh*kw, H_out, W_out] with "
            f"2*kh*kw={2 * kh * kw} and G_off dividing C_in={C_in}, got {list(offset.shape)}"
        )
    dims["G_off*kh*kw"] = g_off * kh * kw
    if bias is not None:
        check_tensor(OP, "bias", bias, ("C_out",), dims, **same)
    if mask is not None:
        check_tensor(OP, "mask", mask, ("N", "G_off*kh*kw", "H_out", "W_out"), dims, **same)
    return torch.ops.gmpvis.deform_conv2d(
        input, offset, weight, bias, stride_, padding_, dilation_, mask
    )
