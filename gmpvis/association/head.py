"""Motion-aware graph matching head: tracks x proposals -> soft assignment with a dustbin.

Node affinity. For every (track i, proposal a) pair, :func:`pair_features` gives the evidence
(embedding cosine, IoU of the motion-predicted track box with the proposal, centre offset
over the predicted size, log size ratios, frames missed, proposal score); a small MLP plus a
linear term (initialised to ``2 cos + 4 IoU - |dx| - |dy| - 2``, a sensible untrained
matcher) maps it to a logit ``B[i, a]``.

Quadratic term. Edges of each graph are the geometry of box j relative to box i
(:func:`edge_geometry`, on predicted boxes for tracks) plus the difference of their
embeddings, projected linearly to ``c`` dims; ``kernels.gm_affinity`` computes
``Q(S)[i, a] = sum_{j != i, b != a} exp(-||e1_ij - e2_ab||^2) S[j, b]`` on the fly (the
projection's learned scale plays the bandwidth's part), normalised by ``min(n, m) - 1`` so it
lies in [0, 1].

Graduated assignment: ``S_0 = sinkhorn(B + beta)``, then ``iters`` times
``S = sinkhorn(B + lambda Q(S) + beta)``, where ``beta`` is minus the learned dustbin score
(the kernel's dustbin is fixed at 0) and ``lambda >= 0`` is learned (``lambda = 0`` turns
the quadratic term off: the linear-assignment ablation).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gmpvis import kernels
from gmpvis.association.nodes import (
    PAIR_FEATURES,
    ProposalNodes,
    TrackNodes,
    edge_geometry,
    pair_features,
)

_INIT_LINEAR = {"cosine": 2.0, "iou": 4.0, "dx": -1.0, "dy": -1.0}


class GraphMatchingHead(nn.Module):
    """See the module docstring. ``lam = 0`` builds the head without a quadratic term."""

    def __init__(
        self,
        *,
        embed_dim: int,
        hidden: int = 32,
        edge_dim: int = 8,
        iters: int = 2,
        lam: float = 0.5,
        sinkhorn_iters: int = 50,
        tau: float = 1.0,
        max_missed: int = 10,
    ) -> None:
        super().__init__()
        F = len(PAIR_FEATURES)
        self.pair_mlp = nn.Sequential(
            nn.Linear(F, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )  # fmt: skip
        nn.init.zeros_(self.pair_mlp[-1].weight)
        nn.init.zeros_(self.pair_mlp[-1].bias)
        self.pair_linear = nn.Linear(F, 1)
        with torch.no_grad():
            self.pair_linear.weight.zero_()
            for name, w in _INIT_LINEAR.items():
                self.pair_linear.weight[0, PAIR_FEATURES.index(name)] = w
            self.pair_linear.bias.fill_(-2.0)
        self.dustbin = nn.Parameter(torch.zeros(()))  # learned dustbin score
        self.use_quadratic = lam > 0 and iters > 0
        if self.use_quadratic:
            self.edge_geo = nn.Linear(4, edge_dim, bias=False)
            self.edge_app = nn.Linear(embed_dim, edge_dim, bias=False)
            with torch.no_grad():  # geometry first: identity on its 4 dims, the rest small
                self.edge_geo.weight.normal_(0.0, 0.1)
                k = min(4, edge_dim)
                self.edge_geo.weight[:k, :k] = torch.eye(k)
                self.edge_app.weight.normal_(0.0, 0.01)
            self.log_lambda = nn.Parameter(torch.tensor(math.log(lam)))
        self.iters, self.sinkhorn_iters, self.tau = iters, sinkhorn_iters, tau
        # the frames-missed feature is divided by max_missed + 1: a fixed scale, so that tuning
        # the tracker's max_missing does not change what a trained head reads
        self.max_missed = max_missed

    @property
    def lam(self) -> torch.Tensor:
        if not self.use_quadratic:
            return torch.zeros(())
        return self.log_lambda.exp()

    def node_affinity(self, tracks: TrackNodes, props: ProposalNodes) -> torch.Tensor:
        """``[B, n, m]`` logits of the node pairs."""
        feats = pair_features(tracks, props, self.max_missed).to(self.pair_linear.weight.dtype)
        return (self.pair_mlp(feats) + self.pair_linear(feats)).squeeze(-1)

    def edges(self, embeds: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``[B, n, E]``, ``[B, n, 4]`` -> edge features ``[B, n, n, c]``."""
        dtype = self.edge_geo.weight.dtype  # float32, or float64 for a gradcheck
        e = embeds.to(dtype)
        app = e[:, None, :, :] - e[:, :, None, :]  # e_j - e_i
        return self.edge_geo(edge_geometry(boxes).to(dtype)) + self.edge_app(app)

    def _sinkhorn(self, logits, tracks: TrackNodes, props: ProposalNodes) -> torch.Tensor:
        valid = (tracks.mask[:, :, None] & props.mask[:, None, :]).float()
        return kernels.sinkhorn(
            (logits - self.dustbin) * valid,
            self.sinkhorn_iters,
            tau=self.tau,
            row_mask=tracks.mask,
            col_mask=props.mask,
            dustbin=0.0,
        )

    def forward(self, tracks: TrackNodes, props: ProposalNodes) -> torch.Tensor:
        """-> soft assignment ``[B, n + 1, m + 1]`` (last row / column: the dustbin)."""
        B, n, m = tracks.embeds.shape[0], tracks.size, props.size
        if props.embeds.shape[0] != B or props.embeds.shape[-1] != tracks.embeds.shape[-1]:
            raise ValueError(
                f"associate: proposal embeddings {tuple(props.embeds.shape)} do not fit "
                f"track embeddings {tuple(tracks.embeds.shape)}"
            )
        dev = tracks.embeds.device
        # small tensors, and Sinkhorn / the quadratic term want float32: no autocast here
        with torch.autocast(dev.type, enabled=False):
            node = self.node_affinity(tracks, props)
            S = self._sinkhorn(node, tracks, props)
            if not self.use_quadratic or n < 2 or m < 2:
                return S
            e1 = self.edges(tracks.embeds, tracks.boxes)
            e2 = self.edges(props.embeds, props.boxes)
            zero1, zero2 = node.new_zeros(B, n, 1), node.new_zeros(B, m, 1)
            pairs = torch.minimum(tracks.mask.sum(1), props.mask.sum(1)).to(node.dtype)
            scale = (self.lam / (pairs - 1).clamp_min(1.0))[:, None, None]
            for _ in range(self.iters):
                quad = kernels.gm_affinity(
                    zero1, zero2, e1, e2, S[:, :n, :m], sigma=1.0,
                    mask1=tracks.mask, mask2=props.mask,
                )  # fmt: skip
                S = self._sinkhorn(node + scale * quad, tracks, props)
            return S
