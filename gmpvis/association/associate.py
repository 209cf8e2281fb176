"""Association functions: tracks x proposals -> ``[B, n, m]`` match scores.

The tracker accepts a Hungarian pair when its score reaches the association's threshold:

* ``graph``: the graph matching head's assignment probability (dustbin removed);
* ``cosine``: embedding cosine, embedding-only association as MinVIS does (the threshold
  plays the dustbin);
* ``iou``: IoU of the motion-predicted track box with the proposal box, motion-only.

All three see the same tracks (same memories and motion) and the same proposals.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gmpvis.association.nodes import ProposalNodes, TrackNodes, cosine, pairwise_iou
from gmpvis.config import ASSOCIATIONS

ScoreFn = Callable[[TrackNodes, ProposalNodes], torch.Tensor]


def cosine_scores(tracks: TrackNodes, props: ProposalNodes) -> torch.Tensor:
    return cosine(tracks.embeds, props.embeds)


def iou_scores(tracks: TrackNodes, props: ProposalNodes) -> torch.Tensor:
    return pairwise_iou(tracks.boxes, props.boxes)


def graph_scores(head: nn.Module) -> ScoreFn:
    """The head's soft assignment without its dustbin row and column."""

    def scores(tracks: TrackNodes, props: ProposalNodes) -> torch.Tensor:
        return head(tracks, props)[:, : tracks.size, : props.size]

    return scores


def build_associator(name: str, gm_head: nn.Module | None = None) -> ScoreFn:
    """``graph`` (needs the model's ``gm_head``), ``cosine`` or ``iou``."""
    if name == "graph":
        if gm_head is None:
            raise ValueError("association 'graph' needs the model's graph matching head")
        return graph_scores(gm_head)
    if name == "cosine":
        return cosine_scores
    if name == "iou":
        return iou_scores
    raise ValueError(f"association: expected one of {ASSOCIATIONS}, got {name!r}")
