"""Track / proposal graphs: proposal selection, pair features, IoU, edge geometry, padding."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_convert, box_iou

from gmpvis.association import (
    MemorySpec,
    ProposalNodes,
    TrackMemory,
    TrackNodes,
    proposal_nodes,
    select_proposals,
    track_nodes,
)
from gmpvis.association.nodes import (
    PAIR_FEATURES,
    cosine,
    edge_geometry,
    pair_features,
    pairwise_iou,
)


def _random_boxes(*shape: int) -> torch.Tensor:
    """cxcywh ``[*shape, 4]``: centres in [0.2, 0.8], sizes in [0.05, 0.35]."""
    return torch.cat([torch.rand(*shape, 2) * 0.6 + 0.2, torch.rand(*shape, 2) * 0.3 + 0.05], -1)


# ----------------------------------------------------------------------------- selection


def test_select_proposals_threshold_nms_and_limit():
    scores = torch.tensor([0.9, 0.85, 0.3, 0.02, 0.6, 0.5, 0.05])
    boxes = torch.tensor(
        [
            [0.2, 0.2, 0.2, 0.2],
            [0.21, 0.2, 0.2, 0.2],  # IoU ~0.9 with 0: suppressed by 0
            [0.8, 0.8, 0.1, 0.1],
            [0.5, 0.5, 0.1, 0.1],  # below the threshold
            [0.5, 0.2, 0.2, 0.2],
            [0.56, 0.2, 0.2, 0.2],  # IoU 0.54 with 4: kept at nms_iou 0.6
            [0.2, 0.8, 0.1, 0.1],  # exactly at the threshold: kept
        ]
    )
    keep = select_proposals(scores, boxes, threshold=0.05, nms_iou=0.6, limit=10)
    assert keep.tolist() == [0, 4, 5, 2, 6]  # best first
    assert select_proposals(scores, boxes, 0.05, 0.6, limit=3).tolist() == [0, 4, 5]
    assert select_proposals(scores, boxes, 0.05, 0.5, limit=10).tolist() == [0, 4, 2, 6]
    assert select_proposals(scores, boxes, 0.0, 1.0, limit=10).tolist() == [0, 1, 4, 5, 2, 6, 3]
    empty = select_proposals(scores, boxes, 0.95, 0.6, limit=10)
    assert empty.numel() == 0 and empty.dtype == torch.long


def test_select_proposals_matches_brute_force_on_random_inputs():
    for trial in range(5):
        n = 30
        scores, boxes = torch.rand(n), _random_boxes(n)
        keep = select_proposals(scores, boxes, 0.3, 0.5, limit=8)
        # greedy NMS by hand over the proposals above the threshold
        order = [i for i in scores.argsort(descending=True).tolist() if scores[i] >= 0.3]
        xyxy = box_convert(boxes, "cxcywh", "xyxy")
        iou = box_iou(xyxy, xyxy)
        kept: list[int] = []
        for i in order:
            if all(iou[i, j] <= 0.5 for j in kept):
                kept.append(i)
        assert keep.tolist() == kept[:8], trial


# ----------------------------------------------------------------------------- pair features


def _nodes(t_embeds, t_boxes, missed, p_embeds, p_boxes, scores):
    tracks = TrackNodes(
        torch.tensor([t_embeds]),
        torch.tensor([t_boxes]),
        torch.tensor([missed], dtype=torch.float32),
        torch.ones(1, len(t_embeds), dtype=torch.bool),
    )
    props = ProposalNodes(
        torch.tensor([p_embeds]),
        torch.tensor([p_boxes]),
        torch.tensor([scores]),
        torch.ones(1, len(p_embeds), dtype=torch.bool),
    )
    return tracks, props


def test_pair_features_by_hand():
    """Track box (0.5, 0.5, 0.2, 0.4) = xyxy (0.4, 0.3, 0.6, 0.7); proposal (0.55, 0.4, 0.4,
    0.2) = xyxy (0.35, 0.3, 0.75, 0.5): intersection 0.2 x 0.2, union 0.08 + 0.08 - 0.04."""
    tracks, props = _nodes(
        [[1.0, 0.0, 0.0]],
        [[0.5, 0.5, 0.2, 0.4]],
        [2.0],
        [[1.0, 1.0, 0.0], [0.0, -3.0, 0.0]],
        [[0.55, 0.4, 0.4, 0.2], [0.5, 0.5, 0.2, 0.4]],
        [0.7, 0.25],
    )
    f = pair_features(tracks, props, max_missed=5)
    assert f.shape == (1, 1, 2, 8) and len(PAIR_FEATURES) == 8
    expected = {
        "cosine": 1 / math.sqrt(2),
        "iou": 1 / 3,
        "dx": 0.05 / 0.2,
        "dy": 0.1 / 0.4,
        "log_w": math.log(2.0),
        "log_h": math.log(0.5),
        "missed": 2 / 6,
        "score": 0.7,
    }
    got = dict(zip(PAIR_FEATURES, f[0, 0, 0].tolist(), strict=True))
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    # the same box as the track: IoU 1, no offset, no size change; orthogonal embeddings
    same = dict(zip(PAIR_FEATURES, f[0, 0, 1].tolist(), strict=True))
    assert same["iou"] == pytest.approx(1.0) and same["cosine"] == pytest.approx(0.0, abs=1e-7)
    assert same["dx"] == same["dy"] == same["log_w"] == same["log_h"] == 0.0
    assert same["missed"] == pytest.approx(2 / 6) and same["score"] == pytest.approx(0.25)


def test_pair_features_clamps_far_and_odd_sized_proposals():
    tracks, props = _nodes(
        [[1.0, 0.0]],
        [[0.1, 0.1, 0.05, 0.05]],
        [0.0],
        [[-1.0, 0.0]],
        [[0.9, 0.95, 0.9, 0.001]],
        [1.0],
    )
    f = dict(
        zip(
            PAIR_FEATURES, pair_features(tracks, props, max_missed=3)[0, 0, 0].tolist(), strict=True
        )
    )
    assert f["cosine"] == pytest.approx(-1.0) and f["iou"] == 0.0
    assert f["dx"] == 4.0 and f["dy"] == 4.0  # |offset| / size clamped to 4
    assert f["log_w"] == 2.0 and f["log_h"] == -2.0  # log size ratios clamped to +-2
    assert f["missed"] == 0.0


def test_pairwise_iou_matches_torchvision():
    a, b = _random_boxes(3, 7), _random_boxes(3, 5)
    iou = pairwise_iou(a, b)
    assert iou.shape == (3, 7, 5)
    for k in range(3):
        ref = box_iou(box_convert(a[k], "cxcywh", "xyxy"), box_convert(b[k], "cxcywh", "xyxy"))
        torch.testing.assert_close(iou[k], ref, rtol=1e-5, atol=1e-6)
    assert (iou > 0).any() and (iou == 0).any()  # both overlapping and disjoint pairs


def test_cosine_matches_formula():
    a, b = torch.randn(2, 4, 6), torch.randn(2, 3, 6)
    ref = torch.einsum("bie,bje->bij", a, b) / (
        a.norm(dim=-1)[:, :, None] * b.norm(dim=-1)[:, None, :]
    )
    torch.testing.assert_close(cosine(a, b), ref, rtol=1e-5, atol=1e-6)
    # bf16 inputs give float32 similarities
    assert cosine(a.bfloat16(), b.bfloat16()).dtype == torch.float32


# ----------------------------------------------------------------------------- edges


def test_edge_geometry_values_and_invariance():
    boxes = torch.tensor([[[0.2, 0.3, 0.1, 0.2], [0.5, 0.4, 0.3, 0.1]]])
    g = edge_geometry(boxes)
    assert g.shape == (1, 2, 2, 4)
    # j = 1 relative to i = 0: offsets over the mean size (0.2, 0.15), log size ratios
    expected = torch.tensor([0.3 / 0.2, 0.1 / 0.15, math.log(3.0), math.log(0.5)])
    torch.testing.assert_close(g[0, 0, 1], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g[0, 1, 0], -expected, rtol=1e-5, atol=1e-6)
    assert (g[0, 0, 0] == 0).all() and (g[0, 1, 1] == 0).all()

    boxes = _random_boxes(2, 6) * 0.5 + 0.1  # small enough to move and scale around
    g = edge_geometry(boxes)
    for shift, scale in [((0.3, -0.05), 1.0), ((0.0, 0.0), 1.7), ((-0.1, 0.2), 0.6)]:
        moved = boxes.clone()
        moved[..., :2] = moved[..., :2] * scale + torch.tensor(shift)
        moved[..., 2:] = moved[..., 2:] * scale
        torch.testing.assert_close(edge_geometry(moved), g, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g, -g.transpose(1, 2), rtol=1e-5, atol=1e-6)  # antisymmetric


# ----------------------------------------------------------------------------- padding


def test_track_nodes_pads_to_the_largest_graph():
    spec = MemorySpec(history=2)
    E = 5
    mems = []
    for k in range(3):
        mem = TrackMemory(0, torch.randn(E), [0.2 + 0.2 * k, 0.5, 0.1, 0.1], spec)
        mem.update(1, torch.randn(E), [0.22 + 0.2 * k, 0.5, 0.1, 0.1])
        mem.advance_to(1 + k)  # missed 0, 1, 2
        mems.append(mem)
    tracks = track_nodes([mems, mems[:1], []], E, torch.device("cpu"))
    assert tracks.size == 3 and tracks.embeds.shape == (3, 3, E)
    assert tracks.mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    for i, mem in enumerate(mems):
        torch.testing.assert_close(tracks.embeds[0, i], mem.embed())
        torch.testing.assert_close(tracks.boxes[0, i], mem.box())
    assert tracks.missed[0].tolist() == [0.0, 1.0, 2.0]
    torch.testing.assert_close(tracks.embeds[1, 0], mems[0].embed())
    # padding: zero embedding, a valid unit-size box, masked out
    pad = ~tracks.mask
    assert (tracks.embeds[pad] == 0).all() and (tracks.boxes[pad][:, 2:] == 1).all()
    empty = track_nodes([[], []], E, torch.device("cpu"))
    assert empty.size == 0 and empty.embeds.shape == (2, 0, E)


def test_proposal_nodes_pads_and_casts():
    E = 4
    sizes = [3, 1, 0]
    embeds = [torch.randn(k, E, dtype=torch.float64) for k in sizes]
    boxes = [_random_boxes(k) for k in sizes]
    scores = [torch.rand(k).half() for k in sizes]
    props = proposal_nodes(embeds, boxes, scores)
    assert props.size == 3 and props.embeds.dtype == torch.float32
    assert props.mask.sum(1).tolist() == sizes
    for b, k in enumerate(sizes):
        torch.testing.assert_close(props.embeds[b, :k], embeds[b].float())
        torch.testing.assert_close(props.boxes[b, :k], boxes[b])
        torch.testing.assert_close(props.scores[b, :k], scores[b].float())
        assert (props.embeds[b, k:] == 0).all() and (props.boxes[b, k:, 2:] == 1).all()
        assert (props.scores[b, k:] == 0).all()
