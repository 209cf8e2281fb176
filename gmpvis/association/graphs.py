"""Training graphs for ``L_match``: the graphs the tracker builds, with known answers.

A :class:`FrameRecord` is one frame of a video as the tracker sees it (its proposals'
embeddings, boxes and scores, the kept ones by :func:`select_proposals`) plus, from the
ground truth, which object each proposal was matched to (``gt_ids``) and which proposals
merely duplicate a matched object (``dup_ids``).

:func:`sample_graph` builds, for a query frame ``t``, one track per object seen in the
frames before ``t``: its :class:`TrackMemory` is fed the object's own matched proposals in
frame order through the same ``update`` / ``advance_to`` calls the tracker makes, its last
sighting ``g`` frames back (``g`` random in ``[1, max_gap]`` as far as its sightings reach,
so occlusions are supervised) and earlier sightings dropped at random (missed detections);
a few tracks start from unmatched proposals (the tracker's spurious tracks). The proposals
are every one the tracker keeps at ``t``. Targets: a track's true column is its object's
matched proposal; a track whose object has no kept proposal at ``t``, and a proposal that
belongs to no track, go to the dustbin; duplicates of a matched proposal are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gmpvis.association.losses import DUSTBIN, IGNORE, PAD
from gmpvis.association.memory import MemorySpec, TrackMemory
from gmpvis.association.nodes import ProposalNodes, TrackNodes, proposal_nodes, track_nodes


@dataclass
class FrameRecord:
    """One frame: embeds ``[Nq, E]``, boxes ``[Nq, 4]`` cxcywh, scores ``[Nq]``, kept
    ``[k]`` (indices, best first), gt_ids / dup_ids ``[Nq]`` long (-1: none)."""

    embeds: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    kept: torch.Tensor
    gt_ids: torch.Tensor
    dup_ids: torch.Tensor


@dataclass(frozen=True)
class GraphSpec:
    """How graphs are sampled: sightings in the ``window`` frames before the query, the
    last one ``1..max_gap`` frames back, earlier ones dropped with ``drop``; up to
    ``spurious`` tracks from unmatched proposals; tracks unseen for more than
    ``max_missed`` frames are ended, as the tracker does."""

    window: int = 8
    max_gap: int = 5
    drop: float = 0.2
    spurious: int = 2
    max_missed: int = 5


@dataclass
class TrainingGraph:
    """Tracks (memories at the query frame), the query frame's kept proposals and targets:
    ``row_target [n]`` (column index or ``DUSTBIN``), ``col_target [m]`` (``DUSTBIN``,
    ``IGNORE`` or the matching row)."""

    memories: list[TrackMemory]
    embeds: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    row_target: list[int]
    col_target: list[int]


def _object_sightings(frames: list[FrameRecord], lo: int, t: int) -> dict[int, list[int]]:
    """object id -> frames in ``[lo, t)`` where its matched proposal is kept."""
    seen: dict[int, list[int]] = {}
    for f in range(lo, t):
        rec = frames[f]
        for q in rec.kept.tolist():
            k = int(rec.gt_ids[q])
            if k >= 0:
                seen.setdefault(k, []).append(f)
    return seen


def _matched_query(rec: FrameRecord, k: int) -> int:
    return int(torch.nonzero(rec.gt_ids == k).flatten()[0])


def sample_graph(
    frames: list[FrameRecord],
    t: int,
    rng: np.random.Generator,
    memory: MemorySpec,
    spec: GraphSpec,
) -> TrainingGraph:
    """The graph of query frame ``t`` (``1 <= t < len(frames)``); see the module docstring."""
    memories: list[TrackMemory] = []
    objects: list[int] = []  # object id per track, -1 for spurious ones
    for k, obs in sorted(_object_sightings(frames, max(0, t - spec.window), t).items()):
        # the gap is drawn among those the object's sightings allow, so that short clips
        # still give every object seen before t a track
        gap = int(rng.integers(1, min(spec.max_gap, t - obs[0]) + 1))
        obs = [f for f in obs if f <= t - gap]
        if len(obs) > 1:  # missed detections; the last sighting stays
            drop = rng.random(len(obs) - 1) < spec.drop
            obs = [f for f, d in zip(obs[:-1], drop, strict=True) if not d] + [obs[-1]]
        if not obs or t - obs[-1] > spec.max_missed + 1:
            continue
        mem = None
        for f in obs:
            rec = frames[f]
            q = _matched_query(rec, k)
            if mem is None:
                mem = TrackMemory(f, rec.embeds[q], rec.boxes[q], memory)
            else:
                mem.update(f, rec.embeds[q], rec.boxes[q])
        mem.advance_to(t)
        memories.append(mem)
        objects.append(k)
    for _ in range(spec.spurious):
        f = t - int(rng.integers(1, spec.max_gap + 1))
        if f < 0:
            continue
        rec = frames[f]
        free = [q for q in rec.kept.tolist() if rec.gt_ids[q] < 0 and rec.dup_ids[q] < 0]
        if not free or rng.random() < 0.5:
            continue
        q = free[int(rng.integers(len(free)))]
        mem = TrackMemory(f, rec.embeds[q], rec.boxes[q], memory)
        mem.advance_to(t)
        memories.append(mem)
        objects.append(-1)

    rec = frames[t]
    kept = rec.kept.tolist()
    column_of = {int(rec.gt_ids[q]): a for a, q in enumerate(kept) if rec.gt_ids[q] >= 0}
    row_target = [column_of.get(k, DUSTBIN) if k >= 0 else DUSTBIN for k in objects]
    tracked = {k for k, r in zip(objects, row_target, strict=True) if r != DUSTBIN}
    col_target = []
    for a, q in enumerate(kept):
        k, d = int(rec.gt_ids[q]), int(rec.dup_ids[q])
        if k in tracked:
            col_target.append(row_target.index(a))
        elif d >= 0 and d in tracked:
            col_target.append(IGNORE)
        else:
            col_target.append(DUSTBIN)
    idx = rec.kept
    return TrainingGraph(
        memories, rec.embeds[idx], rec.boxes[idx], rec.scores[idx], row_target, col_target
    )


def collate_graphs(
    graphs: list[TrainingGraph], device: torch.device
) -> tuple[TrackNodes, ProposalNodes, torch.Tensor, torch.Tensor]:
    """-> (tracks, proposals, row_target ``[B, n]``, col_target ``[B, m]``), padded with
    ``PAD``."""
    E = graphs[0].embeds.shape[-1]
    tracks = track_nodes([g.memories for g in graphs], E, device)
    props = proposal_nodes(
        [g.embeds.to(device) for g in graphs],
        [g.boxes.to(device) for g in graphs],
        [g.scores.to(device) for g in graphs],
    )
    rows = torch.full((len(graphs), tracks.size), PAD, dtype=torch.long, device=device)
    cols = torch.full((len(graphs), props.size), PAD, dtype=torch.long, device=device)
    for b, g in enumerate(graphs):
        rows[b, : len(g.row_target)] = torch.tensor(g.row_target, dtype=torch.long)
        cols[b, : len(g.col_target)] = torch.tensor(g.col_target, dtype=torch.long)
    return tracks, props, rows, cols
