"""Graph-matching affinity ``gm_affinity``: Triton kernels, launchers, registration, autograd.

``out[b, i, a] = node1[b, i] . node2[b, a] + Q[b, i, a]`` with the quadratic term

    Q[i, a] = sum_{j != i, k != a} Ke(i, j, a, k) S[j, k],
    Ke(i, j, a, k) = exp(-||e1[i, j] - e2[a, k]||^2 / sigma^2)

computed on the fly: for a fixed ``(i, a)`` the squared distances over ``(j, k)`` are
``|e1_ij|^2 + |e2_ak|^2 - 2 e1_i @ e2_a^T`` (clamped at 0), one small GEMM; a program owns
one ``i`` and a block of ``a`` and issues one ``tl.dot`` of a ``[J, C]`` tile of ``e1[i]``
with a ``[C, A*K]`` tile of ``e2[a-block]``. Memory is O(n1 * n2) besides the inputs (plus
the squared norms ``[B, n, n]``); the ``n1^2 n2^2`` tensor (or the dense ``M`` of
``reference.gm_affinity_dense``) never exists. The node term is one float32 ``bmm`` added
inside the kernel before the single rounding to the output dtype.

Backward, with ``G = grad_out`` masked and ``W(i,j,a,k) = G[i,a] S[j,k] Ke(i,j,a,k)``:

* ``grad_node1 = G @ node2``, ``grad_node2 = G^T @ node1`` (cuBLAS / torch matmuls);
* ``grad_S[j, k] = sum_{i != j, a != k} Ke G[i, a]``: the forward quadratic kernel run on the
  transposed edges ``e1[i, j] -> e1^T[j, i]`` (a stride swap) with ``G`` in place of ``S``;
* ``grad_e1[i, j] = -2/sigma^2 (e1_ij sum_{a,k} W - sum_{a,k} W e2_ak)``: one program per
  ``(i, block of j)`` loops over blocks of ``a`` (a second ``tl.dot``:
  ``W [J, A*K] @ e2 [A*K, C]``);
* ``grad_e2`` is the same kernel with the graphs swapped (``e2, e1, S^T, G^T``), no sign
  change: ``-2/sigma^2 (e2_ak sum W - sum W e1_ij) = 2/sigma^2 sum W (e1_ij - e2_ak)``.

Every kernel accumulates in float32; inputs float32/float16/bfloat16 (float64 runs the
reference). Triton needs ``c <= 256`` (one register tile of edge features). The expanded
distance has an absolute error of ~1e-7 * |e|^2 (float32), negligible unless ``sigma^2``
is that small.
"""

import torch
import triton
import triton.language as tl

from gmpvis.kernels import reference
from gmpvis.kernels._backend import autograd_enabled, resolve
from gmpvis.kernels._checks import check_tensor

OP = "gm_affinity"
MAX_C = 256
LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e))
FLT_MAX = 3.0e38  # just below float32's largest finite value


# --- Triton kernels
# Tiles: a block of BLOCK_J edge rows e1[i, j] ([J, C]) against R = BLOCK_A * BLOCK_K edge rows
# e2[a, k] of BLOCK_A nodes a at once ([R, C], column r <-> (a, k) = (r // BLOCK_K, r % BLOCK_K)),
# so one tl.dot covers several a and the interpreter runs few, wide programs.


@triton.jit
def _gm_quad_kernel(
    out_ptr, base_ptr, e1_ptr, e2_ptr, q1_ptr, q2_ptr, s_ptr, m1_ptr, m2_ptr,
    N1, N2, C, scale,
    s_e1b, s_e1i, s_e1j, s_e1c, s_e2b, s_e2a, s_e2k, s_e2c,
    s_q1b, s_q1i, s_q1j, s_q2b, s_q2a, s_q2k,
    s_sb, s_sj, s_sk, s_ob, s_oi, s_oa, s_m1b, s_m2b,
    HAS_BASE: tl.constexpr, HAS_M1: tl.constexpr, HAS_M2: tl.constexpr,
    BLOCK_J: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Program ``(i, a-block, b)``: ``out[i, a] = base[i, a] + sum_{j,k} Ke(i,j,a,k) S[j,k]``.

    ``q1 = |e1|^2 [B, n1, n1]``, ``q2 = |e2|^2`` (float32, computed once by the launcher);
    ``scale = log2(e) / sigma^2``: ``Ke = exp2(-d2 * scale)``. ``base`` (the node term,
    float32) shares ``out``'s strides.
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
    acc = tl.zeros([BLOCK_J, BLOCK_A * BLOCK_K], dtype=tl.float32)  # reduced once at the end
    for j0 in range(0, j_end, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        j_ok = (offs_j < N1) & (offs_j != i)
        if HAS_M1:
            j_ok = j_ok & (tl.load(m1_ptr + b * s_m1b + offs_j, mask=offs_j < N1, other=0) != 0)
        x = tl.load(
            e1_ptr + b * s_e1b + i * s_e1i + offs_j[:, None] * s_e1j + offs_c[None, :] * s_e1c,
            mask=(offs_j[:, None] < N1) & c_ok[None, :],
            other=0.0,
        ).to(tl.float32)  # [J, C]
        sq1 = tl.load(q1_ptr + b * s_q1b + i * s_q1i + offs_j * s_q1j, mask=offs_j < N1, other=0.0)
        for k0 in range(0, N2, BLOCK_K):
            col_k = k0 + r_k
            in_k = (r_a < N2) & (col_k < N2)
            col_ok = ra_ok & (col_k < N2) & (col_k != r_a)
            if HAS_M2:
                col_ok = col_ok & (tl.load(m2_ptr + b * s_m2b + col_k, mask=in_k, other=0) != 0)
            y = tl.load(
                e2_ptr
                + b * s_e2b
                + r_a[:, None] * s_e2a
                + col_k[:, None] * s_e2k
                + offs_c[None, :] * s_e2c,
                mask=in_k[:, None] & c_ok[None, :],
                other=0.0,
            ).to(tl.float32)  # [R, C]
            sq2 = tl.load(q2_ptr + b * s_q2b + r_a * s_q2a + col_k * s_q2k, mask=in_k, other=0.0)
            xy = tl.dot(x, tl.trans(y), input_precision="ieee")  # [J, R]
            d2 = tl.maximum(sq1[:, None] + sq2[None, :] - 2.0 * xy, 0.0)  # clamp rounding
            s = tl.load(
                s_ptr + b * s_sb + offs_j[:, None] * s_sj + col_k[None, :] * s_sk,
                mask=j_ok[:, None] & col_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            acc += tl.exp2(-d2 * scale) * s
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
    out_ptr, e1_ptr, e2_ptr, q1_ptr, q2_ptr, s_ptr, g_ptr, m1_ptr, m2_ptr,
    N1, N2, C, scale, coef,
    s_e1b, s_e1i, s_e1j, s_e1c, s_e2b, s_e2a, s_e2k, s_e2c,
    s_q1b, s_q1i, s_q1j, s_q2b, s_q2a, s_q2k,
    s_sb, s_sj, s_sk, s_gb, s_gi, s_ga, s_ob, s_oi, s_oj, s_oc, s_m1b, s_m2b,
    HAS_M1: tl.constexpr, HAS_M2: tl.constexpr,
    BLOCK_J: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Program ``(i, j-block, b)``: ``out[i, j] = coef (e1_ij sum_{a,k} W - sum_{a,k} W e2_ak)``.

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
    j_ok = (offs_j < N1) & (offs_j != i)
    if HAS_M1:
        j_ok = j_ok & (tl.load(m1_ptr + b * s_m1b + offs_j, mask=offs_j < N1, other=0) != 0)
    x = tl.load(
        e1_ptr + b * s_e1b + i * s_e1i + offs_j[:, None] * s_e1j + offs_c[None, :] * s_e1c,
        mask=(offs_j[:, None] < N1) & c_ok[None, :],
        other=0.0,
    ).to(tl.float32)  # [J, C]
    sq1 = tl.load(q1_ptr + b * s_q1b + i * s_q1i + offs_j * s_q1j, mask=offs_j < N1, other=0.0)
    wsum = tl.zeros([BLOCK_J], dtype=tl.float32)  # sum_{a,k} W
    wy = tl.zeros([BLOCK_J, BLOCK_C], dtype=tl.float32)  # sum_{a,k} W e2_ak
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
            y = tl.load(
                e2_ptr
                + b * s_e2b
                + r_a[:, None] * s_e2a
                + col_k[:, None] * s_e2k
                + offs_c[None, :] * s_e2c,
                mask=in_k[:, None] & c_ok[None, :],
                other=0.0,
            ).to(tl.float32)  # [R, C]
            sq2 = tl.load(q2_ptr + b * s_q2b + r_a * s_q2a + col_k * s_q2k, mask=in_k, other=0.0)
            xy = tl.dot(x, tl.trans(y), input_precision="ieee")  # [J, R]
            d2 = tl.maximum(sq1[:, None] + sq2[None, :] - 2.0 * xy, 0.0)
            s = tl.load(
                s_ptr + b * s_sb + offs_j[:, None] * s_sj + col_k[None, :] * s_sk,
                mask=j_ok[:, None] & col_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            w = tl.exp2(-d2 * scale) * s * g[None, :]  # [J, R]
            wsum += tl.sum(w, axis=1)
            wy += tl.dot(w, y, input_precision="ieee")  # [J, C]
    grad = coef * (x * wsum[:, None] - wy)
    tl.store(
        out_ptr + b * s_ob + i * s_oi + offs_j[:, None] * s_oj + offs_c[None, :] * s_oc,
        grad.to(out_ptr.dtype.element_ty),
        mask=(offs_j[:, None] < N1) & c_ok[None, :],
    )


# --- launchers


# Tile caps. GPU: [R, C] and [J, R] tiles of <= 4096 float32 each stay in registers.
# CPU (the interpreter): wide tiles, few programs, since its cost is per op, not per element.
# Tests shrink these to exercise every loop (several j-, a- and k-blocks) on tiny graphs.
TILE_CAPS = {
    "gpu": {"rows": 128, "j": 32, "elems": 4096},
    "cpu": {"rows": 1024, "j": 128, "elems": 1 << 20},
}


def _blocks(n_j: int, n_k: int, c: int, device: torch.device) -> dict[str, int]:
    """Tile sizes: J rows of e1 against R = A * K rows of e2, all C features in one tile.

    ``tl.dot`` needs J, R, C >= 16.
    """
    caps = TILE_CAPS["gpu" if device.type == "cuda" else "cpu"]
    block_c = max(16, triton.next_power_of_2(c))
    rows = max(16, min(caps["rows"], caps["elems"] // block_c))
    block_k = min(triton.next_power_of_2(n_k), rows)
    block_a = max(1, min(rows // block_k, triton.next_power_of_2(n_k)))
    block_a = max(block_a, 16 // block_k)  # R >= 16 for tiny graphs
    cap_j = caps["j"] if block_c <= 64 else caps["j"] // 2
    block_j = max(16, min(triton.next_power_of_2(n_j), cap_j))
    return {"BLOCK_J": block_j, "BLOCK_A": block_a, "BLOCK_K": block_k, "BLOCK_C": block_c}


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


def _sqnorm(e: torch.Tensor) -> torch.Tensor:
    """``|e[b, i, j]|^2`` in float32: ``[B, n, n]`` (O(n^2 c), once per launch)."""
    return e.float().pow(2).sum(-1)


def _quad(base, e1, e2, q1, q2, s, mask1, mask2, sigma, out_dtype):
    """Launch ``_gm_quad_kernel``: ``base + Q(s)`` as ``[B, n1, n2]`` in ``out_dtype``.

    ``e1``/``e2`` (and their norms ``q1``/``q2``) may be transposed views: strides are
    passed. ``base`` None: the quadratic term only.
    """
    B, n1, _, c = e1.shape
    n2 = e2.shape[1]
    _check_c(c)
    out = torch.empty(B, n1, n2, dtype=out_dtype, device=e1.device)
    if base is not None:
        base = base.float().contiguous()  # same strides as out
    m1, s_m1 = _mask_arg(mask1, out)
    m2, s_m2 = _mask_arg(mask2, out)
    blocks = _blocks(n1, n2, c, e1.device)
    if out.numel() > 0:
        grid = (n1, triton.cdiv(n2, blocks["BLOCK_A"]), B)
        _gm_quad_kernel[grid](
            out, out if base is None else base, e1, e2, q1, q2, s, m1, m2,
            n1, n2, c, _scale(sigma, LOG2E),
            *e1.stride(), *e2.stride(), *q1.stride(), *q2.stride(), *s.stride(), *out.stride(),
            s_m1, s_m2,
            HAS_BASE=base is not None, HAS_M1=mask1 is not None, HAS_M2=mask2 is not None,
            **blocks,
        )  # fmt: skip
    return out


def _edge_grad(e1, e2, q1, q2, s, g, mask1, mask2, sigma):
    """Launch ``_gm_edge_grad_kernel``: the gradient w.r.t. ``e1`` ``[B, n1, n1, c]``."""
    B, n1, _, c = e1.shape
    n2 = e2.shape[1]
    _check_c(c)
    out = torch.empty(e1.shape, dtype=e1.dtype, device=e1.device)
    m1, s_m1 = _mask_arg(mask1, out)
    m2, s_m2 = _mask_arg(mask2, out)
    blocks = _blocks(n1, n2, c, e1.device)
    if out.numel() > 0:
        grid = (n1, triton.cdiv(n1, blocks["BLOCK_J"]), B)
        _gm_edge_grad_kernel[grid](
            out, e1, e2, q1, q2, s, g, m1, m2,
            n1, n2, c, _scale(sigma, LOG2E), _scale(sigma, -2.0),
            *e1.stride(), *e2.stride(), *q1.stride(), *q2.stride(), *s.stride(), *g.stride(),
            *out.stride(), s_m1, s_m2,
            HAS_M1=mask1 is not None, HAS_M2=mask2 is not None, **blocks,
        )  # fmt: skip
    return out


def _forward(node1, node2, edge1, edge2, assign, sigma, mask1, mask2):
    """Triton forward on contiguous tensors: ``[B, n1, n2]`` in ``node1.dtype``."""
    edge1, edge2, assign = edge1.contiguous(), edge2.contiguous(), assign.contiguous()
    # node term by cuBLAS in float32, added inside the kernel before the single rounding
    base = torch.bmm(node1.float(), node2.float().transpose(1, 2))
    q1, q2 = _sqnorm(edge1), _sqnorm(edge2)
    return _quad(base, edge1, edge2, q1, q2, assign, mask1, mask2, sigma, node1.dtype)


def _backward(grad, node1, node2, edge1, edge2, assign, sigma, mask1, mask2):
    """Triton backward: grads w.r.t. ``node1, node2, edge1, edge2, assign``."""
    node1, node2, edge1, edge2, assign = (
        t.contiguous() for t in (node1, node2, edge1, edge2, assign)
    )
    g = grad.float()
    if mask1 is not None:
        g = g * mask1[:, :, None]
    if mask2 is not None:
        g = g * mask2[:, None, :]
    g = g.contiguous()  # masked G, float32 [B, n1, n2]
    grad_node1 = torch.bmm(g, node2.float()).to(node1.dtype)
    grad_node2 = torch.bmm(g.transpose(1, 2), node1.float()).to(node2.dtype)
    # grad_S[j, k] = sum_{i, a} Ke(i, j, a, k) G[i, a]: forward kernel on e^T, G as "S"
    q1, q2 = _sqnorm(edge1), _sqnorm(edge2)
    e1t, e2t, q1t, q2t = (t.transpose(1, 2) for t in (edge1, edge2, q1, q2))
    grad_assign = _quad(None, e1t, e2t, q1t, q2t, g, mask1, mask2, sigma, assign.dtype)
    grad_edge1 = _edge_grad(edge1, edge2, q1, q2, assign, g, mask1, mask2, sigma)
    grad_edge2 = _edge_grad(
        edge2, edge1, q2, q1, assign.transpose(1, 2), g.transpose(1, 2), mask2, mask1, sigma
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
    return tuple(torch.empty_like(t) for t in (node1, node2, edge1, edge2, assign))


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
    return torch.ops.gmpvis.gm_affinity(
        node1, node2, edge1, edge2, assign, float(sigma), mask1, mask2
    )
