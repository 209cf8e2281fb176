"""Association losses: ``L_match`` on assignment matrices, and the contrastive embedding loss.

``match_loss``: negative log-likelihood of the true assignment, balanced between the
positive pairs and the dustbin entries (each term a mean over its own entries, so that many
unmatched nodes do not drown the few matches).

``contrastive_loss``: multi-positive InfoNCE over instance embeddings (as IDOL / CTVIS):
for an anchor ``i`` with positives ``P(i)`` (same object, other frames),
``L_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / tau) / sum_{j != i} exp(s_ij / tau) )``
with cosine ``s``; every other object in the batch is a negative, the look-alikes of the
same video (same category, size and colour) the hardest ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DUSTBIN = -1  # row target: the dustbin column
IGNORE = -2  # column target: no loss (a duplicate of a matched proposal)
PAD = -100  # padding node


def match_loss(S: torch.Tensor, row_target: torch.Tensor, col_target: torch.Tensor):
    """S ``[B, n + 1, m + 1]`` soft assignment; row_target ``[B, n]``: the true column, or
    ``DUSTBIN``, or ``PAD``; col_target ``[B, m]``: ``DUSTBIN`` (the proposal belongs to no
    track), ``IGNORE`` / ``PAD`` (no term), or >= 0 (matched by a row: covered there).
    -> (loss, number of positive pairs)."""
    B, n1, m1 = S.shape
    n, m = n1 - 1, m1 - 1
    log_s = torch.log(S.float().clamp_min(1e-9))
    b, i = torch.nonzero(row_target >= 0, as_tuple=True)
    pos = -log_s[b, i, row_target[b, i]]
    b, i = torch.nonzero(row_target == DUSTBIN, as_tuple=True)
    dust_rows = -log_s[b, i, m]
    b, a = torch.nonzero(col_target == DUSTBIN, as_tuple=True)
    dust_cols = -log_s[b, n, a]
    dust = torch.cat([dust_rows, dust_cols])
    loss = log_s.sum() * 0.0
    if pos.numel():
        loss = loss + pos.mean()
    if dust.numel():
        loss = loss + dust.mean()
    return loss, int(pos.numel())


def contrastive_loss(embeds: torch.Tensor, ids: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """embeds ``[N, E]``, ids ``[N]`` (same id = same object; ids must differ across
    videos) -> scalar loss (0 when no anchor has a positive)."""
    if embeds.shape[0] < 2:
        return embeds.sum() * 0.0
    z = F.normalize(embeds.float(), dim=-1)
    sim = z @ z.T / tau
    eye = torch.eye(len(ids), dtype=torch.bool, device=embeds.device)
    sim = sim.masked_fill(eye, float("-inf"))
    pos = (ids[:, None] == ids[None, :]) & ~eye
    has = pos.any(1)
    if not has.any():
        return embeds.sum() * 0.0
    log_p = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    per_anchor = -(log_p.masked_fill(~pos, 0.0).sum(1) / pos.sum(1).clamp_min(1))
    return per_anchor[has].mean()
