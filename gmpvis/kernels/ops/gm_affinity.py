"""Graph-matching affinity ``gm_affinity``: Triton kernels, launchers, registration, autograd.

``out[b, i, a] = node1[b, i] . node2[b, a] + Q[b, i, a]`` with the quadratic term

    Q[i, a] = sum_{j != i, k != a} Ke(i, j, a, k) S[j, k],
    Ke(i, j, a, k) = exp(-||e1[i, j] - e2[a, k]||^2 / sigma^2)

computed on the fly: a program owns one ``i`` and a block of ``a`` and meets a ``[J, C]``
tile of ``e1[i]`` with a ``[R, C]`` tile of ``e2[a-block]`` (``R = A * K`` edges). Memory
is O(n1 * n2) besides the inputs; the ``n1^2 n2^2`` tensor (or the dense ``M`` of
``reference.gm_affinity_dense``) never exists. The node term is one float32 ``bmm`` added
inside the kernel before the single rounding to the output dtype.

Squared distances, two ways (``_sq_dist``), chosen per tile at run time:

* on tensor cores: ``|x - m|^2 + |y - m|^2 - 2 (x - m) . (y - m)`` with ``m`` the mean edge
  feature of the batch element, one ``tl.dot`` (``tf32x3``: float32-level products). Its
  rounding error is ``~eps * (|x - m|^2 + |y - m|^2)``, so it is taken only when that sum
  times ``1 / sigma^2`` stays below ``EXPANSION_LIMIT`` (the weight's relative error is then
  below ``~1e-5``);
* otherwise (features far from their mean against ``sigma``, or inf / NaN in the tile) as
  direct differences ``sum_c (x_c - y_c)^2`` on the FMA units: exact to rounding, and an
  infinite distance gives weight ``exp(-inf) = 0``.

Backward, with ``G = grad_out`` masked and ``W(i,j,a,k) = G[i,a] S[j,k] Ke(i,j,a,k)``:

* ``grad_node1 = G @ node2``, ``grad_node2 = G^T @ node1`` (cuBLAS / torch matmuls);
* ``grad_S[j, k] = sum_{i != j, a != k} Ke G[i, a]``: the forward quadratic kernel run on the
  transposed edges ``e1[i, j] -> e1^T[j, i]`` (a stride swap) with ``G`` in place of ``S``;
* ``grad_e1[i, j] = -2/sigma^2 sum_{a,k} W (e1_ij - e2_ak)``, written with centred features
  as ``-2/sigma^2 ((x - m) sum W - sum W (y - m))``: one program per ``(i, block of j)``
  loops over blocks of ``a`` (a second ``tl.dot``: ``W [J, R] @ (y - m) [R, C]``);
* ``grad_e2`` is the same kernel with the graphs swapped (``e2, e1, S^T, G^T``), no sign
  change: ``-2/sigma^2 (e2_ak sum W - sum W e1_ij) = 2/sigma^2 sum W (e1_ij - e2_ak)``.

Every kernel accumulates in float32; inputs float32/float16/bfloat16 (float64 runs the
reference). Triton needs ``c <= 256`` (one register tile of edge features).
"""

import torch
import triton
import triton.language as tl

from gmpvis.kernels import reference
from gmpvis.kernels._amp import cast_float32
from gmpvis.kernels._backend import autograd_enabled, resolve
from gmpvis.kernels._checks import check_tensor
from gmpvis.kernels._launch import Arch, arch_for, launch

OP = "gm_affinity"
MAX_C = 256
LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e))
FLT_MAX = 3.0e38  # just below float32's largest finite value
# (|x - m|^2 + |y - m|^2) * log2(e) / sigma^2 below this: the expanded distance's rounding
# (a few float32 ulps of that sum) changes log2 of a weight by < 2^8 * 2^-22 ~ 6e-5 at most.
EXPANSION_LIMIT: tl.constexpr = tl.constexpr(256.0)


# --- Triton kernels
# Tiles: a block of BLOCK_J edge rows e1[i, j] ([J, C]) against R = BLOCK_A * BLOCK_K edge rows
# e2[a, k] of BLOCK_A nodes a at once ([R, C], column r <-> (a, k) = (r // BLOCK_K, r % BLOCK_K)),
# so one tl.dot covers several a and the interpreter runs few, wide programs.


@triton.jit
def _sq_dist(xc, yc, x_cols, y_cols, x_ok, y_ok, C, s_xc, s_yc, scale,
             PRECISION: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_R: tl.constexpr):  # fmt: skip
    """``[J, R]`` squared distances of the rows of ``x`` and ``y`` (see the module docstring).

    ``xc = x - m`` ``[J, C]`` and ``yc = y - m`` ``[R, C]`` (float32, 0 outside the tile);
    ``x_cols`` / ``y_cols``: pointers to each row's first feature (column ``c`` at
    ``+ c * s_xc``), read again by the exact path; ``x_ok`` / ``y_ok``: the rows that count.
    """
    q1 = tl.where(x_ok, tl.sum(xc * xc, axis=1), 0.0)
    q2 = tl.where(y_ok, tl.sum(yc * yc, axis=1), 0.0)
    # NaN compares false: a NaN norm takes the exact path, as an infinite one does
    q_max = tl.max(tl.where(q1 == q1, q1, float("inf")), axis=0)
    q_max += tl.max(tl.where(q2 == q2, q2, float("inf")), axis=0)
    if q_max < EXPANSION_LIMIT / scale:  # (scale > 0; q_max * scale may overflow)
        xy = tl.dot(xc, tl.trans(yc), input_precision=PRECISION)
        d2 = tl.maximum(q1[:, None] + q2[None, :] - 2.0 * xy, 0.0)  # clamp the rounding
    else:
        d2 = tl.zeros([BLOCK_J, BLOCK_R], dtype=tl.float32)
        for c in range(C):
            xv = tl.load(x_cols + c * s_xc, mask=x_ok, other=0.0).to(tl.float32)
            yv = tl.load(y_cols + c * s_yc, mask=y_ok, other=0.0).to(tl.float32)
            diff = xv[:, None] - yv[None, :]
            d2 += diff * diff
    return d2


@triton.jit
def _gm_quad_kernel(
    out_ptr, base_ptr, e1_ptr, e2_ptr, m_ptr, s_ptr, m1_ptr, m2_ptr,
    N1, N2, C, scale,
    s_e1b, s_e1i, s_e1j, s_e1c, s_e2b, s_e2a, s_e2k, s_e2c,
    s_sb, s_sj, s_sk, s_ob, s_oi, s_oa, s_m1b, s_m2b,
    HAS_BASE: tl.constexpr, HAS_M1: tl.constexpr, HAS_M2: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_A: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Program ``(i, a-block, b)``: ``out[i, a] = base[i, a] + sum_{j,k} Ke(i,j,a,k) S[j,k]``.

    ``m_ptr``: the centre ``m [B, C]`` (float32); ``scale = log2(e) / sigma^2``:
    ``Ke = exp2(-d2 * scale)``. ``base`` (the node term, float32) shares ``out``'s strides.
    """
    i = tl.program_id(0)
    b = tl.program_id(2).to(tl.int64)
    offs_a = tl.program_id(1) * BLOCK_A + tl.arange(0, BLOCK_A)
    offs_r = tl.arange(0, BLOCK_A * BLOCK_K)
    r_a = tl.program_id(1) * BLOCK_A + offs_r // BLOCK_K  # node a of column r
    r_k = offs_r % BLOCK_K
    a_ok = offs_a < N2
    ra_ok = r_a < N2
    live_i = True
    if HAS_M1:
        live_i = tl.load(m1_ptr + b * s_m1b + i) != 0
    if HAS_M2:
        a_ok = a_ok & (tl.load(m2_ptr + b * s_m2b + offs_a, mask=a_ok, other=0) != 0)
        ra_ok = ra_ok & (tl.load(m2_ptr + b * s_m2b + r_a, mask=ra_ok, other=0) != 0)
    j_end = tl.where(live_i, N1, 0)  # a masked row i skips all work
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    centre = tl.load(m_ptr + b * C + offs_c, mask=c_ok, other=0.0)
    acc = tl.zeros([BLOCK_J, BLOCK_A * BLOCK_K], dtype=tl.float32)  # reduced once at the end
    for j0 in range(0, j_end, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        j_ok = (offs_j < N1) & (offs_j != i)
        if HAS_M1:
            j_ok = j_ok & (tl.load(m1_ptr + b * s_m1b + offs_j, mask=offs_j < N1, other=0) != 0)
        x_rows = e1_ptr + b * s_e1b + i * s_e1i + offs_j * s_e1j  # [J] row starts
        x_mask = (offs_j[:, None] < N1) & c_ok[None, :]
        x = tl.load(x_rows[:, None] + offs_c[None, :] * s_e1c, mask=x_mask, other=0.0)
        xc = tl.where(x_mask, x.to(tl.float32) - centre[None, :], 0.0)  # [J, C]
        for k0 in range(0, N2, BLOCK_K):
            col_k = k0 + r_k
            in_k = (r_a < N2) & (col_k < N2)
            col_ok = ra_ok & (col_k < N2) & (col_k != r_a)
            if HAS_M2:
                col_ok = col_ok & (tl.load(m2_ptr + b * s_m2b + col_k, mask=in_k, other=0) != 0)
            y_rows = e2_ptr + b * s_e2b + r_a * s_e2a + col_k * s_e2k  # [R]
            y_mask = in_k[:, None] & c_ok[None, :]
            y = tl.load(y_rows[:, None] + offs_c[None, :] * s_e2c, mask=y_mask, other=0.0)
            yc = tl.where(y_mask, y.to(tl.float32) - centre[None, :], 0.0)  # [R, C]
            d2 = _sq_dist(xc, yc, x_rows, y_rows, j_ok, col_ok, C, s_e1c, s_e2c, scale,
                          PRECISION, BLOCK_J, BLOCK_A * BLOCK_K)  # fmt: skip
            ok = j_ok[:, None] & col_ok[None, :]
            s = tl.load(
                s_ptr + b * s_sb + offs_j[:, None] * s_sj + col_k[None, :] * s_sk,
                mask=ok,
                other=0.0,
            ).to(tl.float32)
            # where, not a product with 0: a NaN of an excluded edge must not count
            acc += tl.where(ok, tl.exp2(-d2 * scale) * s, 0.0)
    # sum over j, then over the k of each a: [J, A * K] -> [A * K] -> [A, K] -> [A]
    total = tl.sum(tl.reshape(tl.sum(acc, axis=0), [BLOCK_A, BLOCK_K]), axis=1)
    if HAS_BASE:
        base = base_ptr + b * s_ob + i * s_oi + offs_a * s_oa
        total += tl.load(base, mask=offs_a < N2, other=0.0)
    total = tl.where(a_ok & live_i, total, 0.0)
    tl.store(
        out_ptr + b * s_ob + i * s_oi + offs_a * s_oa,
        total.to(out_ptr.dtype.element_ty),
        mask=offs_a < N2,
    )


@triton.jit
def _gm_edge_grad_kernel(
    out_ptr, e1_ptr, e2_ptr, m_ptr, s_ptr, g_ptr, m1_ptr, m2_ptr,
    N1, N2, C, scale, coef,
    s_e1b, s_e1i, s_e1j, s_e1c, s_e2b, s_e2a, s_e2k, s_e2c,
    s_sb, s_sj, s_sk, s_gb, s_gi, s_ga, s_ob, s_oi, s_oj, s_oc, s_m1b, s_m2b,
    HAS_M1: tl.constexpr, HAS_M2: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_A: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Program ``(i, j-block, b)``:
    ``out[i, j] = coef ((x - m) sum_{a,k} W - sum_{a,k} W (y - m))``.

    ``W = G[i, a] S[j, k] Ke(i, j, a, k)`` over ``j != i, k != a`` and live nodes;
    ``coef = -2 / sigma^2``.
    """
    i = tl.program_id(0)
    b = tl.program_id(2).to(tl.int64)
    offs_j = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_r = tl.arange(0, BLOCK_A * BLOCK_K)
    r_da = offs_r // BLOCK_K
    r_k = offs_r % BLOCK_K
    live_i = True
    if HAS_M1:
        live_i = tl.load(m1_ptr + b * s_m1b + i) != 0
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    centre = tl.load(m_ptr + b * C + offs_c, mask=c_ok, other=0.0)
    j_ok = (offs_j < N1) & (offs_j != i)
    if HAS_M1:
        j_ok = j_ok & (tl.load(m1_ptr + b * s_m1b + offs_j, mask=offs_j < N1, other=0) != 0)
    x_rows = e1_ptr + b * s_e1b + i * s_e1i + offs_j * s_e1j
    x_mask = (offs_j[:, None] < N1) & c_ok[None, :]
    x = tl.load(x_rows[:, None] + offs_c[None, :] * s_e1c, mask=x_mask, other=0.0)
    xc = tl.where(x_mask, x.to(tl.float32) - centre[None, :], 0.0)  # [J, C]
    wsum = tl.zeros([BLOCK_J], dtype=tl.float32)  # sum_{a,k} W
    wy = tl.zeros([BLOCK_J, BLOCK_C], dtype=tl.float32)  # sum_{a,k} W (y - m)
    for a0 in range(0, tl.where(live_i, N2, 0), BLOCK_A):
        r_a = a0 + r_da
        ra_ok = r_a < N2
        if HAS_M2:
            ra_ok = ra_ok & (tl.load(m2_ptr + b * s_m2b + r_a, mask=r_a < N2, other=0) != 0)
        g = tl.load(g_ptr + b * s_gb + i * s_gi + r_a * s_ga, mask=ra_ok, other=0.0)
        g = g.to(tl.float32)  # [R]: G[i, a] of each column
        for k0 in range(0, N2, BLOCK_K):
            col_k = k0 + r_k
            in_k = (r_a < N2) & (col_k < N2)
            col_ok = ra_ok & (col_k < N2) & (col_k != r_a)
            if HAS_M2:
                col_ok = col_ok & (tl.load(m2_ptr + b * s_m2b + col_k, mask=in_k, other=0) != 0)
            y_rows = e2_ptr + b * s_e2b + r_a * s_e2a + col_k * s_e2k
            y_mask = in_k[:, None] & c_ok[None, :]
            y = tl.load(y_rows[:, None] + offs_c[None, :] * s_e2c, mask=y_mask, other=0.0)
            yc = tl.where(y_mask, y.to(tl.float32) - centre[None, :], 0.0)  # [R, C]
            d2 = _sq_dist(xc, yc, x_rows, y_rows, j_ok, col_ok, C, s_e1c, s_e2c, scale,
                          PRECISION, BLOCK_J, BLOCK_A * BLOCK_K)  # fmt: skip
            ok = j_ok[:, None] & col_ok[None, :]
            s = tl.load(
                s_ptr + b * s_sb + offs_j[:, None] * s_sj + col_k[None, :] * s_sk,
                mask=ok,
                other=0.0,
            ).to(tl.float32)
            w = tl.where(ok, tl.exp2(-d2 * scale) * s * g[None, :], 0.0)  # [J, R]
            wsum += tl.sum(w, axis=1)
            wy += tl.dot(w, yc, input_precision=PRECISION)  # [J, C]
    grad = coef * (xc * wsum[:, None] - wy)
    tl.store(
        out_ptr + b * s_ob + i * s_oi + offs_j[:, None] * s_oj + offs_c[None, :] * s_oc,
        grad.to(out_ptr.dtype.element_ty),
        mask=(offs_j[:, None] < N1) & c_ok[None, :],
    )


# --- launchers


def _config(n_j: int, n_k: int, c: int, arch: Arch) -> dict:
    """Tile sizes and warps: J rows of e1 against R = A * K rows of e2, all C features in one
    tile (``tl.dot`` needs J, R, C >= 16).

    GPU: ``[J, R] = [16, 64]`` tiles over 4 warps (the accumulator, the distances, the dot
    result and the weights are such tiles: 8 values a thread each) keep both kernels within
    255 registers without spills (the compile report); shared memory holds only the dot
    operands and layout conversions (about 10 KB), so one config fits every arch from
    sm_80 on. The interpreter: wide tiles, few programs, since its cost is per op, not per
    element.
    """
    caps = TILE_CAPS["cpu" if arch.interpreted else "gpu"]
    n_j, n_k = max(n_j, 1), max(n_k, 1)  # an empty graph launches nothing; tiles stay valid
    block_c = max(16, triton.next_power_of_2(c))
    rows = max(16, min(caps["rows"], caps["elems"] // block_c))
    block_k = min(triton.next_power_of_2(n_k), rows)
    block_a = max(1, min(rows // block_k, triton.next_power_of_2(n_k)))
    block_a = max(block_a, 16 // block_k)  # R >= 16 for tiny graphs
    cap_j = caps["j"] if block_c <= 64 else caps["j"] // 2
    block_j = max(16, min(triton.next_power_of_2(n_j), cap_j))
    cfg = {
        "BLOCK_J": block_j, "BLOCK_A": block_a, "BLOCK_K": block_k, "BLOCK_C": block_c,
        "num_warps": caps["warps"], "num_stages": 1,
    }  # fmt: skip
    if not arch.interpreted:
        # without a register cap ptxas may aim for 2 blocks per SM and spill (sm_89)
        cfg["maxnreg"] = 255
    return cfg


# Tile caps. Tests shrink the interpreter's to exercise every loop (several j-, a- and k-blocks)
# on tiny graphs.
TILE_CAPS = {
    "gpu": {"rows": 64, "j": 16, "elems": 4096, "warps": 4},
    "cpu": {"rows": 1024, "j": 128, "elems": 1 << 20, "warps": 4},
}


def _precision() -> str:
    """tf32x3 (three TF32 products: float32-level accuracy on tensor cores) unless TF32
    matmuls are allowed (``torch.backends.cuda.matmul.allow_tf32``): then one TF32 pass."""
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"


def _mask_arg(mask: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A uint8 copy of a bool mask and its batch stride (a dummy pointer when absent)."""
    if mask is None:
        return like, 0
    m = mask.to(torch.uint8).contiguous()
    return m, m.stride(0)


def _check_c(c: int) -> None:
    if c > MAX_C:
        raise ValueError(f"{OP}: the Triton kernel supports edge features c <= {MAX_C}, got {c}")


def _scale(sigma: float, k: float) -> float:
    """``k / sigma^2`` kept finite in float32, so that a zero distance still gives
    ``exp(-0) = 1`` (not ``0 * inf = nan``) for a vanishing ``sigma``."""
    return max(-FLT_MAX, min(FLT_MAX, k / (sigma * sigma)))


def _centre(e1, e2, mask1, mask2) -> torch.Tensor:
    """``m [B, c]`` float32: the mean feature of the live edges of both graphs (0 when that
    is not finite). Any ``m`` gives the same distances; one near the features keeps the
    expanded form accurate (see ``_sq_dist``)."""
    total = count = None
    for e, mask in ((e1, mask1), (e2, mask2)):
        B, n = e.shape[:2]
        live = torch.ones(B, n, n, 1, dtype=torch.bool, device=e.device)
        if mask is not None:
            live = (mask[:, :, None] & mask[:, None, :])[..., None]
        part = torch.where(live, e.float(), 0.0).sum((1, 2))  # [B, c]
        num = live.sum((1, 2)).float()  # [B, 1]
        total = part if total is None else total + part
        count = num if count is None else count + num
    m = total / count.clamp_min(1.0)
    return torch.where(torch.isfinite(m), m, 0.0).contiguous()


def _quad(base, e1, e2, centre, s, mask1, mask2, sigma, out_dtype):
    """Launch ``_gm_quad_kernel``: ``base + Q(s)`` as ``[B, n1, n2]`` in ``out_dtype``.

    ``e1``/``e2`` may be transposed views: strides are passed. ``base`` None: the
    quadratic term only.
    """
    B, n1, _, c = e1.shape
    n2 = e2.shape[1]
    _check_c(c)
    out = torch.empty(B, n1, n2, dtype=out_dtype, device=e1.device)
    if base is not None:
        base = base.float().contiguous()  # same strides as out
    m1, s_m1 = _mask_arg(mask1, out)
    m2, s_m2 = _mask_arg(mask2, out)
    cfg = _config(n1, n2, c, arch_for(e1.device))
    if out.numel() > 0:
        grid = (n1, triton.cdiv(n2, cfg["BLOCK_A"]), B)
        launch(
            _gm_quad_kernel, grid,
            out, out if base is None else base, e1, e2, centre, s, m1, m2,
            n1, n2, c, _scale(sigma, LOG2E),
            *e1.stride(), *e2.stride(), *s.stride(), *out.stride(), s_m1, s_m2,
            HAS_BASE=base is not None, HAS_M1=mask1 is not None, HAS_M2=mask2 is not None,
            PRECISION=_precision(), device=e1.device, **cfg,
        )  # fmt: skip
    return out


def _edge_grad(e1, e2, centre, s, g, mask1, mask2, sigma):
    """Launch ``_gm_edge_grad_kernel``: the gradient w.r.t. ``e1`` ``[B, n1, n1, c]``."""
    B, n1, _, c = e1.shape
    n2 = e2.shape[1]
    _check_c(c)
    out = torch.empty(e1.shape, dtype=e1.dtype, device=e1.device)
    m1, s_m1 = _mask_arg(mask1, out)
    m2, s_m2 = _mask_arg(mask2, out)
    cfg = _config(n1, n2, c, arch_for(e1.device))
    if out.numel() > 0:
        grid = (n1, triton.cdiv(n1, cfg["BLOCK_J"]), B)
        launch(
            _gm_edge_grad_kernel, grid,
            out, e1, e2, centre, s, g, m1, m2,
            n1, n2, c, _scale(sigma, LOG2E), _scale(sigma, -2.0),
            *e1.stride(), *e2.stride(), *s.stride(), *g.stride(), *out.stride(), s_m1, s_m2,
            HAS_M1=mask1 is not None, HAS_M2=mask2 is not None, PRECISION=_precision(),
            device=e1.device, **cfg,
        )  # fmt: skip
    return out


def _forward(node1, node2, edge1, edge2, assign, sigma, mask1, mask2):
    """Triton forward: ``[B, n1, n2]`` in ``node1.dtype``."""
    edge1, edge2, assign = edge1.contiguous(), edge2.contiguous(), assign.contiguous()
    # node term by cuBLAS in float32, added inside the kernel before the single rounding
    base = torch.bmm(node1.float(), node2.float().transpose(1, 2))
    centre = _centre(edge1, edge2, mask1, mask2)
    return _quad(base, edge1, edge2, centre, assign, mask1, mask2, sigma, node1.dtype)


def _backward(grad, node1, node2, edge1, edge2, assign, sigma, mask1, mask2):
    """Triton backward: grads w.r.t. ``node1, node2, edge1, edge2, assign``."""
    node1, node2, edge1, edge2, assign = (
        t.contiguous() for t in (node1, node2, edge1, edge2, assign)
    )
    g = grad.float()
    if mask1 is not None:
        g = torch.where(mask1[:, :, None], g, 0.0)
    if mask2 is not None:
        g = torch.where(mask2[:, None, :], g, 0.0)
    g = g.contiguous()  # masked G, float32 [B, n1, n2]
    grad_node1 = torch.bmm(g, node2.float()).to(node1.dtype)
    grad_node2 = torch.bmm(g.transpose(1, 2), node1.float()).to(node2.dtype)
    # grad_S[j, k] = sum_{i, a} Ke(i, j, a, k) G[i, a]: forward kernel on e^T, G as "S"
    centre = _centre(edge1, edge2, mask1, mask2)
    e1t, e2t = edge1.transpose(1, 2), edge2.transpose(1, 2)
    grad_assign = _quad(None, e1t, e2t, centre, g, mask1, mask2, sigma, assign.dtype)
    grad_edge1 = _edge_grad(edge1, edge2, centre, assign, g, mask1, mask2, sigma)
    grad_edge2 = _edge_grad(
        edge2, edge1, centre, assign.transpose(1, 2), g.transpose(1, 2), mask2, mask1, sigma
    )
    return grad_node1, grad_node2, grad_edge1, grad_edge2, grad_assign


# --- registration


def _use_triton(t: torch.Tensor) -> bool:
    return resolve(t.device, OP) == "triton" and t.dtype != torch.float64


@torch.library.custom_op("gmpvis::gm_affinity", mutates_args=())
def _gm_affinity_op(
    node1: torch.Tensor,
    node2: torch.Tensor,
    edge1: torch.Tensor,
    edge2: torch.Tensor,
    assign: torch.Tensor,
    sigma: float,
    mask1: torch.Tensor | None,
    mask2: torch.Tensor | None,
) -> torch.Tensor:
    if _use_triton(node1):
        return _forward(node1, node2, edge1, edge2, assign, sigma, mask1, mask2)
    return reference.gm_affinity(
        node1, node2, edge1, edge2, assign, sigma=sigma, mask1=mask1, mask2=mask2
    )


@_gm_affinity_op.register_fake
def _(node1, node2, edge1, edge2, assign, sigma, mask1, mask2):
    return node1.new_empty(node1.shape[0], node1.shape[1], node2.shape[1])


@torch.library.custom_op("gmpvis::gm_affinity_backward", mutates_args=())
def _gm_affinity_backward_op(
    grad: torch.Tensor,
    node1: torch.Tensor,
    node2: torch.Tensor,
    edge1: torch.Tensor,
    edge2: torch.Tensor,
    assign: torch.Tensor,
    sigma: float,
    mask1: torch.Tensor | None,
    mask2: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if _use_triton(node1):
        return _backward(grad, node1, node2, edge1, edge2, assign, sigma, mask1, mask2)
    with autograd_enabled():
        leaves = [t.detach().requires_grad_() for t in (node1, node2, edge1, edge2, assign)]
        out = reference.gm_affinity(*leaves, sigma=sigma, mask1=mask1, mask2=mask2)
        grads = torch.autograd.grad(out, leaves, grad)
    return tuple(g.contiguous() for g in grads)


@_gm_affinity_backward_op.register_fake
def _(grad, node1, node2, edge1, edge2, assign, sigma, mask1, mask2):
    # contiguous, as both backends return them (whatever the inputs' strides)
    return tuple(t.new_empty(t.shape) for t in (node1, node2, edge1, edge2, assign))


def _setup_context(ctx, inputs, output):
    node1, node2, edge1, edge2, assign, sigma, mask1, mask2 = inputs
    ctx.save_for_backward(node1, node2, edge1, edge2, assign, mask1, mask2)
    ctx.sigma = sigma


def _autograd_backward(ctx, grad):
    node1, node2, edge1, edge2, assign, mask1, mask2 = ctx.saved_tensors
    grads = torch.ops.gmpvis.gm_affinity_backward(
        grad, node1, node2, edge1, edge2, assign, ctx.sigma, mask1, mask2
    )
    return (*grads, None, None, None)


_gm_affinity_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# --- public API


def gm_affinity(
    node1: torch.Tensor,
    node2: torch.Tensor,
    edge1: torch.Tensor,
    edge2: torch.Tensor,
    assign: torch.Tensor,
    *,
    sigma: float,
    mask1: torch.Tensor | None = None,
    mask2: torch.Tensor | None = None,
) -> torch.Tensor:
    """Graph-matching affinity ``node1 @ node2^T + Q(assign)``: ``[B, n1, n2]``.

    Args:
        node1: ``[B, n1, d]``, node2: ``[B, n2, d]`` node embeddings.
        edge1: ``[B, n1, n1, c]``, edge2: ``[B, n2, n2, c]``: features of edge ``(i, j)``.
        assign: ``[B, n1, n2]`` current (soft) assignment ``S``.
        sigma: bandwidth (> 0) of the Gaussian edge affinity.
        mask1 / mask2: ``[B, n1]`` / ``[B, n2]`` bool, True for real nodes; masked nodes
            take no part and their output rows/columns are 0.

    All float tensors share one dtype (float16, bfloat16, float32 or float64) and device.
    ``Q[i, a] = sum_{j != i, k != a} exp(-||edge1[i,j] - edge2[a,k]||^2 / sigma^2) S[j, k]``.
    """
    dims: dict[str, int] = {}
    check_tensor(OP, "node1", node1, ("B", "n1", "d"), dims)
    kw = {"dtypes": (node1.dtype,), "device": node1.device}
    check_tensor(OP, "node2", node2, ("B", "n2", "d"), dims, **kw)
    check_tensor(OP, "edge1", edge1, ("B", "n1", "n1", "c"), dims, **kw)
    check_tensor(OP, "edge2", edge2, ("B", "n2", "n2", "c"), dims, **kw)
    check_tensor(OP, "assign", assign, ("B", "n1", "n2"), dims, **kw)
    mkw = {"dtypes": (torch.bool,), "device": node1.device}
    if mask1 is not None:
        check_tensor(OP, "mask1", mask1, ("B", "n1"), dims, **mkw)
    if mask2 is not None:
        check_tensor(OP, "mask2", mask2, ("B", "n2"), dims, **mkw)
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0:
        raise ValueError(f"{OP}: sigma must be a positive number, got {sigma!r}")
    if sigma == float("inf"):
        raise ValueError(f"{OP}: sigma must be finite, got {sigma!r}")
    node1, node2, edge1, edge2, assign = cast_float32(
        node1.device, node1, node2, edge1, edge2, assign
    )  # autocast: float32 (see _amp)
    return torch.ops.gmpvis.gm_affinity(
        node1, node2, edge1, edge2, assign, float(sigma), mask1, mask2
    )
