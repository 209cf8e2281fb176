"""L_match on assignment matrices and the multi-positive contrastive embedding loss."""

from __future__ import annotations

import math

import pytest
import torch

from gmpvis.association import contrastive_loss, match_loss
from gmpvis.association.losses import DUSTBIN, IGNORE, PAD


def _assignment(B: int, n: int, m: int) -> torch.Tensor:
    """A random ``[B, n + 1, m + 1]`` matrix of probabilities in (0.01, 1)."""
    return (torch.rand(B, n + 1, m + 1) * 0.98 + 0.01).requires_grad_()


def test_match_loss_by_hand():
    """Clip 0: track 0 -> column 1, track 1 gone (dustbin), proposal 0 newborn (dustbin
    row), proposal 1 matched (covered by its row). Clip 1: track 0 -> column 0, track 1 is
    padding, proposal 1 a duplicate (ignored), proposal 2 padding."""
    n, m = 2, 3
    S = _assignment(2, n, m)
    rows = torch.tensor([[1, DUSTBIN], [0, PAD]])
    cols = torch.tensor([[DUSTBIN, 0, PAD], [0, IGNORE, PAD]])
    loss, num_pos = match_loss(S, rows, cols)
    s = S.detach()
    positives = [-math.log(s[0, 0, 1]), -math.log(s[1, 0, 0])]
    dustbins = [-math.log(s[0, 1, m]), -math.log(s[0, n, 0])]
    # each term a mean over its own entries: many dustbin entries do not drown the matches
    expected = sum(positives) / 2 + sum(dustbins) / 2
    assert num_pos == 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    unbalanced = (sum(positives) + sum(dustbins)) / 4
    assert abs(loss.item() - unbalanced) > 1e-3  # the balance is not a plain mean

    loss.backward()
    used = torch.zeros_like(s, dtype=torch.bool)
    used[0, 0, 1] = used[1, 0, 0] = used[0, 1, m] = used[0, n, 0] = True
    assert (S.grad[used] < 0).all()  # raising a target entry lowers the loss
    assert (S.grad[~used] == 0).all()  # PAD, IGNORE and everything else: no term
    torch.testing.assert_close(S.grad[0, 0, 1], -0.5 / s[0, 0, 1])


def test_pad_and_ignore_contribute_nothing():
    n, m = 3, 4
    S = _assignment(1, n, m)
    rows = torch.tensor([[2, DUSTBIN, PAD]])
    cols = torch.tensor([[DUSTBIN, IGNORE, 0, PAD]])
    base = match_loss(S, rows, cols)[0]
    changed = S.detach().clone()
    changed[0, 2] = 0.5  # the padded row
    changed[0, :, 3] = 0.5  # the padded column
    changed[0, n, 1] = 1e-6  # the ignored proposal's dustbin entry
    changed[0, 0, 0] = changed[0, 0, 1] = changed[0, 0, 3] = 1e-3  # non-target entries
    torch.testing.assert_close(match_loss(changed, rows, cols)[0], base.detach())


def test_match_loss_limits_and_degenerate_cases():
    S = _assignment(1, 2, 2)
    # no positive pair: only the dustbin term, finite, no NaN from an empty mean
    loss, num_pos = match_loss(S, torch.tensor([[DUSTBIN, DUSTBIN]]), torch.tensor([[PAD, PAD]]))
    s = S.detach()
    assert num_pos == 0
    assert loss.item() == pytest.approx(-(math.log(s[0, 0, 2]) + math.log(s[0, 1, 2])) / 2)
    # nothing to supervise: exactly 0 and still differentiable (graph connected to S)
    loss, num_pos = match_loss(S, torch.tensor([[PAD, PAD]]), torch.tensor([[IGNORE, PAD]]))
    assert loss.item() == 0.0 and num_pos == 0 and loss.requires_grad
    loss.backward()
    assert (S.grad == 0).all()
    # a zero probability is clamped: a large but finite loss
    Z = torch.zeros(1, 2, 2)
    loss = match_loss(Z, torch.tensor([[0]]), torch.tensor([[0]]))[0]
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-math.log(1e-9), rel=1e-4)


def _contrastive_by_formula(embeds: torch.Tensor, ids: torch.Tensor, tau: float) -> float:
    """``L_i = -1/|P(i)| sum_p log(exp(s_ip / tau) / sum_{j != i} exp(s_ij / tau))``,
    averaged over anchors with a positive; loops in float64."""
    z = embeds.double()
    z = z / z.norm(dim=1, keepdim=True)
    N = len(ids)
    losses = []
    for i in range(N):
        positives = [p for p in range(N) if p != i and ids[p] == ids[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(N) if j != i)
        terms = [math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in positives]
        losses.append(-sum(terms) / len(positives))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_contrastive_matches_the_formula(tau):
    for N, K in [(7, 3), (12, 5), (5, 5)]:
        embeds = torch.randn(N, 6) * 2
        ids = torch.randint(0, K, (N,))
        ids[1] = ids[0]  # at least one positive pair
        got = contrastive_loss(embeds, ids, tau)
        assert got.item() == pytest.approx(_contrastive_by_formula(embeds, ids, tau), rel=2e-5)


def test_contrastive_prefers_embeddings_that_name_the_object():
    ids = torch.tensor([0, 0, 0, 1, 1, 2])
    centres = torch.randn(3, 8) * 3
    named = centres[ids] + 0.05 * torch.randn(6, 8)
    shuffled = named[torch.randperm(6)]
    assert contrastive_loss(named, ids) < contrastive_loss(shuffled, ids)


def test_contrastive_zero_without_positives_and_finite_gradient():
    embeds = torch.randn(5, 4, requires_grad=True)
    loss = contrastive_loss(embeds, torch.arange(5))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (embeds.grad == 0).all()
    one = torch.randn(1, 4, requires_grad=True)
    assert contrastive_loss(one, torch.tensor([3])).item() == 0.0
    empty = torch.randn(0, 4, requires_grad=True)
    assert contrastive_loss(empty, torch.zeros(0, dtype=torch.long)).item() == 0.0

    embeds = torch.randn(8, 4, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    loss = contrastive_loss(embeds.bfloat16(), ids)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(embeds.grad).all() and embeds.grad.abs().sum() > 0
    # identical embeddings of one object: still finite (normalised, no 0/0)
    same = torch.ones(4, 4, requires_grad=True)
    loss = contrastive_loss(same, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(same.grad).all()
    assert loss.item() == pytest.approx(math.log(3), rel=1e-5)  # all similarities equal
