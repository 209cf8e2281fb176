"""Tests of ``gmpvis.kernels.sinkhorn``: Triton kernels vs the PyTorch reference.

Without a GPU the Triton kernels run under ``TRITON_INTERPRET=1`` (set by the root conftest)
on CPU tensors, so shapes stay tiny. Tolerances (absolute, on probabilities in [0, 1] and on
gradients of a unit-variance loss):

* float32: forward 1e-5, gradient 1e-4 (the kernel rebuilds earlier iterates from saved
  per-step shifts, which rounds differently from autograd's stored iterates);
* float16: forward 2e-3 (half an ulp at 1 is 4.9e-4; both round the same float32 result),
  gradient 5e-3 (a float16 output gradient, float16 input gradient).
"""

from __future__ import annotations

import os

import pytest
import torch

from gmpvis.kernels import reference, sinkhorn, use_backend
from gmpvis.kernels.ops import sinkhorn as sk_module

TOL = {torch.float32: (1e-5, 1e-4), torch.float16: (2e-3, 5e-3)}
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
needs_triton = pytest.mark.skipif(
    not (INTERPRETED or torch.cuda.is_available()),
    reason="Triton needs a CUDA GPU or TRITON_INTERPRET=1",
)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _masks(B, n1, n2, p=0.3):
    rows = torch.rand(B, n1, device=DEVICE) > p
    cols = torch.rand(B, n2, device=DEVICE) > p
    rows[:, 0] = True  # at least one real row and column per batch element
    cols[:, 0] = True
    return rows, cols


def _both(scores, iters, grad=None, **kw):
    """(triton out, triton grad, reference out, reference grad) on the same inputs."""
    leaves = [scores.detach().clone().requires_grad_(True) for _ in range(2)]
    with use_backend("triton"):
        out = sinkhorn(leaves[0], iters, **kw)
        g = torch.randn_like(out) if grad is None else grad
        (d_out,) = torch.autograd.grad(out, leaves[0], g)
    ref = reference.sinkhorn(leaves[1], iters, **kw)
    (d_ref,) = torch.autograd.grad(ref, leaves[1], g)
    return out, d_out, ref, d_ref


CASES = [
    # B, n1, n2, iters, tau, dustbin, masked
    (2, 5, 7, 5, 1.0, None, False),
    (3, 6, 4, 6, 0.3, 1.0, True),
    (1, 1, 1, 3, 1.0, None, False),
    (2, 1, 3, 4, 0.5, 0.0, False),
    (2, 9, 9, 8, 0.1, -0.5, True),
    (2, 17, 3, 3, 2.0, None, True),
]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_triton_matches_reference(case, dtype):
    B, n1, n2, iters, tau, dustbin, masked = case
    rows, cols = _masks(B, n1, n2) if masked else (None, None)
    scores = (torch.randn(B, n1, n2, device=DEVICE) * 2).to(dtype)
    out, d_out, ref, d_ref = _both(
        scores, iters, tau=tau, dustbin=dustbin, row_mask=rows, col_mask=cols
    )
    extra = dustbin is not None
    assert out.shape == (B, n1 + extra, n2 + extra) and out.dtype == dtype
    assert d_out.dtype == dtype
    atol_f, atol_g = TOL[dtype]
    torch.testing.assert_close(out, ref, atol=atol_f, rtol=0)
    torch.testing.assert_close(d_out, d_ref, atol=atol_g, rtol=1e-3)
    if n1 * n2 > 1 or extra:  # a lone 1 x 1 entry normalises to 1 whatever its score
        assert d_out.abs().max() > 0


@needs_triton
@pytest.mark.parametrize("dustbin", [None, 0.0])
def test_many_iterations_as_accurate_as_float32_reference(dustbin):
    """The backward rebuilds 2 * iters iterates from saved shifts: no drift beyond the
    float32 reference's own error, both measured against the float64 reference."""
    B, n1, n2, iters, tau = 1, 20, 23, 60, 0.05
    rows, cols = _masks(B, n1, n2, p=0.15)
    scores = torch.randn(B, n1, n2, device=DEVICE)
    kw = {"tau": tau, "row_mask": rows, "col_mask": cols, "dustbin": dustbin}
    exact = scores.double().requires_grad_(True)
    ref64 = reference.sinkhorn(exact, iters, **kw)
    g = torch.randn_like(ref64).float()
    out, d_out, ref, d_ref = _both(scores, iters, grad=g, **kw)
    (d_ref64,) = torch.autograd.grad(ref64, exact, g.double())
    err_tri = (d_out.double() - d_ref64).abs().max().item()
    err_ref = (d_ref.double() - d_ref64).abs().max().item()
    assert err_tri <= 3 * err_ref + 1e-5 * d_ref64.abs().max().item()
    assert (out.double() - ref64).abs().max() <= 3 * (ref.double() - ref64).abs().max() + 1e-6


@needs_triton
def test_marginals_without_dustbin():
    B, n = 2, 6
    scores = torch.randn(B, n, n, device=DEVICE)
    with use_backend("triton"):
        P = sinkhorn(scores, 60, tau=0.7)
    # the last half step normalises columns exactly; square problems converge in rows too
    torch.testing.assert_close(P.sum(1), torch.ones(B, n, device=DEVICE), atol=1e-5, rtol=0)
    torch.testing.assert_close(P.sum(2), torch.ones(B, n, device=DEVICE), atol=1e-4, rtol=0)
    # non-square: the columns still sum to 1 after the final column step
    with use_backend("triton"):
        Q = sinkhorn(torch.randn(B, 3, 5, device=DEVICE), 4)
    torch.testing.assert_close(Q.sum(1), torch.ones(B, 5, device=DEVICE), atol=1e-5, rtol=0)


@needs_triton
def test_marginals_with_dustbin_and_masks():
    B, n1, n2 = 2, 5, 4
    rows, cols = _masks(B, n1, n2)
    scores = torch.randn(B, n1, n2, device=DEVICE)
    with use_backend("triton"):
        P = sinkhorn(scores, 80, dustbin=0.3, row_mask=rows, col_mask=cols)
    m, n = rows.sum(1).float(), cols.sum(1).float()
    real_rows = P[:, :n1].sum(2)
    real_cols = P[:, :, :n2].sum(1)
    torch.testing.assert_close(real_rows, rows.float(), atol=1e-4, rtol=0)  # 1 or masked 0
    torch.testing.assert_close(real_cols, cols.float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(P[:, n1].sum(1), n, atol=1e-4, rtol=0)  # dustbin row mass n
    torch.testing.assert_close(P[:, :, n2].sum(1), m, atol=1e-4, rtol=0)  # dustbin col mass m


@needs_triton
@pytest.mark.parametrize("dustbin", [None, 0.2])
def test_masked_equals_compact_problem(dustbin):
    """Masked rows/columns take no part: the rest equals Sinkhorn on the kept sub-matrix."""
    n1, n2 = 6, 5
    scores = torch.randn(1, n1, n2, device=DEVICE)
    rows = torch.tensor([[True, False, True, True, False, True]], device=DEVICE)
    cols = torch.tensor([[False, True, True, False, True]], device=DEVICE)
    leaf = scores.clone().requires_grad_(True)
    with use_backend("triton"):
        P = sinkhorn(leaf, 7, tau=0.5, row_mask=rows, col_mask=cols, dustbin=dustbin)
        P.sum().backward()
    ri, ci = rows[0].nonzero()[:, 0], cols[0].nonzero()[:, 0]
    sub = scores[:, ri][:, :, ci]
    with use_backend("triton"):
        Q = sinkhorn(sub, 7, tau=0.5, dustbin=dustbin)
    if dustbin is not None:
        ri = torch.cat([ri, torch.tensor([n1], device=DEVICE)])
        ci = torch.cat([ci, torch.tensor([n2], device=DEVICE)])
    torch.testing.assert_close(P[:, ri][:, :, ci], Q, atol=1e-6, rtol=1e-5)
    dead = ~(rows[:, :, None] & cols[:, None, :])
    assert (P[:, :n1, :n2][dead] == 0).all()
    assert (leaf.grad[dead] == 0).all()


@needs_triton
@pytest.mark.parametrize("dustbin", [None, 0.5])
def test_all_masked_and_all_minus_inf_rows_are_zero(dustbin):
    B, n1, n2 = 2, 4, 5
    scores = torch.randn(B, n1, n2, device=DEVICE)
    scores[0, 1, :] = float("-inf")  # an all -inf row
    scores[0, :, 3] = float("-inf")  # an all -inf column
    scores[0, 0, 0] = float("-inf")  # a single -inf entry
    rows = torch.ones(B, n1, dtype=torch.bool, device=DEVICE)
    rows[1] = False  # a batch element with every row masked
    cols = torch.ones(B, n2, dtype=torch.bool, device=DEVICE)
    cols[0, 2] = False
    out, d_out, ref, d_ref = _both(scores, 6, row_mask=rows, col_mask=cols, dustbin=dustbin)
    for t in (out, d_out, ref, d_ref):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(d_out, d_ref, atol=1e-4, rtol=1e-3)
    assert (out[1, :n1] == 0).all() and (d_out[1] == 0).all()  # masked rows (dustbin too)
    assert (out[0, :n1, 2] == 0).all() and (d_out[0, :, 2] == 0).all()  # masked column
    assert (out[0, 1, :n2] == 0).all() and (d_out[0, 1] == 0).all()  # -inf row
    assert (out[0, :n1, 3] == 0).all() and (d_out[0, :, 3] == 0).all()  # -inf column
    assert out[0, 0, 0] == 0 and d_out[0, 0, 0] == 0
    if dustbin is not None:  # an all -inf row sends its whole mass to the dustbin column
        assert out[0, 1, n2] > 0.5


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter
@pytest.mark.parametrize("tau", [1.0, 1e-3, 1e-30])
@pytest.mark.parametrize("dustbin", [None, 2.0, float("inf"), float("-inf")])
def test_huge_logits_and_tiny_tau_stay_finite(tau, dustbin):
    B, n1, n2 = 2, 4, 6
    scores = torch.randn(B, n1, n2, device=DEVICE)
    scores[0, 0, 1] = 1e30
    scores[0, 2, 1] = float("inf")  # capped at 1e30: ties with the entry above
    scores[1, 3, :] = -1e30
    scores[1, 1, 4] = float("inf")
    scores[1, 2, 2] = float("-inf")
    out, d_out, ref, d_ref = _both(scores, 8, tau=tau, dustbin=dustbin)
    for t in (out, d_out, ref, d_ref):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(d_out, d_ref, atol=1e-4, rtol=1e-3)
    # +inf (and anything above the 1e30 cap) receives no gradient, like clamp's
    assert d_out[0, 2, 1] == 0 and d_out[1, 1, 4] == 0


@needs_triton
def test_float16_saturated_scores():
    """float16 scores / tiny tau overflow to inf in float32 and are capped: no NaN."""
    scores = (torch.randn(2, 3, 5, device=DEVICE) * 100).half()
    out, d_out, ref, d_ref = _both(scores, 5, tau=1e-4, dustbin=1.0)
    assert torch.isfinite(out).all() and torch.isfinite(d_out).all()
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=0)
    torch.testing.assert_close(d_out, d_ref, atol=5e-3, rtol=1e-2)


@needs_triton
def test_zero_iterations_and_empty_side():
    scores = torch.randn(2, 3, 4, device=DEVICE)
    out, _, ref, _ = _both(scores, 0, tau=0.5)
    torch.testing.assert_close(out, torch.exp(scores / 0.5), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref)
    empty = torch.randn(2, 0, 3, device=DEVICE)
    with use_backend("triton"):
        P = sinkhorn(empty, 4, dustbin=0.0)
    torch.testing.assert_close(P, reference.sinkhorn(empty, 4, dustbin=0.0))
    assert P.shape == (2, 1, 4) and (P[:, 0, :3] == 1).all()  # every column to the dustbin


@needs_triton
def test_non_contiguous_scores():
    base = torch.randn(2, 7, 5, device=DEVICE)
    scores = base.transpose(1, 2)  # [2, 5, 7], not contiguous
    g = torch.randn(2, 8, 6, device=DEVICE).transpose(1, 2)  # [2, 6, 8], not contiguous
    out, d_out, ref, d_ref = _both(scores, 4, dustbin=0.1, grad=g)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(d_out, d_ref, atol=1e-4, rtol=1e-3)


def test_float64_goes_to_reference_and_matches():
    scores = torch.randn(2, 3, 4, dtype=torch.float64)
    with use_backend("triton"):  # float64 is never run by the kernel
        out = sinkhorn(scores, 5, dustbin=0.0)
    torch.testing.assert_close(out, reference.sinkhorn(scores, 5, dustbin=0.0))


@pytest.mark.parametrize("dustbin", [None, 0.4])
def test_reference_gradcheck_float64(dustbin):
    scores = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([[True, True, False], [True, True, True]])

    def fn(s):
        return reference.sinkhorn(s, 3, tau=0.7, row_mask=rows, dustbin=dustbin)

    assert torch.autograd.gradcheck(fn, (scores,))


@pytest.mark.parametrize("dustbin", [None, 0.4])
def test_public_gradcheck_float64_through_custom_op(dustbin):
    scores = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: sinkhorn(s, 3, tau=0.5, dustbin=dustbin), (scores,))


def _opcheck_args():
    scores = torch.randn(2, 3, 4, device=DEVICE, requires_grad=True)
    rows = torch.tensor([[True, False, True], [True, True, True]], device=DEVICE)
    grad = torch.randn(2, 4, 5, device=DEVICE)
    fwd = (scores, 3, 0.5, rows, None, 0.25)
    bwd = (grad, scores.detach(), 3, 0.5, rows, None, 0.25)
    return fwd, bwd


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_opcheck(backend):
    fwd, bwd = _opcheck_args()
    with use_backend(backend):
        torch.library.opcheck(torch.ops.gmpvis.sinkhorn.default, fwd)
        torch.library.opcheck(torch.ops.gmpvis.sinkhorn_backward.default, bwd)


def test_torch_compile_fullgraph():
    scores = torch.randn(2, 4, 3, requires_grad=True)
    cols = torch.tensor([[True, True, False], [True, True, True]])

    def step(s):
        return (sinkhorn(s, 4, tau=0.5, col_mask=cols, dustbin=0.1) ** 2).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    with use_backend("torch"):
        got = compiled(scores)
        (d_got,) = torch.autograd.grad(got, scores)
    want = (reference.sinkhorn(scores, 4, tau=0.5, col_mask=cols, dustbin=0.1) ** 2).sum()
    (d_want,) = torch.autograd.grad(want, scores)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(d_got, d_want)


@needs_triton
def test_torch_compile_inductor_with_permuted_scores(fresh_inductor):
    """Inductor checks every custom op output against its fake's strides: a transposed
    (non-contiguous) scores view, forward and backward, Triton through the interpreter."""
    base = torch.randn(2, 7, 5, device=DEVICE)
    scores = base.transpose(1, 2).requires_grad_()  # [2, 5, 7], strides of [2, 7, 5]

    def step(s):
        return (sinkhorn(s * 1.5, 4, tau=0.5, dustbin=0.1) ** 2).sum()

    with use_backend("triton"):
        got = torch.compile(step, fullgraph=True)(scores)
        (d_got,) = torch.autograd.grad(got, scores)
    leaf = scores.detach().clone().requires_grad_()
    want = (reference.sinkhorn(leaf * 1.5, 4, tau=0.5, dustbin=0.1) ** 2).sum()
    (d_want,) = torch.autograd.grad(want, leaf)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d_got, d_want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_deterministic_mode_backward_is_bitwise_reproducible(backend, deterministic):
    """No atomics on either backend: deterministic mode runs, and twice gives the same bits."""
    scores = torch.randn(3, 9, 6, device=DEVICE)
    g = torch.randn(3, 10, 7, device=DEVICE)

    def run():
        leaf = scores.clone().requires_grad_()
        with use_backend(backend):
            out = sinkhorn(leaf, 5, tau=0.3, dustbin=0.5)
        return torch.autograd.grad(out, leaf, g)[0]

    first, second = deterministic.twice(run)
    assert torch.equal(first, second) and first.abs().max() > 0


def test_autocast_gives_float32(op_dtypes):
    """Under autocast (bfloat16) the op receives float32 scores (autocast's float32 list,
    like softmax) and returns float32."""
    scores = torch.randn(2, 4, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16), op_dtypes, use_backend("torch"):
        out = sinkhorn(scores, 3, dustbin=0.0)
    assert op_dtypes.calls["sinkhorn"][0] == torch.float32
    assert out.dtype == torch.float32
    plain = type(op_dtypes)()  # outside autocast nothing is cast
    with plain, use_backend("torch"):
        assert sinkhorn(scores, 3).dtype == torch.bfloat16
    assert plain.calls["sinkhorn"][0] == torch.bfloat16


def test_value_errors_name_the_argument():
    s = torch.randn(2, 3, 4)
    bad = [
        (lambda: sinkhorn(torch.randn(3, 4), 2), "scores"),
        (lambda: sinkhorn(s.long(), 2), "scores"),
        (lambda: sinkhorn(s, -1), "iters"),
        (lambda: sinkhorn(s, 2.0), "iters"),
        (lambda: sinkhorn(s, 2, tau=0.0), "tau"),
        (lambda: sinkhorn(s, 2, tau=float("inf")), "tau"),
        (lambda: sinkhorn(s, 2, row_mask=torch.ones(2, 4, dtype=torch.bool)), "row_mask"),
        (lambda: sinkhorn(s, 2, col_mask=torch.ones(2, 4)), "col_mask"),
        (lambda: sinkhorn(s, 2, col_mask=torch.ones(3, 4, dtype=torch.bool)), "col_mask"),
        (lambda: sinkhorn(s, 2, dustbin=float("nan")), "dustbin"),
        (lambda: sinkhorn(s, 2, dustbin=torch.tensor(1.0)), "dustbin"),
    ]
    for fn, name in bad:
        with pytest.raises(ValueError, match=name):
            fn()


@needs_triton
def test_triton_size_limit_is_a_clear_error():
    ok = torch.randn(1, sk_module.MAX_SIDE, 2, device=DEVICE)
    with use_backend("triton"), pytest.raises(ValueError, match="at most 128 per side"):
        sinkhorn(ok, 1, dustbin=0.0)  # 128 + dustbin = 129 rows
    with use_backend("torch"):  # the reference has no limit
        assert sinkhorn(ok, 1, dustbin=0.0).shape == (1, 129, 3)


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with use_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        sinkhorn(torch.randn(1, 2, 2), 1)


# ----------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape", [(64, 64, 64, 50, None), (8, 100, 100, 20, 1.0), (4, 128, 37, 10, None)]
)
def test_gpu_large_shapes_match_reference(shape, dtype):
    B, n1, n2, iters, dustbin = shape
    rows, cols = _masks(B, n1, n2, p=0.1)
    scores = torch.randn(B, n1, n2, device="cuda").to(dtype)
    out, d_out, ref, d_ref = _both(
        scores, iters, tau=0.5, row_mask=rows, col_mask=cols, dustbin=dustbin
    )
    atol_f, atol_g = TOL.get(dtype, (1e-2, 3e-2))  # bfloat16: 8 mantissa bits
    torch.testing.assert_close(out, ref, atol=atol_f, rtol=0)
    torch.testing.assert_close(d_out, d_ref, atol=atol_g, rtol=1e-2)


# ----------------------------------------------------------------------------- non-finite inputs
# The policy (gmpvis.kernels.reference's docstring): NaN propagates, masked entries take no
# part; +inf is capped, -inf is "impossible". Both backends alike.


def _same_nan_and_values(a, b, atol=1e-5):
    assert torch.equal(a.isnan(), b.isnan())
    torch.testing.assert_close(a.nan_to_num(0.0), b.nan_to_num(0.0), atol=atol, rtol=0)


@pytest.mark.filterwarnings("ignore:.*(encountered|All-NaN).*:RuntimeWarning")  # interpreter
@needs_triton
@pytest.mark.parametrize("dustbin", [None, 0.5])
def test_nan_scores_propagate_identically(dustbin):
    """A NaN in a real score makes its batch element NaN on both backends; one in a masked
    entry is ignored (that element matches the problem without it)."""
    scores = torch.randn(2, 4, 5, device=DEVICE)
    rows = torch.ones(2, 4, dtype=torch.bool, device=DEVICE)
    rows[1, 2] = False
    scores[0, 1, 3] = float("nan")
    scores[1, 2, 0] = float("nan")  # masked row
    with use_backend("triton"):
        out = sinkhorn(scores, 4, row_mask=rows, dustbin=dustbin)
    ref = reference.sinkhorn(scores, 4, row_mask=rows, dustbin=dustbin)
    _same_nan_and_values(out, ref)
    assert out[0].isnan().any() and not out[1].isnan().any()
    clean = scores.clone()
    clean[1, 2, 0] = 0.0
    torch.testing.assert_close(out[1], reference.sinkhorn(clean, 4, row_mask=rows,
                                                          dustbin=dustbin)[1])  # fmt: skip


@needs_triton
@pytest.mark.parametrize("dustbin", [None, 0.0])
@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 3, 0), (1, 0, 0)])
def test_empty_sides_same_on_both_backends(shape, dustbin):
    """0 rows or 0 columns (the reference used to raise IndexError without a dustbin)."""
    scores = torch.randn(*shape, device=DEVICE, requires_grad=True)
    results = []
    for backend in ("torch", "triton"):
        with use_backend(backend):
            out = sinkhorn(scores, 3, dustbin=dustbin)
            (grad,) = torch.autograd.grad(out.sum(), scores, allow_unused=True)
        results.append((out, grad))
    (o1, g1), (o2, g2) = results
    extra = dustbin is not None
    assert o1.shape == o2.shape == (shape[0], shape[1] + extra, shape[2] + extra)
    torch.testing.assert_close(o1, o2)
    assert g1.shape == g2.shape == scores.shape


@pytest.mark.filterwarnings("ignore:.*(encountered|All-NaN).*:RuntimeWarning")  # interpreter
@needs_triton
@pytest.mark.parametrize("dustbin", [-3e38, 3e38])
def test_dustbin_beyond_float32_range_same_on_both_backends(dustbin):
    """dustbin / tau beyond float32's range: -inf below (the reference failed a float
    conversion), capped at 1e30 above."""
    scores = torch.randn(2, 3, 4, device=DEVICE)
    with use_backend("triton"):
        out = sinkhorn(scores, 5, tau=0.5, dustbin=dustbin)
    ref = reference.sinkhorn(scores, 5, tau=0.5, dustbin=dustbin)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
