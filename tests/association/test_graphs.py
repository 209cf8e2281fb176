"""Training graphs: the tracker's graphs with known answers, built with TrackMemory itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gmpvis.association import (
    FrameRecord,
    GraphSpec,
    MemorySpec,
    TrackMemory,
    collate_graphs,
    sample_graph,
)
from gmpvis.association.losses import DUSTBIN, IGNORE, PAD

MEMORY = MemorySpec(history=4)
EXACT = GraphSpec(window=8, max_gap=1, drop=0.0, spurious=0, max_missed=5)  # no randomness


def _box(k: int, t: int) -> list[float]:
    return [0.15 + 0.2 * k + 0.02 * t, 0.5 - 0.01 * k * t, 0.1 + 0.01 * k, 0.1]


def frame(rows, E: int = 4, Nq: int = 7, gen=None) -> FrameRecord:
    """rows: ``(query, gt_id, dup_id, kept)`` per proposal; ``kept`` proposals are kept best
    first in the order given; the box of a proposal of object ``k`` (matched or duplicate)
    follows object ``k``'s motion, others sit in a corner."""
    gen = gen or torch.Generator().manual_seed(len(rows))
    embeds = torch.randn(Nq, E, generator=gen)
    boxes = torch.tensor([[0.9, 0.9, 0.05, 0.05]] * Nq)
    scores = torch.full((Nq,), 0.01)
    gt_ids = torch.full((Nq,), -1, dtype=torch.long)
    dup_ids = torch.full((Nq,), -1, dtype=torch.long)
    kept = []
    for rank, (q, k, d, keep) in enumerate(rows):
        gt_ids[q], dup_ids[q] = k, d
        obj = k if k >= 0 else d
        if obj >= 0:
            boxes[q] = torch.tensor(_box(obj, 0)) + 0.001 * rank
        if keep:
            kept.append(q)
            scores[q] = 0.9 - 0.1 * len(kept)
    return FrameRecord(embeds, boxes, scores, torch.tensor(kept, dtype=torch.long), gt_ids, dup_ids)


def moving_video(T: int, visible: dict[int, list[int]], E: int = 4, free: int = 1, seed=0):
    """Objects ``k`` seen at frames ``visible[k]`` moving with ``_box``; each frame's proposals
    in a random query order (objects switch queries), ``free`` unmatched kept proposals, one
    unkept proposal."""
    gen = torch.Generator().manual_seed(seed)
    frames = []
    for t in range(T):
        objs = [k for k, fs in visible.items() if t in fs]
        n = len(objs) + free + 1
        queries = torch.randperm(n, generator=gen).tolist()
        rows = [(queries[i], k, -1, True) for i, k in enumerate(objs)]
        rows += [(queries[len(objs) + j], -1, -1, True) for j in range(free)]
        rows.append((queries[-1], -1, -1, False))
        rec = frame(rows, E=E, Nq=n, gen=gen)
        for q, k, _, _ in rows:
            if k >= 0:
                rec.boxes[q] = torch.tensor(_box(k, t))
        frames.append(rec)
    return frames


def hand_memory(frames, k: int, seen: list[int], t: int, memory=MEMORY) -> TrackMemory:
    """A TrackMemory fed object ``k``'s matched proposals at frames ``seen`` by hand."""
    mem = None
    for f in seen:
        rec = frames[f]
        q = int((rec.gt_ids == k).nonzero()[0])
        if mem is None:
            mem = TrackMemory(f, rec.embeds[q], rec.boxes[q], memory)
        else:
            mem.update(f, rec.embeds[q], rec.boxes[q])
    mem.advance_to(t)
    return mem


def assert_same_memory(a: TrackMemory, b: TrackMemory) -> None:
    assert (a.frame, a.last_seen, a.missed, a.hits) == (b.frame, b.last_seen, b.missed, b.hits)
    torch.testing.assert_close(a.embed(), b.embed(), rtol=0, atol=0)
    np.testing.assert_array_equal(a.motion.mean, b.motion.mean)
    np.testing.assert_array_equal(a.motion.cov, b.motion.cov)


def test_targets_positive_dustbin_newborn_and_duplicates():
    gen = torch.Generator().manual_seed(0)
    early = [(0, 0, -1, True), (1, 1, -1, True), (2, -1, -1, True), (3, -1, -1, False)]
    frames = [frame(early, gen=gen) for _ in range(2)]
    # object 3 is matched at frame 2 but its proposal is not kept: it never gets a track
    frames.append(frame([*early, (5, 3, -1, False)], gen=gen))
    frames.append(
        frame(
            [
                (2, 0, -1, True),  # column 0: object 0, tracked -> its row
                (0, 2, -1, True),  # column 1: object 2, newborn -> dustbin
                (1, -1, 0, True),  # column 2: duplicate of tracked object 0 -> ignored
                (3, -1, 1, True),  # column 3: duplicate of object 1, absent now -> dustbin
                (4, -1, -1, True),  # column 4: unmatched -> dustbin
                (5, 3, -1, False),  # not kept: no column
            ],
            gen=gen,
        )
    )
    g = sample_graph(frames, 3, np.random.default_rng(0), MEMORY, EXACT)
    assert len(g.memories) == 2  # objects 0 and 1, in object order
    assert g.row_target == [0, DUSTBIN]  # object 1 has no kept proposal at t = 3
    assert g.col_target == [0, DUSTBIN, IGNORE, DUSTBIN, DUSTBIN]
    kept = frames[3].kept
    assert kept.tolist() == [2, 0, 1, 3, 4]
    torch.testing.assert_close(g.embeds, frames[3].embeds[kept])
    torch.testing.assert_close(g.boxes, frames[3].boxes[kept])
    torch.testing.assert_close(g.scores, frames[3].scores[kept])
    for row, k in enumerate((0, 1)):
        assert_same_memory(g.memories[row], hand_memory(frames, k, [0, 1, 2], 3))
        assert g.memories[row].missed == 1


def test_last_sighting_gap_and_memories_are_the_trackers():
    """Random gaps in [1, max_gap]; every memory equals one fed the same sightings by hand
    (the "one code path" property), missed detections included: each frame's embedding of an
    object is a distinct basis vector, so the memory's mean embedding names the sightings it
    was fed."""
    T, t = 10, 9
    frames = moving_video(T, {0: list(range(T)), 1: list(range(0, T, 2)) + [9]}, E=T)
    for f, rec in enumerate(frames):  # object k's embedding at frame f: (1 + k / 10) e_f
        rec.embeds[rec.gt_ids >= 0] = 0.0
        rec.embeds[rec.gt_ids >= 0, f] = 1.0 + 0.1 * rec.gt_ids[rec.gt_ids >= 0].float()
    spec = GraphSpec(window=8, max_gap=3, drop=0.3, spurious=0, max_missed=5)
    memory = MemorySpec(history=T)
    gaps, dropped = set(), 0
    for seed in range(40):
        g = sample_graph(frames, t, np.random.default_rng(seed), memory, spec)
        assert g.row_target == list(range(len(g.memories)))  # both objects visible at t
        for mem in g.memories:
            gap = t - mem.last_seen
            assert 1 <= gap <= spec.max_gap and mem.frame == t and mem.missed == gap
            gaps.add(gap)
            used = (mem.embed() > 0).nonzero().flatten().tolist()  # the frames it was fed
            k = int(round(float(mem.embed()[used[0]] * len(used) - 1.0) * 10))
            assert used[-1] == mem.last_seen and all(f >= t - spec.window for f in used)
            assert len(used) == mem.hits
            assert_same_memory(mem, hand_memory(frames, k, used, t, memory))
            available = [
                f for f in range(t - spec.window, mem.last_seen + 1) if f % 2 == 0 or k == 0
            ]
            dropped += len(available) - len(used)
    assert gaps == {1, 2, 3} and dropped > 0


def test_no_drop_memories_equal_hand_memories():
    """Without drops a memory holds every sighting in the window up to its last one."""
    T, t = 8, 7
    visible = {0: list(range(T)), 2: [1, 2, 3, 4, 7]}
    frames = moving_video(T, visible)
    spec = GraphSpec(window=6, max_gap=4, drop=0.0, spurious=0, max_missed=5)
    for seed in range(10):
        g = sample_graph(frames, t, np.random.default_rng(seed), MEMORY, spec)
        objects = []
        for mem in g.memories:

            def fed(k, mem=mem):  # what the memory of object k should hold
                seen = [f for f in visible[k] if t - spec.window <= f <= mem.last_seen]
                return hand_memory(frames, k, seen, t)

            (k,) = [k for k in visible if torch.equal(mem.embed(), fed(k).embed())]
            assert_same_memory(mem, fed(k))
            objects.append(k)
        assert objects == sorted(objects) and len(set(objects)) == len(objects)
        assert g.row_target == [0 if k == 0 else 1 for k in objects]  # both visible at t


@pytest.mark.parametrize("max_missed, included", [(3, False), (4, True)])
def test_tracks_unseen_too_long_are_excluded(max_missed, included):
    """Seen only at frame 0, queried at t = 5: alive while t - last_seen <= max_missed + 1
    (the tracker ends a track once it has missed more than max_missed frames)."""
    frames = moving_video(6, {0: [0], 1: [0, 4, 5]})
    spec = GraphSpec(window=8, max_gap=1, drop=0.0, spurious=0, max_missed=max_missed)
    g = sample_graph(frames, 5, np.random.default_rng(0), MEMORY, spec)
    last = sorted(m.last_seen for m in g.memories)
    assert last == ([0, 4] if included else [4])
    assert g.row_target == ([DUSTBIN, 0] if included else [0])


def test_window_limits_the_sightings():
    frames = moving_video(6, {0: [0, 1], 1: [2, 3, 4, 5]})
    spec = GraphSpec(window=3, max_gap=1, drop=0.0, spurious=0, max_missed=9)
    g = sample_graph(frames, 5, np.random.default_rng(0), MEMORY, spec)
    # window [2, 5): frames 2, 3, 4 of object 1; object 0 (frames 0, 1) is outside
    assert len(g.memories) == 1 and g.memories[0].hits == 3
    assert_same_memory(g.memories[0], hand_memory(frames, 1, [2, 3, 4], 5))


def test_spurious_tracks_start_from_free_proposals():
    frames = moving_video(6, {0: list(range(6))}, free=2)
    spec = GraphSpec(window=8, max_gap=2, drop=0.0, spurious=3, max_missed=5)
    counts = set()
    for seed in range(30):
        g = sample_graph(frames, 5, np.random.default_rng(seed), MEMORY, spec)
        assert g.row_target[0] == 0 and all(r == DUSTBIN for r in g.row_target[1:])
        counts.add(len(g.memories) - 1)
        for mem in g.memories[1:]:
            rec = frames[mem.last_seen]
            free = [q for q in rec.kept.tolist() if rec.gt_ids[q] < 0 and rec.dup_ids[q] < 0]
            assert any(torch.equal(mem.embed(), rec.embeds[q]) for q in free)
            assert mem.hits == 1 and 1 <= mem.missed <= spec.max_gap
    assert counts <= {0, 1, 2, 3} and len(counts) > 1


def _summary(g):
    return (
        g.row_target,
        g.col_target,
        [(m.last_seen, m.hits, m.embed().tolist(), m.motion.mean.tolist()) for m in g.memories],
    )


def test_deterministic_for_a_fixed_seed():
    frames = moving_video(9, {0: list(range(9)), 1: [0, 1, 2, 5, 6, 8], 2: [3, 4, 5, 6, 7]})
    spec = GraphSpec(window=6, max_gap=3, drop=0.3, spurious=2, max_missed=5)
    a = sample_graph(frames, 8, np.random.default_rng(11), MEMORY, spec)
    b = sample_graph(frames, 8, np.random.default_rng(11), MEMORY, spec)
    assert _summary(a) == _summary(b)
    others = [
        _summary(sample_graph(frames, 8, np.random.default_rng(s), MEMORY, spec)) for s in range(5)
    ]
    assert any(o != _summary(a) for o in others)


def test_collate_pads_with_pad():
    frames = moving_video(6, {0: list(range(6)), 1: [0, 1, 2, 3], 2: [5]}, free=1)
    g1 = sample_graph(frames, 5, np.random.default_rng(0), MEMORY, EXACT)
    g0 = sample_graph(frames, 1, np.random.default_rng(0), MEMORY, EXACT)
    empty = sample_graph(frames, 5, np.random.default_rng(0), MEMORY, EXACT)
    empty.memories, empty.row_target = [], []
    assert len(g1.memories) == 2 and len(g1.col_target) == 3  # objects 0, 2 and a free one
    assert len(g0.memories) == 2 and len(g0.col_target) == 3
    tracks, props, rows, cols = collate_graphs([g1, g0, empty], torch.device("cpu"))
    n, m = max(len(g.memories) for g in (g1, g0)), 3
    assert tracks.embeds.shape == (3, n, 4) and props.embeds.shape == (3, m, 4)
    assert rows.dtype == torch.long and rows.shape == (3, n) and cols.shape == (3, m)
    assert rows[0].tolist() == g1.row_target and rows[1].tolist() == g0.row_target
    assert rows[2].tolist() == [PAD] * n and cols[2].tolist() == g1.col_target
    assert tracks.mask.sum(1).tolist() == [2, 2, 0] and props.mask.all()
    for b, g in enumerate((g1, g0)):
        for i, mem in enumerate(g.memories):
            torch.testing.assert_close(tracks.embeds[b, i], mem.embed())
            torch.testing.assert_close(tracks.boxes[b, i], mem.box())
            assert tracks.missed[b, i] == mem.missed
        torch.testing.assert_close(props.embeds[b, : len(g.col_target)], g.embeds)
        torch.testing.assert_close(props.scores[b, : len(g.col_target)], g.scores)
    # different sizes: a smaller graph's extra rows and columns are PAD
    small = sample_graph(moving_video(3, {0: [0, 1, 2]}, free=0), 2, np.random.default_rng(0),
                         MEMORY, EXACT)  # fmt: skip
    tracks, props, rows, cols = collate_graphs([g1, small], torch.device("cpu"))
    assert rows[1].tolist() == [0, PAD] and cols[1].tolist() == [0, PAD, PAD]
    assert tracks.mask[1].tolist() == [True, False] and props.mask[1].tolist() == [
        True,
        False,
        False,
    ]
