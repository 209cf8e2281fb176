"""Online tracker logic with a cosine-similarity association in place of the model's head."""

from __future__ import annotations

import pytest
import torch
from pycocotools import mask as mask_utils

from gmpvis.association.associate import iou_scores
from gmpvis.config import TrackerConfig
from gmpvis.infer import FrameProposals, OnlineTracker
from gmpvis.kernels import sinkhorn

H = W = 16
C = 3


def cosine_associate(tracks, props):
    """Soft assignment from cosine similarity (Sinkhorn with a dustbin, as the GM head ends)."""
    e1, e2 = tracks.embeds, props.embeds
    sim = torch.nn.functional.normalize(e1, dim=-1) @ torch.nn.functional.normalize(e2, dim=-1).mT
    return sinkhorn(sim, 20, tau=0.05, dustbin=0.5)[:, : tracks.size, : props.size]


def Cfg(**kw) -> TrackerConfig:
    """Tracker options of these tests: tracks confirmed at birth unless a test says not."""
    return TrackerConfig(**{"confirm_hits": 1, **kw})


def make_frame(objects: list[tuple[int, int]], embeds: torch.Tensor, n_noise: int = 2):
    """Proposals for ``objects`` = [(identity, class)] in the given order, plus low-score noise.

    Identity ``k`` has embedding ``embeds[k]`` and occupies row block ``k`` of the frame.
    """
    n = len(objects) + n_noise
    logits = torch.full((n, C), -6.0)
    boxes = torch.rand(n, 4) * 0.1 + 0.2
    emb = torch.randn(n, embeds.shape[1])
    masks = torch.zeros(n, H, W, dtype=torch.bool)
    for q, (ident, cls) in enumerate(objects):
        logits[q, cls] = 4.0
        emb[q] = embeds[ident] + 0.05 * torch.randn(embeds.shape[1])
        boxes[q] = torch.tensor([0.1 + 0.25 * ident, 0.5, 0.1, 0.1])
        masks[q, 4 * ident : 4 * ident + 3, 2:9] = True
    return FrameProposals(logits, boxes, emb, mask_fn=lambda idx, m=masks: m[idx])


def test_identities_follow_embeddings_not_query_order():
    embeds = torch.randn(3, 8)
    tracker = OnlineTracker(cosine_associate, Cfg(max_missing=1, categories_per_track=1))
    order = [[(0, 0), (1, 1), (2, 2)], [(2, 2), (0, 0), (1, 1)], [(1, 1), (2, 2), (0, 0)]]
    ids_per_identity: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for objs in order:
        seen = dict((q, tid) for tid, q in tracker.step(make_frame(objs, embeds)))
        for q, (ident, _) in enumerate(objs):
            ids_per_identity[ident].add(seen[q])
    assert all(len(v) == 1 for v in ids_per_identity.values())  # one track per object
    assert len({next(iter(v)) for v in ids_per_identity.values()}) == 3

    results = tracker.results(video_id=7, num_frames=3, category_ids=[10, 20, 30])
    assert len(results) == 3
    for r in results:
        assert r["video_id"] == 7 and r["category_id"] in (10, 20, 30)
        assert 0.9 < r["score"] <= 1.0
        assert len(r["segmentations"]) == 3
        decoded = mask_utils.decode(r["segmentations"][1])
        assert decoded.shape == (H, W) and decoded.sum() == 21


def test_occlusion_keeps_track_then_ends_it():
    embeds = torch.randn(2, 8)
    tracker = OnlineTracker(cosine_associate, Cfg(max_missing=2))
    frames = [[(0, 0), (1, 1)], [(0, 0)], [(0, 0)], [(0, 0), (1, 1)]]
    seen = [dict(tracker.step(make_frame(f, embeds))) for f in frames]
    id1 = {tid for tid, q in seen[0].items() if q == 1}
    # object 1 returns after 2 missing frames (= max_missing): same track id
    back = {tid for tid, q in seen[3].items() if q == 1}
    assert id1 == back
    # a longer absence ends the track and a new identity is born
    tracker = OnlineTracker(cosine_associate, Cfg(max_missing=1, categories_per_track=1))
    frames = [[(0, 0), (1, 1)], [(0, 0)], [(0, 0)], [(0, 0), (1, 1)]]
    seen = [dict(tracker.step(make_frame(f, embeds))) for f in frames]
    assert {tid for tid, q in seen[0].items() if q == 1} != {
        tid for tid, q in seen[3].items() if q == 1
    }
    results = tracker.results(1, 4, [1, 2, 3])
    assert len(results) == 3  # the ended track is still reported
    ended = [r for r in results if r["segmentations"][3] is None and r["segmentations"][0]]
    assert len(ended) == 1 and ended[0]["segmentations"][1] is None


def test_low_scores_and_duplicates_do_not_start_tracks():
    embeds = torch.randn(1, 8)
    frame = make_frame([(0, 1)], embeds, n_noise=3)
    # a duplicate of the object with a slightly lower score: removed by NMS
    frame.logits = torch.cat([frame.logits, frame.logits[:1] - 0.5])
    frame.boxes = torch.cat([frame.boxes, frame.boxes[:1]])
    frame.embeds = torch.cat([frame.embeds, frame.embeds[:1]])
    tracker = OnlineTracker(cosine_associate, Cfg(birth_threshold=0.5))
    masks = torch.ones(frame.logits.shape[0], H, W, dtype=torch.bool)
    frame.mask_fn = lambda idx: masks[idx]
    seen = tracker.step(frame)
    assert len(seen) == 1 and seen[0][1] == 0
    assert tracker.results(1, 1, [5, 6, 7])[0]["category_id"] == 6


def test_top_categories_give_one_result_each_scored_by_mean_probability():
    embeds = torch.randn(1, 8)
    tracker = OnlineTracker(cosine_associate, Cfg(categories_per_track=2))
    for _ in range(2):
        frame = make_frame([(0, 2)], embeds, n_noise=0)
        frame.logits[0] = torch.tensor([0.0, -1.0, 2.0])  # probs 0.5, 0.27, 0.88
        tracker.step(frame)
    results = tracker.results(3, 2, [10, 20, 30])
    assert [r["category_id"] for r in results] == [30, 10]
    assert results[0]["score"] == pytest.approx(torch.tensor(2.0).sigmoid().item(), rel=1e-5)
    assert results[1]["score"] == pytest.approx(0.5, rel=1e-5)
    assert results[0]["segmentations"] == results[1]["segmentations"]


def test_no_birth_from_a_proposal_overlapping_a_continued_track():
    embeds = torch.randn(2, 8)
    cfg = Cfg(nms_iou=0.6, birth_max_overlap=0.5, categories_per_track=1)
    tracker = OnlineTracker(cosine_associate, cfg)
    tracker.step(make_frame([(0, 0)], embeds, n_noise=0))
    frame = make_frame([(0, 0), (1, 0)], embeds, n_noise=0)
    # the second proposal sits 0.03 to the right of the first: box IoU 0.54, kept by NMS (0.6)
    frame.boxes[1] = frame.boxes[0] + torch.tensor([0.03, 0.0, 0.0, 0.0])
    seen = tracker.step(frame)
    assert [q for _, q in seen] == [0]  # continued; the overlapping newcomer is not born
    far = make_frame([(0, 0), (1, 0)], embeds, n_noise=0)  # same scene, object 1 elsewhere
    assert sorted(q for _, q in OnlineTracker(cosine_associate, cfg).step(far)) == [0, 1]


def test_live_tracks_are_capped_by_ending_the_longest_missing():
    embeds = torch.randn(3, 8)
    tracker = OnlineTracker(cosine_associate, Cfg(max_live_tracks=2, max_missing=9))
    tracker.step(make_frame([(0, 0), (1, 1)], embeds, n_noise=0))
    tracker.step(make_frame([(1, 1)], embeds, n_noise=0))  # track of object 0 now missing
    tracker.step(make_frame([(1, 1), (2, 2)], embeds, n_noise=0))  # a third object is born
    assert len(tracker.live) == 2 and len(tracker.ended) == 1
    assert tracker.ended[0].memory.missed == 2  # object 0's track, unmatched twice
    assert {tr.memory.missed for tr in tracker.live} == {0}


def test_tentative_tracks_need_confirmation_and_false_starts_vanish():
    embeds = torch.randn(2, 8)
    tracker = OnlineTracker(cosine_associate, Cfg(confirm_hits=2, categories_per_track=1))
    tracker.step(make_frame([(0, 0), (1, 1)], embeds, n_noise=0))
    assert tracker.tracks == []  # both tentative
    tracker.step(make_frame([(0, 0)], embeds, n_noise=0))  # object 1 not seen again
    assert [len(tr.frames) for tr in tracker.tracks] == [2]
    assert len(tracker.live) == 1  # the false start is dropped, not kept as missing
    results = tracker.results(1, 2, [1, 2, 3])
    assert len(results) == 1 and results[0]["segmentations"][0] is not None


def moving_frame(x: float, score: float = 4.0) -> FrameProposals:
    """One object of a fixed embedding at horizontal position ``x``."""
    logits = torch.full((1, C), -6.0)
    logits[0, 0] = score
    boxes = torch.tensor([[x, 0.5, 0.1, 0.1]])
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    masks[0, 2:5, 2:5] = True
    return FrameProposals(logits, boxes, torch.ones(1, 8), mask_fn=lambda idx, m=masks: m[idx])


def test_motion_prediction_carries_a_track_through_an_occlusion():
    """An object 0.1 wide moving 0.04 per frame is unseen for three frames: IoU of its *last*
    box with the reappearing box is 0, of its motion-predicted box high, so iou association
    keeps one track."""
    cfg = Cfg(association="iou", iou_threshold=0.3, max_missing=3, categories_per_track=1)
    tracker = OnlineTracker(iou_scores, cfg)
    ids = set()
    for t in range(10):
        if t in (5, 6, 7):  # occluded
            tracker.step(make_frame([], torch.randn(1, 8), n_noise=0))
            continue
        ids |= {tid for tid, _ in tracker.step(moving_frame(0.1 + 0.04 * t))}
    assert len(ids) == 1
    track = tracker.tracks[0]
    assert sorted(track.frames) == [0, 1, 2, 3, 4, 8, 9]
    assert track.memory.box()[0].item() == pytest.approx(0.1 + 0.04 * 9, abs=0.01)


def test_no_birth_on_a_missing_tracks_predicted_box():
    """A briefly unmatched track's predicted box blocks a duplicate birth on top of it."""
    tracker = OnlineTracker(lambda tr, pr: torch.zeros(1, tr.size, pr.size), Cfg())
    tracker.step(moving_frame(0.3))
    seen = tracker.step(moving_frame(0.3))  # never matched (scores 0 < 0.2): no duplicate
    assert seen == [] and len(tracker.live) == 1
