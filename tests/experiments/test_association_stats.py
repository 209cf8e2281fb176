"""The benchmark's paired bootstrap re-accumulates the evaluator's metrics exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from experiments.association_stats import Bootstrap, interval
from gmpvis.eval import evaluate_all

H = W = 16


def rle_of(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [H, W], "counts": r["counts"].decode()}


def case(seed: int, videos: int = 5, frames: int = 4):
    """Ground truth (two objects per video) and noisy, score-distinct results."""
    rng = np.random.default_rng(seed)
    gt = {"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "videos": [],
          "annotations": []}  # fmt: skip
    results = []
    for v in range(1, videos + 1):
        gt["videos"].append({"id": v, "width": W, "height": H, "length": frames,
                             "file_names": [f"{v}/{t}.jpg" for t in range(frames)]})  # fmt: skip
        for k in range(2):
            segs, dets = [], []
            y, x = rng.integers(0, 8, 2)
            for _ in range(frames):
                m = np.zeros((H, W), bool)
                m[y : y + 6, x : x + 6] = True
                segs.append(rle_of(m))
                noisy = np.roll(m, int(rng.integers(-2, 3)), axis=1)
                dets.append(rle_of(noisy) if rng.random() > 0.2 else None)
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "video_id": v, "category_id": 1 + k,
                 "iscrowd": 0, "segmentations": segs, "areas": [36] * frames,
                 "bboxes": [[0, 0, 6, 6]] * frames}
            )  # fmt: skip
            cat = 1 + k if rng.random() > 0.2 else 2 - k
            results.append({"video_id": v, "category_id": cat, "score": float(rng.random()),
                            "segmentations": dets})  # fmt: skip
    return gt, results


@pytest.mark.parametrize("seed", [0, 1])
def test_unit_weights_give_the_evaluators_metrics(seed):
    gt, results = case(seed)
    full = Bootstrap(gt, resamples=2).samples(results)["full"]
    m = evaluate_all(gt, results)
    for k in ("AP", "HOTA", "AssA", "DetA"):
        assert full[k] == pytest.approx(m[k], abs=1e-12)


def test_a_weight_of_two_equals_the_video_duplicated():
    gt, results = case(2)
    boot = Bootstrap(gt, resamples=2)
    w = np.array([2, 1, 0, 1, 1])
    ap = boot._weighted_ap(boot._ap_data(results), w)
    track = boot._weighted_tracking(boot._track_data(results), w)
    dup_gt, dup_res = copy.deepcopy(gt), [r for r in results if r["video_id"] != 3]
    dup_gt["videos"] = [v for v in dup_gt["videos"] if v["id"] != 3]
    dup_gt["annotations"] = [a for a in dup_gt["annotations"] if a["video_id"] != 3]
    video = next(v for v in gt["videos"] if v["id"] == 1)
    dup_gt["videos"].append({**video, "id": 99})
    for a in [a for a in gt["annotations"] if a["video_id"] == 1]:
        dup_gt["annotations"].append({**a, "id": a["id"] + 1000, "video_id": 99})
    dup_res += [{**r, "video_id": 99, "score": r["score"] - 1e-9}
                for r in results if r["video_id"] == 1]  # fmt: skip
    m = evaluate_all(dup_gt, dup_res)
    assert ap == pytest.approx(m["AP"], abs=1e-9)
    for k in ("HOTA", "AssA"):
        assert track[k] == pytest.approx(m[k], abs=1e-9)


def test_interval_of_a_paired_difference():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 1.5, 2.5, 3.5])
    out = interval(a, b)
    assert out["mean"] == pytest.approx(0.5) and out["ci95"] == pytest.approx([0.5, 0.5])


# ---- the oracle-association ceiling ------------------------------------------------------


def test_best_prefix_maximises_the_spatio_temporal_iou():
    """Against every subset of the sightings (brute force) on random candidates."""
    from itertools import combinations

    from experiments.association_stats import _best_prefix

    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 7))
        areas = rng.uniform(5, 50, n)
        inter = areas * rng.uniform(0.0, 1.0, n)
        cands = [(t, float(inter[t]), float(areas[t])) for t in range(n)]
        union0 = float(rng.uniform(20, 200))

        def iou(ts, cands=cands, union0=union0):
            i = sum(cands[t][1] for t in ts)
            return i / (union0 + sum(cands[t][2] - cands[t][1] for t in ts))

        best = max(iou(ts) for m in range(n + 1) for ts in combinations(range(n), m))
        assert iou(_best_prefix(cands, union0)) == pytest.approx(best, abs=1e-12)


def test_oracle_links_each_object_and_drops_a_sliver_that_lowers_its_iou():
    """Two objects, 4 frames. Object 1's frame-2 sighting has IoU 0.44 (below the cache's 0.5
    bar) but raises the track's spatio-temporal IoU from 72/144 to 96/162: kept. Its frame-3
    sighting covers 1 of its pixels and 35 others: it would lower the IoU, so it is dropped."""
    import torch

    from experiments.association_stats import oracle_results
    from gmpvis.config import get_config
    from gmpvis.train.cache import CachedFrame, CachedVideo

    frames = 4
    objects = [(1, 1), (9, 9)]  # top-left corners of 6x6 squares
    gt = {"categories": [{"id": 1, "name": "a"}], "videos": [{"id": 1, "width": W,
          "height": H, "length": frames, "file_names": [f"{t}.jpg" for t in range(frames)]}],
          "annotations": []}  # fmt: skip

    def square(y, x, h=6, w=6):
        m = np.zeros((H, W), bool)
        m[y : y + h, x : x + w] = True
        return m

    for k, (y, x) in enumerate(objects):
        gt["annotations"].append(
            {"id": k + 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentations": [rle_of(square(y, x))] * frames, "areas": [36] * frames,
             "bboxes": [[x, y, 6, 6]] * frames}
        )  # fmt: skip
    video = CachedVideo(1, H, W)
    for t in range(frames):
        masks = [square(*objects[1]), square(1, 1)]
        if t == 2:
            masks[1] = square(1, 1, 6, 4) | square(1, 7, 6, 3)  # 24 in, 18 out: IoU 0.44
        if t == 3:
            masks[1] = square(6, 6, 6, 6)  # 1 pixel of object 1 (its corner), 35 outside
        n = len(masks)
        boxes = torch.tensor([[0.7, 0.7, 0.3, 0.3], [0.25, 0.25, 0.3, 0.3]])
        video.frames.append(
            CachedFrame(
                logits=torch.tensor([[3.0], [2.0]]), boxes=boxes, queries=torch.zeros(n, 4),
                embeds=torch.zeros(n, 4), rles=[rle_of(m) for m in masks],
                gt_ids=torch.full((n,), -1), dup_ids=torch.full((n,), -1),
            )
        )  # fmt: skip
    tracker = get_config("tiny", ["tracker.categories_per_track=1"]).tracker
    results = oracle_results(gt, [video], tracker, [1])
    assert len(results) == 2
    by_frames = {tuple(s is not None for s in r["segmentations"]): r for r in results}
    assert set(by_frames) == {(True, True, True, True), (True, True, True, False)}
    m = evaluate_all(gt, results)
    assert m["AP50"] == pytest.approx(1.0)
