"""gm_affinity: Triton (interpreter on CPU) vs the PyTorch reference vs the dense Kronecker M.

Tolerances (absolute, relative), per dtype of the inputs:
  float32: outputs and grads (2e-5, 1e-4): same float32 math, other summation order and
           ``|x|^2 + |y|^2 - 2 x.y`` instead of ``|x - y|^2`` inside the exponent.
  float16: (2e-2, 1e-2): both accumulate in float32; the results round once to float16.
  float64: the reference against the dense Kronecker construction: (1e-10, 1e-10).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from gmpvis.kernels import gm_affinity, reference, use_backend
from gmpvis.kernels._launch import INTERPRETER
from gmpvis.kernels.ops import gm_affinity as aff

TOL = {
    torch.float32: {"atol": 2e-5, "rtol": 1e-4},
    torch.float16: {"atol": 2e-2, "rtol": 1e-2},
    torch.float64: {"atol": 1e-10, "rtol": 1e-10},
}
NAMES = ("node1", "node2", "edge1", "edge2", "assign")


def make_inputs(B, n1, n2, c, d, *, masks=False, dtype=torch.float32, device="cpu"):
    """Random graphs; edges scaled by 1/sqrt(c) so the Gaussian is neither 0 nor 1 everywhere.

    ``masks``: per batch element a different number of live nodes (element 0 fully live).
    """
    s = 0.8 / math.sqrt(c)
    t = {
        "node1": torch.randn(B, n1, d, device=device) / math.sqrt(d),
        "node2": torch.randn(B, n2, d, device=device) / math.sqrt(d),
        "edge1": torch.randn(B, n1, n1, c, device=device) * s,
        "edge2": torch.randn(B, n2, n2, c, device=device) * s,
        "assign": torch.rand(B, n1, n2, device=device),
    }
    t = {k: v.to(dtype) for k, v in t.items()}
    m1 = m2 = None
    if masks:
        m1 = torch.ones(B, n1, dtype=torch.bool, device=device)
        m2 = torch.ones(B, n2, dtype=torch.bool, device=device)
        for b in range(1, B):
            # random live sets of different sizes (at least one live node each)
            m1[b] = torch.rand(n1, device=device) < 0.3 + 0.6 * b / B
            m2[b] = torch.rand(n2, device=device) < 0.9 - 0.5 * b / B
            m1[b, torch.randint(n1, ())] = True
            m2[b, torch.randint(n2, ())] = True
    sigma = float(torch.empty(()).uniform_(0.7, 1.4))
    return t, {"sigma": sigma, "mask1": m1, "mask2": m2}


def run_with_grads(fn, tensors, kw, grad_out=None):
    """``fn`` on fresh leaves: (output, grads w.r.t. every tensor, grad_out used)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in tensors.items()}
    out = fn(**leaves, **kw)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out)
    return out, dict(zip(leaves, grads, strict=True)), grad_out


def assert_matches_reference(tensors, kw, dtype):
    ref, ref_grads, go = run_with_grads(reference.gm_affinity, tensors, kw)
    with use_backend("triton"):
        out, grads, _ = run_with_grads(gm_affinity, tensors, kw, go)
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref, **TOL[dtype])
    for name in NAMES:
        assert grads[name].dtype == dtype, name
        torch.testing.assert_close(grads[name], ref_grads[name], **TOL[dtype], msg=name)
    return out


# (B, n1, n2, c, d, masks): non-square, c and d not powers of two, n = 1 and n = 2
SHAPES = [
    (2, 5, 3, 3, 7, False),
    (3, 6, 7, 5, 6, True),
    (2, 1, 2, 3, 4, False),
    (2, 2, 2, 2, 3, True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_matches_reference(shape, dtype):
    B, n1, n2, c, d, masks = shape
    tensors, kw = make_inputs(B, n1, n2, c, d, masks=masks, dtype=dtype)
    out = assert_matches_reference(tensors, kw, dtype)
    assert out.abs().max() > 0.1  # a real, non-degenerate result


@pytest.mark.parametrize("n1,n2", [(17, 5), (3, 17)])
def test_triton_multi_block_tiles(monkeypatch, n1, n2):
    # tiny caps force several j-blocks, k-blocks and a-blocks (with padding) per program
    monkeypatch.setitem(aff.TILE_CAPS, "cpu", {"rows": 16, "j": 16, "elems": 256, "warps": 4})
    blocks = aff._config(max(n1, n2), min(n1, n2), 5, INTERPRETER)
    assert blocks["BLOCK_J"] == 16 and blocks["BLOCK_A"] * blocks["BLOCK_K"] == 16
    tensors, kw = make_inputs(1, n1, n2, 5, 3, masks=True)
    kw["mask1"][0, 1] = kw["mask2"][0, 2] = False  # one dead node per graph
    assert_matches_reference(tensors, kw, torch.float32)


def test_triton_non_contiguous_inputs():
    """Views as the model passes them: assign sliced out of a dustbin-padded matrix, edges
    and nodes stored transposed. Grads flow back to the stored tensors."""
    tensors, kw = make_inputs(2, 4, 3, 3, 5, masks=True)
    padded = torch.rand(2, 5, 4)
    padded[:, :4, :3] = tensors["assign"]
    stored = {
        "padded": padded,
        "edge1_t": tensors["edge1"].transpose(1, 2).contiguous(),
        "node2_t": tensors["node2"].transpose(1, 2).contiguous(),
    }

    def fn(padded, edge1_t, node2_t, **kw):
        assert not padded[:, :4, :3].is_contiguous() and not edge1_t.transpose(1, 2).is_contiguous()
        views = {**tensors, "assign": padded[:, :4, :3], "edge1": edge1_t.transpose(1, 2)}
        views["node2"] = node2_t.transpose(1, 2)
        return gm_affinity(**views, **kw)

    with use_backend("torch"):
        ref, ref_grads, go = run_with_grads(fn, stored, kw)
    with use_backend("triton"):
        out, grads, _ = run_with_grads(fn, stored, kw, go)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    for name in stored:
        assert ref_grads[name].abs().max() > 0
        torch.testing.assert_close(grads[name], ref_grads[name], **TOL[torch.float32], msg=name)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_masked_equals_compacted_graph(backend):
    """Masked nodes take no part: same result as the graphs without them; their rows are 0."""
    tensors, kw = make_inputs(3, 6, 5, 3, 4, masks=True)
    m1, m2 = kw["mask1"], kw["mask2"]
    poisoned = dict(tensors)  # huge values on masked nodes must not leak anywhere
    poisoned["assign"] = tensors["assign"].masked_fill(~m1[:, :, None] | ~m2[:, None, :], 1e4)
    with use_backend(backend):
        out = gm_affinity(**poisoned, **kw)
        for b in range(3):
            i1, i2 = m1[b].nonzero()[:, 0], m2[b].nonzero()[:, 0]
            sub = {
                "node1": tensors["node1"][b : b + 1, i1],
                "node2": tensors["node2"][b : b + 1, i2],
                "edge1": tensors["edge1"][b : b + 1, i1][:, :, i1],
                "edge2": tensors["edge2"][b : b + 1, i2][:, :, i2],
                "assign": tensors["assign"][b : b + 1, i1][:, :, i2],
            }
            expect = gm_affinity(**sub, sigma=kw["sigma"])
            torch.testing.assert_close(out[b][i1][:, i2], expect[0], **TOL[torch.float32])
    assert (out[~m1] == 0).all() and (out.transpose(1, 2)[~m2] == 0).all()


@pytest.mark.parametrize("sigma", [1e-20, 1e-3, 1e3, 1e25])
def test_extreme_sigma(sigma):
    """Tiny sigma: only exactly equal edges count (exp(-0) = 1, never 0 * inf = nan)."""
    tensors, kw = make_inputs(1, 4, 3, 2, 3)
    tensors["edge2"][0, 1, 2] = tensors["edge1"][0, 0, 3]  # one exact edge match
    kw["sigma"] = sigma
    ref = reference.gm_affinity(**tensors, **kw)
    with use_backend("triton"):
        out = gm_affinity(**tensors, **kw)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, **TOL[torch.float32])


def test_quadratic_term_by_brute_force():
    """Q against an explicit loop over (j, k) for a few entries: the semantics, not the code."""
    tensors, kw = make_inputs(1, 4, 3, 2, 2)
    e1, e2, s = tensors["edge1"][0], tensors["edge2"][0], tensors["assign"][0]
    with use_backend("triton"):
        out = gm_affinity(**tensors, **kw)[0]
    node = tensors["node1"][0] @ tensors["node2"][0].T
    for i, a in [(0, 0), (3, 1), (2, 2)]:
        q = sum(
            math.exp(-float((e1[i, j] - e2[a, k]).pow(2).sum()) / kw["sigma"] ** 2) * float(s[j, k])
            for j in range(4)
            for k in range(3)
            if j != i and k != a
        )
        assert abs(float(out[i, a] - node[i, a]) - q) < 1e-5


class _LargestTensor(TorchDispatchMode):
    """Records the size in bytes of the largest tensor any aten op produces while active."""

    def __init__(self):
        super().__init__()
        self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.nbytes = max(self.nbytes, t.numel() * t.element_size())
        return out


def test_triton_memory_is_linear_in_inputs():
    """No intermediate of the Triton launchers exceeds the largest input (edges) or
    B * n1 * n2; the reference builds B * n1^2 * n2^2 * c."""
    B, n1, n2, c = 2, 7, 6, 3
    tensors, kw = make_inputs(B, n1, n2, c, 2, masks=True)
    args = [tensors[k] for k in NAMES]
    masks = (kw["mask1"], kw["mask2"])
    with _LargestTensor() as tri:
        out = aff._forward(*args, kw["sigma"], *masks)
        aff._backward(torch.randn_like(out), *args, kw["sigma"], *masks)
    with _LargestTensor() as ref:
        reference.gm_affinity(*args, **kw)
    # float32: 4 bytes (the interpreter also moves tensors as byte views)
    assert tri.nbytes <= 4 * max(B * n1 * n1 * c, B * n2 * n2 * c, B * n1 * n2)
    assert ref.nbytes >= 4 * B * n1 * n1 * n2 * n2 * c


# ----------------------------------------------------------------------------- dense Kronecker


def test_dense_kronecker_structure():
    tensors, kw = make_inputs(2, 4, 3, 3, 2, masks=True, dtype=torch.float64)
    M = reference.gm_affinity_dense(tensors["edge1"], tensors["edge2"], **kw)
    assert M.shape == (2, 12, 12) and M.dtype == torch.float64
    e1, e2 = tensors["edge1"], tensors["edge2"]
    m1, m2 = kw["mask1"], kw["mask2"]
    for b, i, a, j, k in [(0, 1, 2, 3, 0), (1, 0, 0, 2, 1), (1, 3, 1, 0, 2), (0, 2, 1, 2, 0)]:
        live = bool(m1[b, i] & m1[b, j] & m2[b, a] & m2[b, k]) and i != j and a != k
        d2 = (e1[b, i, j] - e2[b, a, k]).pow(2).sum()
        expect = torch.exp(-d2 / kw["sigma"] ** 2) if live else torch.zeros(())
        torch.testing.assert_close(M[b, i * 3 + a, j * 3 + k], expect.double())
    # no self-loops: the (i, a) x (i, *) and (*, a) x (*, a) entries are 0
    idx = torch.arange(12)
    same_i = (idx[:, None] // 3) == (idx[None, :] // 3)
    same_a = (idx[:, None] % 3) == (idx[None, :] % 3)
    assert (M[:, same_i | same_a] == 0).all()
    # pygmtools / PCA-GM form with the node affinity on the diagonal
    kp = torch.randn(2, 4, 3, dtype=torch.float64)
    Md = reference.gm_affinity_dense(tensors["edge1"], tensors["edge2"], node_aff=kp, **kw)
    torch.testing.assert_close(Md - M, torch.diag_embed(kp.reshape(2, 12)))


def test_incidence_matrices():
    mask = torch.tensor([True, False, True, True])
    G, H, ends = reference.incidence_matrices(4, mask, dtype=torch.float32, device="cpu")
    assert G.shape == H.shape == (4, 12) and ends.shape == (12, 2)
    assert (ends[:, 0] != ends[:, 1]).all()
    live = mask[ends[:, 0]] & mask[ends[:, 1]]
    assert (G.sum(0) == live.float()).all() and (H.sum(0) == live.float()).all()
    assert (G[ends[live, 0], live.nonzero()[:, 0]] == 1).all()
    assert (H[ends[live, 1], live.nonzero()[:, 0]] == 1).all()


@pytest.mark.parametrize("masks", [False, True])
def test_dense_kronecker_agrees(masks):
    # float64: reference vs dense to 1e-10; float32: triton vs dense
    t64, kw = make_inputs(3, 5, 4, 3, 6, masks=masks, dtype=torch.float64)
    M = reference.gm_affinity_dense(t64["edge1"], t64["edge2"], **kw)
    ops = {k: kw[k] for k in ("mask1", "mask2")}
    dense = reference.gm_affinity_from_dense(M, t64["node1"], t64["node2"], t64["assign"], **ops)
    torch.testing.assert_close(dense, reference.gm_affinity(**t64, **kw), **TOL[torch.float64])
    t32 = {k: v.float() for k, v in t64.items()}
    with use_backend("triton"):
        tri = gm_affinity(**t32, **kw)
    torch.testing.assert_close(tri, dense.float(), **TOL[torch.float32])


# ----------------------------------------------------------------------- autograd, registration


def test_gradcheck_reference():
    tensors, kw = make_inputs(2, 3, 4, 2, 3, masks=True, dtype=torch.float64)
    leaves = [tensors[k].requires_grad_(True) for k in NAMES]

    def fn(*xs):
        return reference.gm_affinity(*xs, **kw)

    assert torch.autograd.gradcheck(fn, leaves)


def test_float64_under_triton_backend_runs_reference():
    tensors, kw = make_inputs(1, 3, 3, 2, 2, dtype=torch.float64)
    with use_backend("triton"):
        out = gm_affinity(**tensors, **kw)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference.gm_affinity(**tensors, **kw), **TOL[torch.float64])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_opcheck(backend):
    tensors, kw = make_inputs(2, 3, 2, 3, 2, masks=True)
    args = (*[tensors[k] for k in NAMES], kw["sigma"], kw["mask1"], kw["mask2"])
    grad = torch.randn(2, 3, 2)
    with use_backend(backend):
        torch.library.opcheck(torch.ops.gmpvis.gm_affinity.default, args)
        torch.library.opcheck(torch.ops.gmpvis.gm_affinity_backward.default, (grad, *args))
        no_mask = (*args[:6], None, None)
        torch.library.opcheck(torch.ops.gmpvis.gm_affinity.default, no_mask)


def test_torch_compile_fullgraph():
    tensors, kw = make_inputs(2, 4, 3, 3, 5, masks=True)

    def fn(node1, node2, edge1, edge2, assign):
        return gm_affinity(node1, node2, edge1, edge2, assign, **kw).square().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    leaves = [tensors[k].requires_grad_(True) for k in NAMES]
    with use_backend("torch"):
        loss = compiled(*leaves)
        grads = torch.autograd.grad(loss, leaves)
        loss_ref = fn(*leaves)
        grads_ref = torch.autograd.grad(loss_ref, leaves)
    torch.testing.assert_close(loss, loss_ref)
    for g, r in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, r)


def test_torch_compile_inductor_with_permuted_inputs(fresh_inductor):
    """Inductor checks every custom op output against its fake's strides: transposed node,
    edge and assignment views (Triton through the interpreter), forward and backward."""
    tensors, kw = make_inputs(2, 4, 3, 3, 5, masks=True)
    views = {
        "node1": tensors["node1"].transpose(0, 1).contiguous().transpose(0, 1),
        "node2": tensors["node2"],
        "edge1": tensors["edge1"].transpose(1, 2).contiguous().transpose(1, 2),
        "edge2": tensors["edge2"].permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1),
        "assign": tensors["assign"].transpose(1, 2).contiguous().transpose(1, 2),
    }
    assert not views["edge2"].is_contiguous() and not views["assign"].is_contiguous()

    def fn(node1, node2, edge1, edge2, assign):
        return (gm_affinity(node1, node2, edge1 * 1.0, edge2, assign, **kw) ** 2).sum()

    leaves = [views[k].detach().requires_grad_() for k in NAMES]
    with use_backend("triton"):
        loss = torch.compile(fn, fullgraph=True)(*leaves)
        grads = torch.autograd.grad(loss, leaves)
    ref_leaves = [tensors[k].detach().clone().requires_grad_() for k in NAMES]
    with use_backend("torch"):
        loss_ref = fn(*ref_leaves)
        grads_ref = torch.autograd.grad(loss_ref, ref_leaves)
    torch.testing.assert_close(loss, loss_ref, **TOL[torch.float32])
    for name, g, r in zip(NAMES, grads, grads_ref, strict=True):
        torch.testing.assert_close(g, r, **TOL[torch.float32], msg=name)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_deterministic_mode_backward_is_bitwise_reproducible(backend, deterministic):
    """No atomics on either backend: deterministic mode runs, and twice gives the same bits."""
    tensors, kw = make_inputs(2, 5, 4, 3, 6, masks=True)

    def run():
        with use_backend(backend):
            return run_with_grads(gm_affinity, tensors, kw, grad_out=torch.ones(2, 5, 4))[1]

    first, second = deterministic.twice(run)
    for name in NAMES:
        assert torch.equal(first[name], second[name]), name


def test_autocast_gives_float32(op_dtypes):
    """Under autocast (bfloat16) the op receives float32 (autocast's float32 list, like cdist)."""
    tensors, kw = make_inputs(1, 3, 4, 2, 5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16), op_dtypes, use_backend("torch"):
        out = gm_affinity(**tensors, **kw)
    assert op_dtypes.calls["gm_affinity"][:5] == [torch.float32] * 5
    assert out.dtype == torch.float32


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "change,arg",
    [
        ({"edge1": torch.randn(2, 4, 3, 3)}, "edge1"),  # rank 4 but n1 x n1 broken
        ({"edge2": torch.randn(2, 3, 3)}, "edge2"),  # wrong rank
        ({"assign": torch.randn(2, 4, 4)}, "assign"),  # n2 mismatch
        ({"node2": torch.randn(2, 3, 6)}, "node2"),  # d mismatch
        ({"edge2": torch.randn(2, 3, 3, 4)}, "edge2"),  # c mismatch
        ({"assign": torch.rand(2, 4, 3, dtype=torch.float64)}, "assign"),  # dtype mismatch
        ({"mask1": torch.ones(2, 4)}, "mask1"),  # not bool
        ({"mask2": torch.ones(2, 4, dtype=torch.bool)}, "mask2"),  # n2 mismatch
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
    ],
)
def test_bad_arguments_raise_value_error(change, arg):
    tensors, kw = make_inputs(2, 4, 3, 3, 5)
    args = {**tensors, **kw, **change}
    with pytest.raises(ValueError, match=arg):
        gm_affinity(**args)


def test_triton_rejects_wide_edge_features():
    tensors, kw = make_inputs(1, 2, 2, aff.MAX_C + 1, 2)
    with use_backend("triton"), pytest.raises(ValueError, match="c <= 256"):
        gm_affinity(**tensors, **kw)


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    tensors, kw = make_inputs(1, 2, 2, 2, 2)
    with use_backend("triton"), pytest.raises(RuntimeError, match="gm_affinity"):
        gm_affinity(**tensors, **kw)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 32, 32, 16, 256, True), (2, 100, 77, 33, 64, True)])
def test_gpu_matches_reference(shape, dtype):
    B, n1, n2, c, d, masks = shape
    tensors, kw = make_inputs(B, n1, n2, c, d, masks=masks, dtype=dtype, device="cuda")
    tol = {"atol": 5e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else TOL[dtype]
    ref, ref_grads, go = run_with_grads(reference.gm_affinity, tensors, kw)
    with use_backend("triton"):
        out, grads, _ = run_with_grads(gm_affinity, tensors, kw, go)
    torch.testing.assert_close(out, ref, **tol)
    for name in NAMES:
        torch.testing.assert_close(grads[name], ref_grads[name], **tol, msg=name)


@pytest.mark.gpu
def test_gpu_large_graph_against_dense_free_reference():
    # n = 160 > every tile cap: all loops run several blocks; compare with a chunked reference
    tensors, kw = make_inputs(1, 160, 150, 8, 32, masks=False, device="cuda")
    with use_backend("triton"):
        out = gm_affinity(**tensors, **kw)
    e1, e2, s = tensors["edge1"][0], tensors["edge2"][0], tensors["assign"][0]
    expect = tensors["node1"][0] @ tensors["node2"][0].T
    ar = torch.arange(150, device="cuda")
    for i in range(0, 160, 4):
        diff = e1[i : i + 4, :, None, None, :] - e2[None, None]  # [4, n1, n2, n2, c]
        ke = torch.exp(-diff.pow(2).sum(-1) / kw["sigma"] ** 2)
        rows = torch.arange(i, i + 4, device="cuda")
        ke[torch.arange(4, device="cuda"), rows] = 0  # j == i
        ke[:, :, ar, ar] = 0  # k == a
        expect[rows] += torch.einsum("ijak,jk->ia", ke, s)
    torch.testing.assert_close(out, expect, atol=1e-3, rtol=1e-4)


# ----------------------------------------------------------------------------- non-finite inputs
# The policy (gmpvis.kernels.reference's docstring): NaN propagates, excluded entries take no
# part, an infinite distance gives weight 0. Both backends alike.


def _same_nan_and_values(a, b):
    assert torch.equal(a.isnan(), b.isnan())
    torch.testing.assert_close(a.nan_to_num(0.0), b.nan_to_num(0.0), **TOL[torch.float32])


@pytest.mark.filterwarnings("ignore:.*(encountered|All-NaN).*:RuntimeWarning")  # interpreter
@pytest.mark.parametrize("kind", ["offset_1000", "spread_1000"])
def test_large_edge_features_do_not_cancel(kind):
    """|a|^2 + |b|^2 - 2ab cancels for features of magnitude ~1000 (the old kernel: error
    0.59). Near a common offset the centred tensor-core form is accurate; spread out, with
    close pairs planted, the tiles take the exact difference form."""
    tensors, kw = make_inputs(2, 6, 5, 4, 3)
    kw["sigma"] = 1.0
    if kind == "offset_1000":
        for k in ("edge1", "edge2"):
            tensors[k] = 1000.0 + tensors[k] * 3
    else:
        tensors["edge1"] = tensors["edge1"] * 1000
        tensors["edge2"] = tensors["edge2"] * 1000
        tensors["edge2"][:, 1, 2] = tensors["edge1"][:, 0, 3] + 0.3  # close pairs
        tensors["edge2"][:, 3, 0] = tensors["edge1"][:, 4, 1] - 0.2
    want = reference.gm_affinity(**{k: v.double() for k, v in tensors.items()}, **kw)
    with use_backend("triton"):
        out = gm_affinity(**tensors, **kw)
    node = tensors["node1"] @ tensors["node2"].transpose(1, 2)
    assert (want - node.double()).abs().max() > 0.1  # the planted pairs carry weight
    torch.testing.assert_close(out.double(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("path", ["exact", "expanded"])
def test_both_distance_paths_match_the_reference(monkeypatch, path):
    """Force every tile onto one path (the threshold is a kernel constant)."""
    import triton.language as tl

    limit = 0.0 if path == "exact" else 1e30
    monkeypatch.setattr(aff, "EXPANSION_LIMIT", tl.constexpr(limit))
    tensors, kw = make_inputs(2, 5, 4, 3, 6, masks=True)
    assert_matches_reference(tensors, kw, torch.float32)


@pytest.mark.filterwarnings("ignore:.*(encountered|All-NaN).*:RuntimeWarning")  # interpreter
def test_infinite_distance_gives_weight_zero_on_both_backends():
    """Finite features whose squared distance overflows float32, and infinite features:
    weight exp(-inf) = 0 (the old kernel gave weight 1); inf - inf is NaN on both."""
    tensors, kw = make_inputs(1, 4, 3, 2, 3)
    tensors["edge1"][0, 0, 1] = 1e20  # squared distance overflows: weight 0
    tensors["edge1"][0, 2, 3, 0] = float("inf")
    tensors["edge2"][0, 1, 0, 0] = float("inf")  # meets the one above: inf - inf = NaN
    ref = reference.gm_affinity(**tensors, **kw)
    with use_backend("triton"):
        out = gm_affinity(**tensors, **kw)
    _same_nan_and_values(out, ref)
    assert out[0, 0].isfinite().all() and out[0, 2].isnan().any()


@pytest.mark.filterwarnings("ignore:.*(encountered|All-NaN).*:RuntimeWarning")  # interpreter
@pytest.mark.parametrize("where", ["edge_live", "edge_diagonal", "edge_masked", "node_masked"])
def test_nan_inputs_propagate_identically(where):
    """A NaN in a live edge reaches its row; in the excluded diagonal edge or on a masked
    node it takes no part (the reference multiplied it by 0: NaN)."""
    tensors, kw = make_inputs(2, 5, 4, 3, 3, masks=True)
    kw["mask1"][1, 3] = False
    if where == "edge_live":
        tensors["edge1"][0, 1, 2, 0] = float("nan")
    elif where == "edge_diagonal":
        tensors["edge1"][0, 2, 2, 1] = float("nan")
    elif where == "edge_masked":
        tensors["edge1"][1, 3, 0, 0] = float("nan")  # node 3 of graph 1 is masked in b = 1
    else:
        tensors["node1"][1, 3, 0] = float("nan")
    ref = reference.gm_affinity(**tensors, **kw)
    with use_backend("triton"):
        out = gm_affinity(**tensors, **kw)
    _same_nan_and_values(out, ref)
    assert out.isnan().any() == (where == "edge_live")


@pytest.mark.parametrize("n1,n2", [(3, 0), (0, 3), (0, 0)])
def test_empty_graphs_same_on_both_backends(n1, n2):
    """n2 = 0 (the Triton launcher divided by zero) and n1 = 0: empty outputs, zero grads."""
    tensors, kw = make_inputs(2, max(n1, 1), max(n2, 1), 3, 4)
    tensors = {k: v[:, :n1] if k in ("node1",) else v for k, v in tensors.items()}
    tensors["node2"] = tensors["node2"][:, :n2]
    tensors["edge1"] = tensors["edge1"][:, :n1, :n1]
    tensors["edge2"] = tensors["edge2"][:, :n2, :n2]
    tensors["assign"] = tensors["assign"][:, :n1, :n2]
    outs = []
    for backend in ("torch", "triton"):
        with use_backend(backend):
            outs.append(run_with_grads(gm_affinity, tensors, kw))
    (o1, g1, _), (o2, g2, _) = outs
    assert o1.shape == o2.shape == (2, n1, n2)
    for name in NAMES:
        assert g1[name].shape == g2[name].shape == tensors[name].shape
        assert not g2[name].any()
