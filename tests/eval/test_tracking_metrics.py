"""ID switches on hand-built videos whose switch count is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from gmpvis.eval.tracking_metrics import count_switches, id_switches

H, W, T = 24, 30, 7


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def box_mask(y: int, x: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y : y + h, x : x + w] = True
    return m


def random_objects(rng: np.random.Generator, n: int) -> list[list[np.ndarray]]:
    """n objects in disjoint horizontal bands, each moving at random, one mask per frame."""
    band = H // n
    objs = []
    for i in range(n):
        x0 = int(rng.integers(0, W - 10))
        xs = np.clip(x0 + np.cumsum(rng.integers(-2, 3, size=T)), 0, W - 8)
        h = int(rng.integers(3, band - 1))
        objs.append([box_mask(i * band, int(x), h, 8) for x in xs])
    return objs


def gt_dict(objs: list[list[np.ndarray]], hidden: dict[int, set[int]]) -> dict:
    anns = []
    for i, frames in enumerate(objs):
        segs = [None if t in hidden.get(i, set()) else rle(m) for t, m in enumerate(frames)]
        areas = [None if s is None else int(m.sum()) for s, m in zip(segs, frames, strict=True)]
        anns.append(
            {
                "id": i + 1,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": segs,
                "areas": areas,
            }
        )
    return {
        "videos": [{"id": 1, "height": H, "width": W, "length": T}],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
        "annotations": anns,
    }


def track(frames: dict[int, np.ndarray], score: float = 0.9, category: int = 1) -> dict:
    segs = [rle(frames[t]) if t in frames else None for t in range(T)]
    return {"video_id": 1, "category_id": category, "score": score, "segmentations": segs}


def test_count_switches_skips_uncovered_frames():
    assert count_switches([0, 0, None, 0, 1, None, None, 1, 0]) == 2
    assert count_switches([None, None]) == 0
    assert count_switches([]) == 0


def test_hand_built_video_switch_count():
    rng = np.random.default_rng(3)
    a, b = random_objects(rng, 2)
    gt = gt_dict([a, b], hidden={1: {6}})
    shift = [np.roll(m, 5, axis=0) for m in b]  # disjoint from b: IoU 0 -> uncovered
    results = [
        # A: track 1 on frames 0-2, then track 2 on frames 3-6 -> 1 switch
        track({t: a[t] for t in range(3)}),
        track({t: a[t] for t in range(3, T)}),
        # B: track 3 on 0, 1, misses 2 (mask off the object), covers 3, track 4 takes
        # frame 4, track 3 frame 5 -> 2 switches; frame 6 B is invisible (not walked)
        track({0: b[0], 1: b[1], 2: shift[2], 3: b[3], 5: b[5], 6: b[6]}),
        track({4: b[4]}),
    ]
    out = id_switches(gt, results)
    assert out["id_switches"] == 3
    assert out["per_video"] == {1: 3}
    assert out["gt_instances"] == 2
    assert out["visible_frames"] == T + (T - 1)
    assert out["covered_frames"] == T + (T - 2)


def test_best_iou_track_covers_and_duplicates_count_once():
    rng = np.random.default_rng(11)
    (a,) = random_objects(rng, 1)
    gt = gt_dict([a], hidden={})
    partial = [m & np.roll(m, 1, axis=1) for m in a]  # IoU 7/8 with a: worse than exact
    exact = track({t: a[t] for t in range(T)})
    same_other_cat = dict(exact, category_id=2, score=0.3)  # one track, two categories
    results = [track({t: partial[t] for t in range(T)}), exact, same_other_cat]
    assert id_switches(gt, results)["id_switches"] == 0
    # frames 2..6 the partial track is the only one -> covers it (IoU 7/8 >= 0.5): 1 switch
    results = [track({t: partial[t] for t in range(T)}), track({0: a[0], 1: a[1]})]
    assert id_switches(gt, results)["id_switches"] == 1
    # stricter threshold than 7/8: frames 2..6 uncovered -> no switch
    assert id_switches(gt, results, iou_threshold=0.9)["id_switches"] == 0


def test_min_score_drops_low_tracks():
    rng = np.random.default_rng(5)
    (a,) = random_objects(rng, 1)
    gt = gt_dict([a], hidden={})
    results = [track({t: a[t] for t in range(4)}, score=0.8), track({4: a[4]}, score=0.05)]
    results.append(track({t: a[t] for t in range(5, T)}, score=0.8))
    assert id_switches(gt, results)["id_switches"] == 2
    assert id_switches(gt, results, min_score=0.1)["id_switches"] == 1


def test_bad_threshold_and_unknown_video():
    gt = gt_dict(random_objects(np.random.default_rng(0), 1), hidden={})
    with pytest.raises(ValueError, match="iou_threshold"):
        id_switches(gt, [], iou_threshold=0.0)
    bad = track({0: box_mask(0, 0, 4, 4)})
    bad["video_id"] = 9
    with pytest.raises(ValueError, match="unknown video_id 9"):
        id_switches(gt, [bad])


def test_fragmentation_counts_fragments_and_followed_instances():
    """A: one exact track (followed, 1 fragment). B: split 3 ways over 2 + 2 + 3 frames,
    duplicated under a second category (still 3 tracks): no track reaches ST-IoU 0.5."""
    from gmpvis.eval.tracking_metrics import fragmentation

    rng = np.random.default_rng(7)
    a, b = random_objects(rng, 2)
    gt = gt_dict([a, b], hidden={})
    pieces = [track({t: b[t] for t in span}) for span in ((0, 1), (2, 3), (4, 5, 6))]
    results = [track({t: a[t] for t in range(T)}), *pieces, dict(pieces[2], category_id=2)]
    out = fragmentation(gt, results)
    assert out["gt_instances"] == 2
    assert out["tracks"] == 4
    assert out["tracks_per_instance"] == pytest.approx(2.0)
    assert out["covering_tracks_mean"] == pytest.approx((1 + 3) / 2)
    assert out["followed_at_50"] == pytest.approx(0.5)  # A only: B's best piece is 3/7
    assert out["followed_at_75"] == pytest.approx(0.5)
    area_b = [int(m.sum()) for m in b]
    best_b = sum(area_b[4:]) / sum(area_b)
    assert out["best_iou_mean"] == pytest.approx((1.0 + best_b) / 2)
    # B's pieces merged into one track: followed
    merged = track({t: b[t] for t in range(T)})
    assert fragmentation(gt, [results[0], merged])["followed_at_50"] == pytest.approx(1.0)
    # no results: nothing followed, nothing covered
    empty = fragmentation(gt, [])
    assert empty["tracks"] == 0 and empty["followed_at_50"] == 0.0
