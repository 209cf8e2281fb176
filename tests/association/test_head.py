"""The motion-aware graph matching head: shapes, masks, Sinkhorn marginals, equivariance,
float64 gradients, the lambda = 0 ablation, autocast, and an untrained head's preference."""

from __future__ import annotations

import pytest
import torch

from gmpvis import kernels
from gmpvis.association import GraphMatchingHead, ProposalNodes, TrackNodes
from gmpvis.infer.tracker import accept_matches

E = 6
# Real rows and columns of S sum to 1 after the head's Sinkhorn iterations (SuperGlue
# marginals; the last half-step normalises columns, so rows carry the residual). At the head's
# default iteration count small unbalanced graphs (1 track x 3 proposals) are not converged:
# the default tolerance bounds that residual; with CONVERGED_ITERS the float32 floor is reached.
MARGINAL_TOL_DEFAULT = 2e-2
MARGINAL_TOL = 1e-5
CONVERGED_ITERS = 100


def _boxes(*shape: int, dtype=torch.float32) -> torch.Tensor:
    xy = torch.rand(*shape, 2, dtype=dtype) * 0.6 + 0.2
    wh = torch.rand(*shape, 2, dtype=dtype) * 0.25 + 0.05
    return torch.cat([xy, wh], -1)


def random_graphs(B: int, n: int, m: int, real_n=None, real_m=None, dtype=torch.float32):
    """Random tracks / proposals; ``real_n[b]`` / ``real_m[b]`` real nodes, the rest padding."""
    real_n = real_n or [n] * B
    real_m = real_m or [m] * B
    tracks = TrackNodes(
        torch.randn(B, n, E, dtype=dtype),
        _boxes(B, n, dtype=dtype),
        torch.randint(0, 6, (B, n)).to(dtype),
        torch.arange(n)[None, :] < torch.tensor(real_n)[:, None],
    )
    props = ProposalNodes(
        torch.randn(B, m, E, dtype=dtype),
        _boxes(B, m, dtype=dtype),
        torch.rand(B, m, dtype=dtype),
        torch.arange(m)[None, :] < torch.tensor(real_m)[:, None],
    )
    return tracks, props


def marginal_errors(S: torch.Tensor, tracks: TrackNodes, props: ProposalNodes):
    """-> (largest |row sum - 1|, largest |column sum - 1|) over the real rows and columns,
    and the largest relative error of the dustbin row / column masses (#columns, #rows)."""
    n, m = tracks.size, props.size
    row_err = col_err = bin_err = 0.0
    for b in range(S.shape[0]):
        r = tracks.mask[b].nonzero().flatten().tolist() + [n]
        c = props.mask[b].nonzero().flatten().tolist() + [m]
        P = S[b][r][:, c].detach().double()
        rows, cols = P.sum(1), P.sum(0)
        row_err = max(row_err, float((rows[:-1] - 1).abs().max()))
        col_err = max(col_err, float((cols[:-1] - 1).abs().max()))
        bin_err = max(
            bin_err,
            abs(float(rows[-1]) / (len(c) - 1) - 1) if len(c) > 1 else 0.0,
            abs(float(cols[-1]) / (len(r) - 1) - 1) if len(r) > 1 else 0.0,
        )
    return row_err, col_err, bin_err


def test_shape_padding_and_marginals_at_defaults():
    head = GraphMatchingHead(embed_dim=E)
    B, n, m = 3, 5, 4
    tracks, props = random_graphs(B, n, m, real_n=[5, 3, 1], real_m=[4, 2, 3])
    S = head(tracks, props)
    assert S.shape == (B, n + 1, m + 1) and S.dtype == torch.float32
    assert torch.isfinite(S).all() and (S >= 0).all()
    # padded rows / columns carry no mass at all
    assert (S[1, 3:n] == 0).all() and (S[1, :, 2:m] == 0).all()
    assert (S[2, 1:n] == 0).all() and (S[2, :, 3:m] == 0).all()
    errors = marginal_errors(S, tracks, props)
    assert max(errors) < MARGINAL_TOL_DEFAULT, errors
    assert errors[1] < MARGINAL_TOL  # columns are normalised last: exact up to rounding
    head.sinkhorn_iters = CONVERGED_ITERS
    S = head(tracks, props)
    assert max(marginal_errors(S, tracks, props)) < MARGINAL_TOL
    assert (S[:, :n, :m] > 1e-6).any()  # not everything in the dustbin


def test_marginals_converge_in_float64():
    """In float64 the residual is Sinkhorn's own, not float32 rounding: it shrinks with the
    iteration count and vanishes."""
    head = GraphMatchingHead(embed_dim=E).double()
    tracks, props = random_graphs(2, 6, 5, real_n=[6, 4], real_m=[5, 2], dtype=torch.float64)
    errors = []
    with kernels.use_backend("torch"), torch.no_grad():
        for iters in (2, 10, 400):
            head.sinkhorn_iters = iters
            S = head(tracks, props)
            assert S.dtype == torch.float64
            errors.append(max(marginal_errors(S, tracks, props)))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-12, errors


def test_permuting_tracks_and_proposals_permutes_the_assignment():
    head = GraphMatchingHead(embed_dim=E)
    n, m = 5, 6
    tracks, props = random_graphs(2, n, m)
    p1, p2 = torch.randperm(n), torch.randperm(m)
    S = head(tracks, props)
    tracks_p = TrackNodes(
        tracks.embeds[:, p1], tracks.boxes[:, p1], tracks.missed[:, p1], tracks.mask
    )
    props_p = ProposalNodes(
        props.embeds[:, p2], props.boxes[:, p2], props.scores[:, p2], props.mask
    )
    Sp = head(tracks_p, props_p)
    rows = torch.cat([p1, torch.tensor([n])])
    cols = torch.cat([p2, torch.tensor([m])])
    torch.testing.assert_close(Sp, S[:, rows][:, :, cols], rtol=1e-4, atol=1e-6)
    assert (S[:, :n, :m].max() - S[:, :n, :m].min()) > 0.05  # a non-trivial assignment


def test_gradcheck_float64_inputs_and_parameters():
    """Gradients of S with respect to every node input and every head parameter, against
    finite differences (reference kernels, float64), a padded node included."""
    torch.manual_seed(0)
    head = GraphMatchingHead(embed_dim=3, hidden=4, edge_dim=3, iters=2, sinkhorn_iters=8)
    with torch.no_grad():  # the last MLP layer starts at 0: make the MLP's path carry gradient
        head.pair_mlp[-1].weight.normal_(0.0, 0.5)
    head = head.double()
    B, n, m = 2, 3, 2
    tracks, props = random_graphs(B, n, m, real_n=[3, 2], real_m=[2, 2], dtype=torch.float64)
    tracks.embeds = tracks.embeds[..., :3].contiguous()
    props.embeds = props.embeds[..., :3].contiguous()
    names = [k for k, _ in head.named_parameters()]
    assert {"edge_geo.weight", "edge_app.weight", "log_lambda", "dustbin"} <= set(names)
    params = [p.detach().clone().requires_grad_() for _, p in head.named_parameters()]
    inputs = [
        t.detach().clone().requires_grad_()
        for t in (tracks.embeds, tracks.boxes, props.embeds, props.boxes, props.scores)
    ]

    def fn(te, tb, pe, pb, ps, *values):
        t = TrackNodes(te, tb, tracks.missed, tracks.mask)
        p = ProposalNodes(pe, pb, ps, props.mask)
        return torch.func.functional_call(head, dict(zip(names, values, strict=True)), (t, p))

    with kernels.use_backend("torch"):
        assert torch.autograd.gradcheck(fn, (*inputs, *params), eps=1e-6, atol=1e-6, rtol=1e-4)
        S = fn(*inputs, *params)
        S[:, :n, :m].pow(2).sum().backward()
    g = dict(zip(names, (p.grad for p in params), strict=True))
    assert g["edge_geo.weight"].abs().sum() > 0 and g["log_lambda"].abs() > 0  # Q is used
    assert (inputs[0].grad[1, 2] == 0).all()  # the padded track gets no gradient


def test_lambda_zero_has_no_quadratic_term_and_differs():
    torch.manual_seed(1)
    quad = GraphMatchingHead(embed_dim=E, lam=0.5)
    torch.manual_seed(1)
    linear = GraphMatchingHead(embed_dim=E, lam=0.0)
    names = {k for k, _ in linear.named_parameters()}
    assert not any(k.startswith(("edge_", "log_lambda")) for k in names)
    assert names < {k for k, _ in quad.named_parameters()}
    assert float(linear.lam) == 0.0 and quad.lam.item() == pytest.approx(0.5)
    for k, v in linear.state_dict().items():  # same node parameters, same seed
        torch.testing.assert_close(v, quad.state_dict()[k], rtol=0, atol=0)
    n = 5
    tracks, props = random_graphs(1, n, n)
    # one graph: the proposals are the tracks shuffled (each object's geometry relative to the
    # others is preserved), so the quadratic term adds agreeing evidence
    perm = torch.randperm(n)
    props = ProposalNodes(tracks.embeds[:, perm], tracks.boxes[:, perm], props.scores, props.mask)
    S_lin, S_quad = linear(tracks, props), quad(tracks, props)
    assert (S_lin - S_quad).abs().max() > 1e-3
    # lambda = 0 is exactly the Sinkhorn of the node affinity
    node = linear.node_affinity(tracks, props)
    ref = kernels.sinkhorn(node - linear.dustbin, linear.sinkhorn_iters, tau=1.0, dustbin=0.0)
    torch.testing.assert_close(S_lin, ref, rtol=1e-5, atol=1e-6)
    true = perm.argsort()  # track i is proposal true[i]
    gain = S_quad[0, torch.arange(n), true] - S_lin[0, torch.arange(n), true]
    assert (gain > 0).all()  # consistent edges move mass onto the true pairs
    # fewer than two nodes a side: no edges, so the same result as lambda = 0
    one_t, one_p = random_graphs(1, 1, 3)
    torch.testing.assert_close(quad(one_t, one_p), linear(one_t, one_p), rtol=0, atol=0)


def test_autocast_bf16_inputs_give_float32_output():
    head = GraphMatchingHead(embed_dim=E)
    tracks, props = random_graphs(2, 3, 5, real_n=[3, 2])
    low_t = TrackNodes(tracks.embeds.bfloat16(), tracks.boxes, tracks.missed, tracks.mask)
    low_p = ProposalNodes(props.embeds.bfloat16(), props.boxes.bfloat16(), props.scores, props.mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        S = head(low_t, low_p)
    assert S.dtype == torch.float32 and S.shape == (2, 4, 6)
    same_t = TrackNodes(low_t.embeds.float(), tracks.boxes, tracks.missed, tracks.mask)
    same_p = ProposalNodes(low_p.embeds.float(), low_p.boxes.float(), props.scores, props.mask)
    torch.testing.assert_close(S, head(same_t, same_p), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("same_look", [False, True])
def test_untrained_head_prefers_the_true_pair(same_look):
    """Each proposal is its track's box moved a little with the same embedding, in shuffled
    order. With ``same_look`` every object has one embedding: only the motion-predicted box
    tells them apart."""
    head = GraphMatchingHead(embed_dim=E).eval()
    n = 4
    embeds = torch.randn(1, n, E)
    if same_look:
        embeds = embeds[:, :1].expand(1, n, E).contiguous()
    boxes = torch.tensor([[[0.15, 0.3, 0.1, 0.12], [0.4, 0.3, 0.1, 0.1], [0.65, 0.6, 0.12, 0.1],
                           [0.85, 0.8, 0.1, 0.1]]])  # fmt: skip
    tracks = TrackNodes(embeds, boxes, torch.ones(1, n), torch.ones(1, n, dtype=torch.bool))
    perm = torch.randperm(n)
    moved = boxes[:, perm] + torch.tensor([0.01, -0.008, 0.002, 0.0])
    props = ProposalNodes(
        embeds[:, perm], moved, torch.full((1, n), 0.9), torch.ones(1, n, dtype=torch.bool)
    )
    with torch.no_grad():
        S = head(tracks, props)[0]
    true = perm.argsort()
    assert torch.equal(S[:n].argmax(1), true)  # over the real columns and the dustbin
    assert torch.equal(S[:, :n].argmax(0), true.argsort())
    assert S[torch.arange(n), true].min() > 0.5
    assert accept_matches(S[:n, :n], 0.2) == {i: int(true[i]) for i in range(n)}


def test_mismatched_graphs_raise():
    head = GraphMatchingHead(embed_dim=E)
    tracks, props = random_graphs(2, 3, 4)
    bad = ProposalNodes(props.embeds[..., :4], props.boxes, props.scores, props.mask)
    with pytest.raises(ValueError, match=r"proposal embeddings \(2, 4, 4\)"):
        head(tracks, bad)
    bad = ProposalNodes(props.embeds[:1], props.boxes[:1], props.scores[:1], props.mask[:1])
    with pytest.raises(ValueError, match="do not fit track embeddings"):
        head(tracks, bad)
