"""Graph-matching association head (GMP-VIS).

Two graphs (proposals of two frames, or tracks and proposals) with node embeddings
``[B, n, E]`` and boxes ``[B, n, 4]``:

* nodes: embeddings -> linear -> cross-graph layers (self-attention within a graph, then
  attention from each graph's nodes to the other graph's nodes) -> L2-normalised vectors;
  node affinity ``B[i, a] = <u_i, v_a>`` (cosine, in [-1, 1]).
* edges ``(i, j)``: geometry of box j relative to box i
  ``(dx, dy, dx / w_i, dy / h_i, log(w_j / w_i), log(h_j / h_i))`` and appearance
  ``e_j - e_i``, each projected linearly, summed: ``[B, n, n, c]``.
* graduated assignment: ``S_0 = sinkhorn(s * B + b)``, then ``iters`` times
  ``S = sinkhorn(s * (B + lambda * Q(S) / (n - 1)) + b)`` where ``kernels.gm_affinity`` gives
  ``B + Q(S)`` with ``Q`` the Gaussian edge-to-edge affinity applied to ``S`` on the fly. The
  division by ``n - 1`` (real nodes of the smaller graph) keeps ``Q`` in [0, 1]. ``s`` (scale)
  and ``b`` (bias, i.e. minus a learned dustbin score relative to the fixed ``dustbin``) are
  learned. Output: ``[B, n1 + 1, n2 + 1]`` soft assignment with a dustbin row and column.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gmpvis import kernels
from gmpvis.model.encoder import ffn


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, n_heads: int
) -> torch.Tensor:
    """Multi-head attention ``[B, n, D] x [B, m, D]`` with ``key_mask [B, m]`` (True = real).

    Masked keys get the dtype's lowest logit rather than -inf, so a graph without any real
    node gives finite (and later masked) outputs instead of NaN.
    """
    B, n, D = q.shape
    m = k.shape[1]
    dh = D // n_heads
    qh = q.view(B, n, n_heads, dh).transpose(1, 2)
    kh = k.view(B, m, n_heads, dh).transpose(1, 2)
    vh = v.view(B, m, n_heads, dh).transpose(1, 2)
    logits = qh @ kh.transpose(-1, -2) / math.sqrt(dh)  # [B, H, n, m]
    logits = logits.masked_fill(~key_mask[:, None, None, :], torch.finfo(logits.dtype).min)
    out = logits.softmax(-1) @ vh
    return out.transpose(1, 2).reshape(B, n, D)


class CrossGraphLayer(nn.Module):
    """Intra-graph self-attention, inter-graph cross-attention and FFN (weights shared by the
    two graphs so that the head is symmetric)."""

    def __init__(self, d: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv_self = nn.Linear(d, 3 * d)
        self.out_self = nn.Linear(d, d)
        self.q_cross = nn.Linear(d, d)
        self.kv_cross = nn.Linear(d, 2 * d)
        self.out_cross = nn.Linear(d, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = ffn(d, d_ff, 0.0)

    def _self(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_self(h).chunk(3, -1)
        return self.norm1(h + self.out_self(masked_attention(q, k, v, mask, self.n_heads)))

    def _cross(self, h: torch.Tensor, other: torch.Tensor, other_mask: torch.Tensor):
        k, v = self.kv_cross(other).chunk(2, -1)
        att = masked_attention(self.q_cross(h), k, v, other_mask, self.n_heads)
        return self.norm2(h + self.out_cross(att))

    def forward(self, h1, h2, mask1, mask2) -> tuple[torch.Tensor, torch.Tensor]:
        """h1 ``[B, n1, d]``, h2 ``[B, n2, d]``, masks ``[B, n]`` bool (True = real)."""
        h1, h2 = self._self(h1, mask1), self._self(h2, mask2)
        h1, h2 = self._cross(h1, h2, mask2), self._cross(h2, h1, mask1)
        h1 = self.norm3(h1 + self.ffn(h1))
        h2 = self.norm3(h2 + self.ffn(h2))
        return h1, h2


def box_edge_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """boxes ``[B, n, 4]`` cxcywh -> ``[B, n, n, 6]`` geometry of box j relative to box i."""
    cx, cy, w, h = boxes.float().unbind(-1)
    w, h = w.clamp_min(1e-3), h.clamp_min(1e-3)
    dx = cx[:, None, :] - cx[:, :, None]  # [B, i, j] = cx_j - cx_i
    dy = cy[:, None, :] - cy[:, :, None]
    geo = [
        dx,
        dy,
        (dx / w[:, :, None]).clamp(-4, 4),
        (dy / h[:, :, None]).clamp(-4, 4),
        torch.log(w[:, None, :] / w[:, :, None]).clamp(-3, 3),
        torch.log(h[:, None, :] / h[:, :, None]).clamp(-3, 3),
    ]
    return torch.stack(geo, -1)


class GraphMatchingHead(nn.Module):
    """Soft assignment between two graphs of proposals (see module docstring).

    ``embed_dim`` E of the input embeddings, ``d_model`` d of the node features,
    ``num_layers`` cross-graph layers, ``edge_dim`` c of the edge features; ``iters``
    graduated-assignment steps with quadratic weight ``lam`` and Gaussian edge bandwidth
    ``sigma``; each assignment is ``sinkhorn_iters`` Sinkhorn iterations at temperature
    ``tau`` against the fixed ``dustbin`` score.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        d_model: int,
        n_heads: int,
        num_layers: int,
        edge_dim: int,
        iters: int,
        lam: float,
        sigma: float,
        sinkhorn_iters: int,
        tau: float,
        dustbin: float = 0.0,
    ) -> None:
        super().__init__()
        E, d, c = embed_dim, d_model, edge_dim
        self.node_in = nn.Linear(E, d)
        self.cross = nn.ModuleList(CrossGraphLayer(d, n_heads, 2 * d) for _ in range(num_layers))
        self.node_out = nn.Linear(d, d)
        self.edge_geo = nn.Linear(6, c)
        self.edge_app = nn.Linear(E, c, bias=False)
        self.log_scale = nn.Parameter(torch.zeros(()))
        # a real pair must reach cosine 0.5 to beat the dustbin at init (learned afterwards)
        self.bias = nn.Parameter(torch.tensor(-0.5))
        self.iters, self.lam, self.sigma = iters, lam, sigma
        self.sinkhorn_iters, self.tau = sinkhorn_iters, tau
        self.dustbin = dustbin

    def edges(self, embeds: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``[B, n, E]``, ``[B, n, 4]`` -> edge features ``[B, n, n, c]``."""
        app = embeds[:, None, :, :] - embeds[:, :, None, :]  # e_j - e_i
        return self.edge_geo(box_edge_geometry(boxes).to(embeds.dtype)) + self.edge_app(app)

    def forward(
        self,
        embeds1: torch.Tensor,
        boxes1: torch.Tensor,
        embeds2: torch.Tensor,
        boxes2: torch.Tensor,
        mask1: torch.Tensor | None = None,
        mask2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """embeds ``[B, n, E]``, boxes ``[B, n, 4]`` cxcywh, masks ``[B, n]`` bool (True =
        real node) -> soft assignment ``[B, n1 + 1, n2 + 1]`` (last row/column: dustbin)."""
        B, n1, _ = embeds1.shape
        n2 = embeds2.shape[1]
        for name, t, n in (("boxes1", boxes1, n1), ("boxes2", boxes2, n2)):
            if t.shape != (B, n, 4):
                raise ValueError(f"associate: {name} must be [{B}, {n}, 4], got {tuple(t.shape)}")
        if embeds2.shape[0] != B or embeds2.shape[2] != embeds1.shape[2]:
            raise ValueError(
                f"associate: embeds2 {tuple(embeds2.shape)} incompatible with embeds1 "
                f"{tuple(embeds1.shape)}"
            )
        dev = embeds1.device
        mask1 = torch.ones(B, n1, dtype=torch.bool, device=dev) if mask1 is None else mask1.bool()
        mask2 = torch.ones(B, n2, dtype=torch.bool, device=dev) if mask2 is None else mask2.bool()
        # The head is small and Sinkhorn / the quadratic term want float32: no autocast here.
        with torch.autocast(dev.type, enabled=False):
            return self._match(embeds1.float(), boxes1, embeds2.float(), boxes2, mask1, mask2)

    def _match(self, embeds1, boxes1, embeds2, boxes2, mask1, mask2) -> torch.Tensor:
        n1, n2 = embeds1.shape[1], embeds2.shape[1]
        h1, h2 = self.node_in(embeds1), self.node_in(embeds2)
        for layer in self.cross:
            h1, h2 = layer(h1, h2, mask1, mask2)
        u1 = F.normalize(self.node_out(h1).float(), dim=-1)
        u2 = F.normalize(self.node_out(h2).float(), dim=-1)
        edge1 = self.edges(embeds1, boxes1).float()
        edge2 = self.edges(embeds2, boxes2).float()
        scale = self.log_scale.exp()
        node = u1 @ u2.transpose(1, 2)  # [B, n1, n2] cosine
        valid = (mask1[:, :, None] & mask2[:, None, :]).float()

        def assign(aff: torch.Tensor) -> torch.Tensor:
            scores = (scale * aff + self.bias) * valid
            return kernels.sinkhorn(
                scores,
                self.sinkhorn_iters,
                tau=self.tau,
                row_mask=mask1,
                col_mask=mask2,
                dustbin=self.dustbin,
            )

        S = assign(node)
        if self.lam > 0 and self.iters > 0:
            n_min = torch.minimum(mask1.sum(1), mask2.sum(1)).float()
            lam = self.lam / (n_min - 1).clamp_min(1.0)  # [B]
            # gm_affinity returns node_term + Q: feed u / sqrt(lam) so that lam * out
            # = B + lam * Q(S).
            a = lam.rsqrt()[:, None, None]
            for _ in range(self.iters):
                out = kernels.gm_affinity(
                    u1 * a,
                    u2 * a,
                    edge1,
                    edge2,
                    S[:, :n1, :n2],
                    sigma=self.sigma,
                    mask1=mask1,
                    mask2=mask2,
                )
                S = assign(out * lam[:, None, None])
        return S
