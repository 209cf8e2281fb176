"""Association of proposals to tracks, shared by the tracker and by training.

* ``motion``: the constant-velocity Kalman filter of a track's box;
* ``memory``: :class:`TrackMemory`, a track's embeddings + motion, updated one way only;
* ``nodes``: the two graphs (:class:`TrackNodes`, :class:`ProposalNodes`), the proposal
  selection rule, pair and edge features;
* ``head``: the motion-aware :class:`GraphMatchingHead`;
* ``associate``: the ``graph`` / ``cosine`` / ``iou`` score functions;
* ``graphs`` and ``losses``: the tracker's graphs with known answers, ``L_match`` and the
  contrastive embedding loss.
"""

from gmpvis.association.associate import ASSOCIATIONS, build_associator
from gmpvis.association.graphs import (
    FrameRecord,
    GraphSpec,
    TrainingGraph,
    collate_graphs,
    sample_graph,
)
from gmpvis.association.head import GraphMatchingHead
from gmpvis.association.losses import contrastive_loss, match_loss
from gmpvis.association.memory import MemorySpec, TrackMemory
from gmpvis.association.motion import BoxKalman
from gmpvis.association.nodes import (
    ProposalNodes,
    TrackNodes,
    proposal_nodes,
    select_proposals,
    track_nodes,
)

__all__ = [
    "ASSOCIATIONS",
    "BoxKalman",
    "FrameRecord",
    "GraphMatchingHead",
    "GraphSpec",
    "MemorySpec",
    "ProposalNodes",
    "TrackMemory",
    "TrackNodes",
    "TrainingGraph",
    "build_associator",
    "collate_graphs",
    "contrastive_loss",
    "match_loss",
    "proposal_nodes",
    "sample_graph",
    "select_proposals",
    "track_nodes",
]
