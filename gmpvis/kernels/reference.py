"""Pure-PyTorch references of the fused kernels.

These are the ground truth the Triton kernels are tested against and the CPU
implementation of every registered op. They are differentiable by autograd, run in
float64 for ``gradcheck``, and accumulate half-precision inputs in float32.

Non-finite inputs, the same on both backends (defined here once, tested per op):

* NaN propagates: a NaN in an input that takes part makes NaN every output element
  computed from it; an entry that takes no part (masked rows, columns or nodes, the
  excluded ``j == i`` edges, corners outside the image) never leaks into the output.
  A NaN sampling location or offset makes its samples NaN (never an index).
* +-inf follows each op's arithmetic, with these definitions: an infinite (or any
  far-away) sampling location or offset lies outside the image and contributes 0;
  ``sinkhorn`` caps ``+inf`` logits at 1e30 and reads ``-inf`` as "impossible"; an
  infinite ``gm_affinity`` distance gives weight 0.

Nothing raises on non-finite values: a check would cost a device sync per call (and break
CUDA graph capture).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half inputs accumulate in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# ----------------------------------------------------------------------------- ms_deform_attn


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention (Deformable DETR semantics).

    Args:
        value: ``[B, S, H, D]`` with ``S = sum_l H_l * W_l``.
        spatial_shapes: ``[L, 2]`` int64, ``(H_l, W_l)`` per level.
        level_start_index: ``[L]`` int64, offset of each level in ``S``.
        sampling_locations: ``[B, Q, H, L, P, 2]`` as ``(x, y)`` in ``[0, 1]``.
        attention_weights: ``[B, Q, H, L, P]``.

    Returns:
        ``[B, Q, H * D]``: per head, ``sum_{l,p} w * bilinear(value_l, loc)`` with zero
        padding and ``align_corners=False``.
    """
    B, S, H, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    dtype = _compute_dtype(value, sampling_locations, attention_weights)
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = [int(s) for s in level_start_index.tolist()]
    loc = sampling_locations.to(dtype)
    # Far locations (inf included) lie outside: clamping to [-1, 2] keeps every sample that
    # touches the image and keeps grid_sample's index arithmetic finite. NaN: see below.
    nan_loc = loc.isnan().any(-1)  # [B, Q, H, L, P]
    loc = torch.where(loc.isnan(), -1.0, loc).clamp(-1.0, 2.0)
    grids = 2.0 * loc - 1.0  # grid_sample expects [-1, 1]
    samples = []
    for level, ((h, w), start) in enumerate(zip(shapes, starts, strict=True)):
        # [B, h*w, H, D] -> [B*H, D, h, w]
        v = value[:, start : start + h * w].to(dtype).permute(0, 2, 3, 1).reshape(B * H, D, h, w)
        # [B, Q, H, P, 2] -> [B*H, Q, P, 2]
        g = grids[:, :, :, level].transpose(1, 2).reshape(B * H, Q, P, 2)
        samples.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # [B*H, D, Q, P]
    stacked = torch.stack(samples, dim=-2).flatten(-2)  # [B*H, D, Q, L*P]
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(B * H, 1, Q, L * P)
    out = (stacked * weights).sum(-1).view(B, H, D, Q).permute(0, 3, 1, 2)  # [B, Q, H, D]
    # a NaN location makes its (query, head) output NaN
    out = torch.where(nan_loc.flatten(3).any(-1)[..., None], float("nan"), out)
    return out.reshape(B, Q, H * D).to(value.dtype).contiguous()


def ms_deform_attn_fused(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_logits: torch.Tensor,
) -> torch.Tensor:
    """:func:`ms_deform_attn` with ``attention_logits [B,Q,H,L,P]`` softmaxed over ``L*P``."""
    B, Q, H, L, P = attention_logits.shape
    dtype = _compute_dtype(attention_logits)
    weights = attention_logits.to(dtype).reshape(B, Q, H, L * P).softmax(-1).view(B, Q, H, L, P)
    return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, weights)


def sampling_locations(
    spatial_shapes: torch.Tensor, reference_points: torch.Tensor, sampling_offsets: torch.Tensor
) -> torch.Tensor:
    """Deformable DETR's sampling locations ``[B, Q, H, L, P, 2]`` (float32 or float64).

    ``reference_points [B, Q, L, 2]`` (x, y): ``ref + offset / (W_l, H_l)``;
    ``[B, Q, L, 4]`` (cx, cy, w, h): ``ref_xy + offset / P * ref_wh / 2``.
    """
    dtype = torch.promote_types(reference_points.dtype, torch.float32)
    dtype = torch.promote_types(dtype, sampling_offsets.dtype)
    off = sampling_offsets.to(dtype)
    ref = reference_points.to(dtype)[:, :, None, :, None, :]
    if ref.shape[-1] == 2:
        size = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1).to(dtype)
        return ref + off / size[None, None, None, :, None, :]
    return ref[..., :2] + off * (0.5 / off.shape[4]) * ref[..., 2:]


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
    """:func:`ms_deform_attn` (or ``_fused``) at :func:`sampling_locations`."""
    loc = sampling_locations(spatial_shapes, reference_points, sampling_offsets)
    fn = ms_deform_attn_fused if fused else ms_deform_attn
    return fn(value, spatial_shapes, level_start_index, loc, attention)


# ----------------------------------------------------------------------------- deform_conv2d


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def bilinear_zero_pad(image: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``image [N, C, H, W]`` at pixel coordinates ``y, x [N, P]``.

    Corners outside the image contribute 0 (torchvision's DCN convention).
    Returns ``[N, C, P]``.
    """
    N, C, H, W = image.shape
    flat = image.flatten(2)
    # NaN coordinates make their samples NaN; far ones (inf included) lie outside: clamping
    # to [-2, size + 1] keeps every corner that touches the image and the indices finite.
    bad = y.isnan() | x.isnan()
    y = torch.where(bad, -2.0, y).clamp(-2.0, H + 1.0)
    x = torch.where(bad, -2.0, x).clamp(-2.0, W + 1.0)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    out = torch.where(bad, float("nan"), 0.0)[:, None, :].expand(N, C, -1).to(image.dtype)
    for dy, dx, weight in (
        (0, 0, (1 - ly) * (1 - lx)),
        (0, 1, (1 - ly) * lx),
        (1, 0, ly * (1 - lx)),
        (1, 1, ly * lx),
    ):
        yi, xi = y0 + dy, x0 + dx
        valid = (yi >= 0) & (yi <= H - 1) & (xi >= 0) & (xi <= W - 1)
        index = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long()
        corner = flat.gather(2, index[:, None, :].expand(N, C, -1))
        # where, not a product with 0: the clamped stand-in pixel of an outside corner may
        # be NaN, and it takes no part
        out = out + torch.where(valid[:, None, :], corner * weight[:, None, :], 0.0)
    return out


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
        offset: ``[N, 2 * G_off * kh * kw, H_out, W_out]``; channel ``2 * (g * K + k)`` is
            the y offset and ``2 * (g * K + k) + 1`` the x offset of kernel tap
            ``k = i * kw + j`` in offset group ``g``.
        weight: ``[C_out, C_in / groups, kh, kw]``.
        bias: ``[C_out]`` or None.
        mask: ``[N, G_off * kh * kw, H_out, W_out]`` or None (all ones).

    Returns:
        ``[N, C_out, H_out, W_out]``.
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    N, C_in, H, W = input.shape
    C_out, C_in_g, kh, kw = weight.shape
    K = kh * kw
    groups = C_in // C_in_g
    offset_groups = offset.shape[1] // (2 * K)
    H_out = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    W_out = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    dtype = _compute_dtype(input, offset, weight)
    device = input.device

    # Regular grid: y = ho * sh - ph + i * dh, x = wo * sw - pw + j * dw, per tap k = (i, j).
    tap_y = (torch.arange(kh, device=device, dtype=dtype) * dh).repeat_interleave(kw)  # [K]
    tap_x = (torch.arange(kw, device=device, dtype=dtype) * dw).repeat(kh)  # [K]
    out_y = torch.arange(H_out, device=device, dtype=dtype) * sh - ph  # [H_out]
    out_x = torch.arange(W_out, device=device, dtype=dtype) * sw - pw  # [W_out]
    base_y = tap_y[:, None, None] + out_y[None, :, None]  # [K, H_out, 1]
    base_x = tap_x[:, None, None] + out_x[None, None, :]  # [K, 1, W_out]

    off = offset.to(dtype).view(N, offset_groups, K, 2, H_out, W_out)
    y = (base_y + off[:, :, :, 0]).reshape(N * offset_groups, K * H_out * W_out)
    x = (base_x + off[:, :, :, 1]).reshape(N * offset_groups, K * H_out * W_out)
    image = input.to(dtype).reshape(N * offset_groups, C_in // offset_groups, H, W)
    cols = bilinear_zero_pad(image, y, x)  # [N*G_off, C_in/G_off, K*H_out*W_out]
    if mask is not None:
        cols = cols * mask.to(dtype).reshape(N * offset_groups, 1, K * H_out * W_out)
    # [N, groups, C_in_g * K, P], row index c * K + k matches weight.flatten(1)
    cols = cols.reshape(N, groups, C_in_g * K, H_out * W_out)
    w = weight.to(dtype).reshape(groups, C_out // groups, C_in_g * K)
    out = torch.einsum("gok,ngkp->ngop", w, cols).reshape(N, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias.to(dtype)[None, :, None, None]
    return out.to(input.dtype).contiguous()  # einsum leaves a permuted layout


# ----------------------------------------------------------------------------- sinkhorn

# Upper clamp on logits: +inf (or an overflow of scores / tau) becomes a huge finite value so
# that log-sum-exp never computes inf - inf.
_LOGIT_CAP = 1e30


def dustbin_logit(dustbin: float, tau: float) -> float:
    """``dustbin / tau`` as a float32 logit: capped at 1e30 like the scores (never
    ``inf - inf``), and below float32's range it rounds to ``-inf`` (as a float32 tensor
    would), both backends alike."""
    return float(torch.tensor(min(dustbin / tau, _LOGIT_CAP), dtype=torch.float32))


def _safe_logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp that returns a finite value (log of tiny) for all ``-inf`` slices."""
    peak = x.amax(dim=dim, keepdim=True).detach()
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.exp(x - peak).sum(dim=dim, keepdim=True)
    return peak + torch.log(total.clamp_min(torch.finfo(x.dtype).tiny))


def sinkhorn(
    scores: torch.Tensor,
    iters: int,
    *,
    tau: float = 1.0,
    row_mask: torch.Tensor | None = None,
    col_mask: torch.Tensor | None = None,
    dustbin: float | None = None,
) -> torch.Tensor:
    """Batched log-domain Sinkhorn normalisation.

    Args:
        scores: ``[B, n1, n2]`` logits.
        iters: number of (row, column) normalisation rounds.
        tau: temperature, ``x = scores / tau``.
        row_mask / col_mask: ``[B, n1]`` / ``[B, n2]`` bool, True for real rows/columns.
        dustbin: if given, a ``[B, n1 + 1, n2 + 1]`` problem with this score in the extra
            row and column and SuperGlue's marginals: each real row and column has mass 1,
            the dustbin row has mass ``m`` (real columns), the dustbin column mass ``n``
            (real rows).

    Returns:
        ``[B, n1, n2]`` (or ``[B, n1 + 1, n2 + 1]``) probabilities ``exp(x)`` after ``iters``
        rounds of ``x -= logsumexp_row(x) - log mu; x -= logsumexp_col(x) - log nu``.
        Masked rows and columns, and rows or columns whose scores are all ``-inf``, are 0.
        ``+inf`` logits are capped at ``1e30`` so the output is never NaN.
    """
    B, n1, n2 = scores.shape
    dtype = _compute_dtype(scores)
    device = scores.device
    rows = torch.ones(B, n1, dtype=torch.bool, device=device) if row_mask is None else row_mask
    cols = torch.ones(B, n2, dtype=torch.bool, device=device) if col_mask is None else col_mask
    x = (scores.to(dtype) / tau).clamp(max=_LOGIT_CAP)
    log_mu = torch.zeros(B, n1, 1, dtype=dtype, device=device)
    log_nu = torch.zeros(B, 1, n2, dtype=dtype, device=device)
    if dustbin is not None:
        bin_logit = dustbin_logit(dustbin, tau)
        bin_col = torch.full((B, n1, 1), bin_logit, dtype=dtype, device=device)
        bin_row = torch.full((B, 1, n2 + 1), bin_logit, dtype=dtype, device=device)
        x = torch.cat([torch.cat([x, bin_col], dim=2), bin_row], dim=1)
        m = rows.sum(1).to(dtype)  # real rows
        n = cols.sum(1).to(dtype)  # real columns
        # dustbin row absorbs up to n columns, dustbin column up to m rows (SuperGlue)
        log_mu = torch.cat([log_mu, torch.log(n.clamp_min(1))[:, None, None]], dim=1)
        log_nu = torch.cat([log_nu, torch.log(m.clamp_min(1))[:, None, None]], dim=2)
        true = torch.ones(B, 1, dtype=torch.bool, device=device)
        rows = torch.cat([rows, true], dim=1)
        cols = torch.cat([cols, true], dim=1)
    valid = rows[:, :, None] & cols[:, None, :]
    x = x.masked_fill(~valid, float("-inf"))
    if x.shape[1] == 0 or x.shape[2] == 0:  # nothing to normalise (an empty side)
        return torch.exp(x).to(scores.dtype)
    for _ in range(iters):
        x = x - _safe_logsumexp(x, dim=2) + log_mu
        x = x - _safe_logsumexp(x, dim=1) + log_nu
    return torch.exp(x).to(scores.dtype)


# ----------------------------------------------------------------------------- gm_affinity


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
    """Graph-matching affinity: node term plus the quadratic term applied to ``assign``.

    Args:
        node1: ``[B, n1, d]``, node2: ``[B, n2, d]``.
        edge1: ``[B, n1, n1, c]``, edge2: ``[B, n2, n2, c]``: features of edge ``(i, j)``.
        assign: ``[B, n1, n2]`` current (soft) assignment ``S``.
        sigma: bandwidth of the Gaussian edge affinity.
        mask1 / mask2: ``[B, n1]`` / ``[B, n2]`` bool, True for real nodes.

    Returns:
        ``[B, n1, n2]``: ``node1 @ node2^T + Q`` with
        ``Q[b,i,a] = sum_{j != i, k != a} exp(-||edge1[b,i,j] - edge2[b,a,k]||^2 / sigma^2)
        * assign[b,j,k]``; masked nodes take no part and their rows/columns are 0.

    This reference materialises ``[B, n1, n1, n2, n2]``: use it for small graphs only.
    """
    B, n1, _ = node1.shape
    n2 = node2.shape[1]
    dtype = _compute_dtype(node1, node2, edge1, edge2, assign)
    device = node1.device
    m1 = torch.ones(B, n1, dtype=torch.bool, device=device) if mask1 is None else mask1
    m2 = torch.ones(B, n2, dtype=torch.bool, device=device) if mask2 is None else mask2
    e1, e2 = edge1.to(dtype), edge2.to(dtype)
    diff = e1[:, :, :, None, None, :] - e2[:, None, None, :, :, :]  # [B, n1, n1, n2, n2, c]
    ke = torch.exp(-diff.pow(2).sum(-1) / (sigma * sigma))  # [B, i, j, a, k]
    off1 = ~torch.eye(n1, dtype=torch.bool, device=device)  # j != i
    off2 = ~torch.eye(n2, dtype=torch.bool, device=device)  # k != a
    keep = (off1[None, :, :, None, None] & off2[None, None, None, :, :]) & (
        m1[:, None, :, None, None] & m2[:, None, None, None, :]
    )
    # where, not products with the masks: a NaN of an excluded edge, node or assignment
    # entry takes no part
    ke = torch.where(keep, ke, 0.0)
    s = torch.where(m1[:, :, None] & m2[:, None, :], assign.to(dtype), 0.0)
    quad = torch.einsum("bijak,bjk->bia", ke, s)
    out = torch.bmm(node1.to(dtype), node2.to(dtype).transpose(1, 2)) + quad
    out = torch.where(m1[:, :, None] & m2[:, None, :], out, 0.0)
    return out.to(node1.dtype)


# ----------------------------------------------------------------------------- gm_affinity (dense)
# The quadratic affinity matrix M built densely, the way pygmtools / PCA-GM / GMTracker do:
# incidence matrices of the fully connected graphs and a Kronecker product,
#     M = kron(G1, G2) diag(vec(Ke)) kron(H1, H2)^T                      [n1*n2, n1*n2]
# Row/column index (i, a) -> i * n2 + a (row-major vec; pygmtools writes the column-major
# form kron(G2, G1) with vec(Ke) column-major, the same matrix up to that permutation).
# kron(G1, G2) has n1*n2 * ne1*ne2 entries with ne = n * (n - 1): O(n^6) memory. Small
# graphs only (n <= ~16 on a CPU, n <= 32 on an 80 GB GPU); it exists to check gm_affinity.


def incidence_matrices(
    n: int, mask: torch.Tensor | None, *, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Node-edge incidence of the fully connected directed graph on ``n`` nodes (no loops).

    Edges ``e = (p, q)``, ``p != q``, in row-major order of ``(p, q)``: ``ne = n * (n - 1)``.

    Args:
        mask: ``[n]`` bool or None; edges touching a masked node get all-zero columns.

    Returns:
        ``G [n, ne]`` (``G[p, e] = 1``: e leaves p), ``H [n, ne]`` (``H[q, e] = 1``: e
        enters q) and ``ends [ne, 2]`` int64, the ``(p, q)`` of each edge.
    """
    off = ~torch.eye(n, dtype=torch.bool, device=device)
    ends = off.nonzero()  # [ne, 2], row-major (p, q)
    ne = ends.shape[0]
    cols = torch.arange(ne, device=device)
    G = torch.zeros(n, ne, dtype=dtype, device=device)
    H = torch.zeros(n, ne, dtype=dtype, device=device)
    G[ends[:, 0], cols] = 1.0
    H[ends[:, 1], cols] = 1.0
    if mask is not None:
        live = (mask[ends[:, 0]] & mask[ends[:, 1]]).to(dtype)  # [ne]
        G, H = G * live, H * live
    return G, H, ends


def gm_affinity_dense(
    edge1: torch.Tensor,
    edge2: torch.Tensor,
    *,
    sigma: float,
    mask1: torch.Tensor | None = None,
    mask2: torch.Tensor | None = None,
    node_aff: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense quadratic affinity ``M = kron(G1, G2) diag(vec Ke) kron(H1, H2)^T`` per batch.

    ``Ke[e, f] = exp(-||edge1[p, q] - edge2[r, s]||^2 / sigma^2)`` for edges ``e = (p, q)``
    of graph 1 and ``f = (r, s)`` of graph 2, so ``M[(i,a), (j,k)] = Ke((i,j), (a,k))`` for
    ``j != i, k != a`` and 0 otherwise (no self-loops: the diagonal blocks are 0).

    ``diag(vec Ke)`` (``(ne1*ne2)^2`` entries) is never formed: multiplying by it scales the
    columns of ``kron(G1, G2)``. The node term is not in ``M`` by default because
    ``gm_affinity`` adds ``node1 @ node2^T`` unweighted; pass ``node_aff [B, n1, n2]`` to get
    the pygmtools/PCA-GM form ``diag(vec node_aff) + M`` (whose product with ``vec(S)``
    weights the node term by ``S``).

    Args:
        edge1: ``[B, n1, n1, c]``, edge2: ``[B, n2, n2, c]``.
        mask1 / mask2: ``[B, n1]`` / ``[B, n2]`` bool, True for real nodes.

    Returns:
        ``M [B, n1*n2, n1*n2]`` in float32 (float64 for float64 inputs).
    """
    B, n1 = edge1.shape[:2]
    n2 = edge2.shape[1]
    dtype = _compute_dtype(edge1, edge2)
    device = edge1.device
    out = []
    for b in range(B):
        G1, H1, ends1 = incidence_matrices(
            n1, None if mask1 is None else mask1[b], dtype=dtype, device=device
        )
        G2, H2, ends2 = incidence_matrices(
            n2, None if mask2 is None else mask2[b], dtype=dtype, device=device
        )
        x1 = edge1[b].to(dtype)[ends1[:, 0], ends1[:, 1]]  # [ne1, c]
        x2 = edge2[b].to(dtype)[ends2[:, 0], ends2[:, 1]]  # [ne2, c]
        ke = torch.exp(-(x1[:, None, :] - x2[None, :, :]).pow(2).sum(-1) / (sigma * sigma))
        # kron(G1, G2)[(i, a), (e, f)] = G1[i, e] G2[a, f] pairs with vec(Ke)[e * ne2 + f]
        m = (torch.kron(G1, G2) * ke.reshape(1, -1)) @ torch.kron(H1, H2).T
        if node_aff is not None:
            m = m + torch.diag(node_aff[b].to(dtype).reshape(-1))
        out.append(m)
    return torch.stack(out)


def gm_affinity_from_dense(
    M: torch.Tensor,
    node1: torch.Tensor,
    node2: torch.Tensor,
    assign: torch.Tensor,
    *,
    mask1: torch.Tensor | None = None,
    mask2: torch.Tensor | None = None,
) -> torch.Tensor:
    """``node1 @ node2^T + unvec(M @ vec(assign))`` with masked rows/columns 0: ``[B, n1, n2]``.

    With ``M = gm_affinity_dense(...)`` (no ``node_aff``) this equals ``gm_affinity``.
    """
    B, n1, _ = node1.shape
    n2 = node2.shape[1]
    dtype = M.dtype
    s = assign.to(dtype)
    if mask1 is not None:
        s = s * mask1[:, :, None]
    if mask2 is not None:
        s = s * mask2[:, None, :]
    quad = torch.bmm(M, s.reshape(B, n1 * n2, 1)).reshape(B, n1, n2)
    out = torch.bmm(node1.to(dtype), node2.to(dtype).transpose(1, 2)) + quad
    if mask1 is not None:
        out = out * mask1[:, :, None]
    if mask2 is not None:
        out = out * mask2[:, None, :]
    return out.to(node1.dtype)
