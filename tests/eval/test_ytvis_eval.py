"""Video AP: hand-computed cases, and an independent oracle (pycocotools' COCOeval matching and
accumulation fed with a dense-numpy spatio-temporal IoU) on random videos."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import gmpvis.eval.ytvis_eval as ye
from gmpvis.eval import evaluate, make_result, video_iou
from gmpvis.eval.results import check_results, load_gt

# pycocotools' decode of a single RLE trips a numpy-2 deprecation inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")
ALL_KEYS = (*KEYS, "AR100", "ARs", "ARm", "ARl")  # the order of COCOeval.stats


def boxes_mask(h, w, boxes):
    """``[T, h, w]`` bool from one ``(y0, x0, y1, x1)`` box (or None) per frame."""
    m = np.zeros((len(boxes), h, w), dtype=bool)
    for t, b in enumerate(boxes):
        if b is not None:
            m[t, b[0] : b[2], b[1] : b[3]] = True
    return m


def gt_ann(ann_id, vid, cid, masks, iscrowd=0):
    segs = make_result(vid, cid, 1.0, masks)["segmentations"]
    areas = [int(m.sum()) if m.any() else None for m in masks]
    return {
        "id": ann_id,
        "video_id": vid,
        "category_id": cid,
        "iscrowd": iscrowd,
        "segmentations": segs,
        "areas": areas,
    }


def hand_case():
    """Two 8x10 videos of 3 frames; categories cat (3), bird (5), dog (7)."""
    h, w = 8, 10
    g1 = boxes_mask(h, w, [(0, 0, 4, 5)] * 3)
    g2 = boxes_mask(h, w, [(5, 6, 8, 10), (5, 6, 8, 10), None])
    g3 = boxes_mask(h, w, [(2, 2, 6, 8), (2, 2, 6, 8), None])
    g4 = boxes_mask(h, w, [(0, 6, 3, 10), None, (1, 6, 4, 10)])
    gt = {
        "videos": [{"id": v, "height": h, "width": w, "length": 3} for v in (1, 2)],
        "categories": [
            {"id": 3, "name": "cat"},
            {"id": 5, "name": "bird"},
            {"id": 7, "name": "dog"},
        ],
        "annotations": [
            gt_ann(1, 1, 3, g1),
            gt_ann(2, 1, 3, g2),
            gt_ann(3, 2, 3, g3),
            gt_ann(4, 2, 5, g4),
        ],
    }
    fp = boxes_mask(h, w, [(5, 0, 8, 4)] * 3)  # touches no GT
    # g3 shifted: frame 0 exact, frame 1 moved right by 2, frame 2 an extra 2x4 blob.
    shifted = boxes_mask(h, w, [(2, 2, 6, 8), (2, 4, 6, 10), (0, 0, 2, 4)])
    results = [
        make_result(1, 3, 0.95, fp),
        make_result(1, 3, 0.90, g1),
        make_result(2, 3, 0.70, shifted),
        make_result(2, 5, 0.50, g4),
        make_result(2, 7, 0.80, g4),
    ]
    return gt, results


def test_null_frame_counts_in_union():
    """IoU(shifted, g3) = (24 + 16) / (24 + 32 + 8) = 40 / 64 = 0.625: frame 0 exact (24/24),
    frame 1 a 4x4 overlap of two 4x6 boxes (16/32), frame 2 GT null so the 8 detected pixels
    only add to the union. With g4 (areas 12, null, 12) they share 2 pixels in frame 0:
    2 / (56 + 24 - 2) = 2/78."""
    gt, results = hand_case()
    g = load_gt(gt)
    dts = check_results(results, g)
    iou = video_iou([dts[2]], [g.annotations[2], g.annotations[3]], 3)
    assert iou[0, 0] == 40 / 64
    assert iou[0, 1] == 2 / 78


def test_hand_computed_ap():
    """cat: npig = 3 (g1, g2, g3). Detections in score order across videos:
    fp (0.95, FP), g1 exact (0.90, TP), shifted g3 (0.70, IoU 0.625: TP for t in .50/.55/.60).
      t <= .60: tp = [0,1,2], fp = [1,1,1], rc = [0,1/3,2/3], pr = [0,1/2,2/3] -> envelope 2/3
        at every recall point r <= 2/3 (0.00..0.66: 67 points) -> AP_t = 67 * 2/3 / 101.
      t >= .65 (7 thresholds): tp = [0,1,1], fp = [1,1,2], rc = [0,1/3,1/3], envelope [1/2,1/2,1/3]
        -> 1/2 at r <= 1/3 (0.00..0.33: 34 points) -> AP_t = 17/101.
      AP_cat = (3 * 134/303 + 7 * 17/101) / 10 = 253/1010.
    bird: one exact detection -> 1. dog: no GT -> -1, left out of the means.
    AP = (253/1010 + 1) / 2, AP50 = (134/303 + 1) / 2, AP75 = (17/101 + 1) / 2.
    AR10: cat recall 2/3 at 3 thresholds, 1/3 at 7 -> 13/30; AR10 = (13/30 + 1) / 2.
    AR1 keeps the top detection per (video, category): video 1 keeps only fp, so cat recall is
    1/3 at 3 thresholds and 0 at 7 -> 1/10; AR1 = (1/10 + 1) / 2 = 0.55.
    Every instance is small (< 128^2): APs = AP, APm = APl = -1."""
    gt, results = hand_case()
    m = evaluate(gt, results)
    ap_cat = 253 / 1010
    approx = pytest.approx
    assert m["per_category"]["cat"] == approx(ap_cat, rel=1e-9)
    assert m["per_category"]["bird"] == approx(1.0, rel=1e-9)
    assert m["per_category"]["dog"] == -1.0
    assert m["AP"] == approx((ap_cat + 1) / 2, rel=1e-9)
    assert m["AP50"] == approx((134 / 303 + 1) / 2, rel=1e-9)
    assert m["AP75"] == approx((17 / 101 + 1) / 2, rel=1e-9)
    assert m["APs"] == approx(m["AP"], rel=1e-12)
    assert m["APm"] == -1.0 and m["APl"] == -1.0
    assert m["AR10"] == approx((13 / 30 + 1) / 2, rel=1e-9)
    assert m["AR1"] == approx(0.55, rel=1e-9)


def test_perfect_results_give_one():
    """Every GT (random boxes, null frames, one polygon GT) detected exactly -> all metrics 1."""
    rng = np.random.default_rng(7)
    h, w, T = 23, 37, 5
    videos, anns, results = [], [], []
    for vid in (4, 9, 11):
        videos.append({"id": vid, "height": h, "width": w, "length": T})
        for _ in range(int(rng.integers(1, 4))):
            boxes = []
            for _t in range(T):
                y0, x0 = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
                y1, x1 = y0 + int(rng.integers(2, h - y0)), x0 + int(rng.integers(2, w - x0))
                boxes.append((y0, x0, y1, x1) if rng.random() > 0.2 else None)
            boxes[0] = boxes[0] or (1, 1, 5, 6)
            masks = boxes_mask(h, w, boxes)
            cid = int(rng.choice([2, 6]))
            anns.append(gt_ann(len(anns) + 1, vid, cid, masks))
            results.append(make_result(vid, cid, float(rng.random()), masks))
    # A polygon GT: the rectangle (x 2..9, y 3..8) as a polygon, the result as the decoded mask.
    poly = [[2.0, 3.0, 9.0, 3.0, 9.0, 8.0, 2.0, 8.0]]
    rle = mask_utils.merge(mask_utils.frPyObjects(poly, h, w))
    pm = np.repeat(mask_utils.decode(rle)[None].astype(bool), T, axis=0)
    anns.append({"id": 99, "video_id": 4, "category_id": 2, "iscrowd": 0,
                 "segmentations": [poly] * T, "areas": [int(pm[0].sum())] * T})  # fmt: skip
    results.append(make_result(4, 2, 0.3, pm))
    gt = {"videos": videos, "categories": [{"id": 2, "name": "a"}, {"id": 6, "name": "b"}]}
    gt["annotations"] = anns
    m = evaluate(gt, results)
    for k in ("AP", "AP50", "AP75", "APs", "AR10", "AR100"):
        assert m[k] == pytest.approx(1.0, abs=1e-12), k
    # AR1 keeps one detection per (video, category), so it is < 1 where a pair has several GTs.
    assert m["AR1"] < 1.0
    assert all(v == pytest.approx(1.0, abs=1e-12) for v in m["per_category"].values())


def test_empty_results_give_zero():
    gt, _ = hand_case()
    m = evaluate(gt, [])
    assert {k: m[k] for k in ("AP", "AP50", "AP75", "APs", "AR1", "AR10")} == dict.fromkeys(
        ("AP", "AP50", "AP75", "APs", "AR1", "AR10"), 0.0
    )
    assert m["APm"] == -1.0
    assert m["per_category"] == {"cat": 0.0, "bird": 0.0, "dog": -1.0}


def test_crowd_gt_absorbs_detections():
    """One real GT matched exactly (score 0.5) and two higher-scored detections equal to a
    crowd region: detections matched to a crowd GT are ignored (a crowd GT can take many),
    so AP = 1. Without the crowd flag the first takes that GT (TP), the second is a FP:
    npig = 2, tp = [1,1,2], fp = [0,1,1], rc = [.5,.5,1], pr envelope [1, 2/3, 2/3]
    -> 1 for r <= .5 (51 points), 2/3 for .5 < r <= 1 (50 points) at every threshold:
    AP = (51 + 100/3) / 101."""
    h, w = 12, 12
    real = boxes_mask(h, w, [(0, 0, 4, 4)] * 2)
    crowd = boxes_mask(h, w, [(6, 6, 12, 12)] * 2)
    base = {"videos": [{"id": 1, "height": h, "width": w, "length": 2}],
            "categories": [{"id": 1, "name": "person"}]}  # fmt: skip
    results = [
        make_result(1, 1, 0.9, crowd),
        make_result(1, 1, 0.8, crowd),
        make_result(1, 1, 0.5, real),
    ]
    gt = dict(base, annotations=[gt_ann(1, 1, 1, real), gt_ann(2, 1, 1, crowd, iscrowd=1)])
    assert evaluate(gt, results)["AP"] == pytest.approx(1.0, abs=1e-12)
    gt = dict(base, annotations=[gt_ann(1, 1, 1, real), gt_ann(2, 1, 1, crowd, iscrowd=0)])
    assert evaluate(gt, results)["AP"] == pytest.approx((51 + 100 / 3) / 101, rel=1e-9)


def test_area_ranges_use_mean_area_over_present_frames():
    """A 200x200 video: GT A is 150x150 = 22500 px in the 2 frames where present (null in the
    third; mean over present frames 22500 -> medium, not 15000), found exactly; GT B is 10x10
    (small), missed. APm = 1, APs = 0, APl = -1, AP (all) = recall 1/2 with precision 1
    -> 51/101."""
    h = w = 200
    a = boxes_mask(h, w, [(0, 0, 150, 150), (10, 10, 160, 160), None])
    b = boxes_mask(h, w, [(170, 170, 180, 180)] * 3)
    gt = {"videos": [{"id": 5, "height": h, "width": w, "length": 3}],
          "categories": [{"id": 1, "name": "x"}],
          "annotations": [gt_ann(1, 5, 1, a), gt_ann(2, 5, 1, b)]}  # fmt: skip
    m = evaluate(gt, [make_result(5, 1, 0.7, a)])
    assert m["APm"] == pytest.approx(1.0, abs=1e-12)
    assert m["APs"] == 0.0 and m["APl"] == -1.0
    assert m["AP"] == pytest.approx(51 / 101, rel=1e-9)


def test_area_bounds_are_inclusive():
    """A 128x128 GT (area exactly 128^2) is both small and medium, as ``area < lo or
    area > hi`` ignores neither: APs = APm = 1, APl = -1."""
    g = boxes_mask(200, 200, [(10, 20, 138, 148)] * 2)
    gt = {"videos": [{"id": 1, "height": 200, "width": 200, "length": 2}],
          "categories": [{"id": 1, "name": "x"}], "annotations": [gt_ann(1, 1, 1, g)]}  # fmt: skip
    m = evaluate(gt, [make_result(1, 1, 0.4, g)])
    assert m["APs"] == pytest.approx(1.0, abs=1e-12)
    assert m["APm"] == pytest.approx(1.0, abs=1e-12)
    assert m["APl"] == -1.0


def test_iou_ties_go_to_the_later_gt():
    """gA and gB share box X (16 px) in frame 0 and differ in frame 1 (2x2 boxes Y and Z).
    d1 (score .9) = X alone: IoU 16/20 = 0.8 with both (an exact tie). d2 (score .8) = X + Y:
    IoU 1 with gA, 16/24 = 0.667 with gB. The official loop keeps the later GT of a tie, so for
    t <= .80 (7 thresholds) d1 takes gB and d2 takes gA: two TPs, AP_t = 1. For t >= .85
    (3 thresholds) d1 is a FP and d2 takes gA: tp = [0,1], fp = [1,1], rc = [0,.5], envelope
    1/2 for r <= .5 (51 points) -> AP_t = 25.5/101. AP = (7 + 3 * 25.5/101) / 10.
    (Taking gA for d1 would leave d2 only gB, a FP for t in .70/.75/.80, giving AP_t = 51/101
    there instead of 1.)"""
    h, w = 10, 10
    x = (0, 0, 4, 4)
    ga = boxes_mask(h, w, [x, (6, 0, 8, 2)])
    gb = boxes_mask(h, w, [x, (6, 6, 8, 8)])
    gt = {"videos": [{"id": 1, "height": h, "width": w, "length": 2}],
          "categories": [{"id": 1, "name": "x"}],
          "annotations": [gt_ann(1, 1, 1, ga), gt_ann(2, 1, 1, gb)]}  # fmt: skip
    results = [make_result(1, 1, 0.9, boxes_mask(h, w, [x, None])), make_result(1, 1, 0.8, ga)]
    assert evaluate(gt, results)["AP"] == pytest.approx((7 + 3 * 25.5 / 101) / 10, rel=1e-9)


def test_max_100_detections_per_video_and_category():
    """100 FPs scored above one exact TP: the TP is the 101st and is dropped (AP 0, AR 0);
    with 99 FPs it stays, and recall is 1 while precision is 1/100 at every recall point."""
    h, w = 16, 16
    g = boxes_mask(h, w, [(0, 0, 5, 5)])
    far = boxes_mask(h, w, [(10, 10, 16, 16)])
    gt = {"videos": [{"id": 1, "height": h, "width": w, "length": 1}],
          "categories": [{"id": 1, "name": "x"}], "annotations": [gt_ann(1, 1, 1, g)]}  # fmt: skip
    scores = np.random.default_rng(3).uniform(0.5, 1.0, 100)
    fps = [make_result(1, 1, float(s), far) for s in scores]
    tp = make_result(1, 1, 0.1, g)
    m = evaluate(gt, [*fps, tp])
    assert m["AP"] == 0.0 and m["AR10"] == 0.0
    m = evaluate(gt, [*fps[:99], tp])
    assert m["AP"] == pytest.approx(1 / 100, rel=1e-9)
    assert m["AR10"] == 0.0


def random_case(rng, n_videos=6, T=4, h=300, w=280):
    """Random videos with boxes of every size class, null frames, crowds, duplicate GTs and
    tied scores, and detections that jitter the GTs plus false positives."""
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 4, 8)]
    videos, anns, results = [], [], []
    for vid in rng.permutation(np.arange(10, 10 + n_videos)).tolist():
        videos.append({"id": vid, "height": h, "width": w, "length": T})
        for _ in range(int(rng.integers(0, 7))):
            cid = int(rng.choice([1, 4, 8]))
            side = int(rng.choice([20, 100, 200, 270]))
            y0, x0 = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            boxes = []
            for _t in range(T):
                dy, dx = rng.integers(-5, 6, 2)
                y, x = int(np.clip(y0 + dy, 0, h - side)), int(np.clip(x0 + dx, 0, w - side))
                boxes.append((y, x, y + side, x + side) if rng.random() > 0.25 else None)
            masks = boxes_mask(h, w, boxes)
            crowd = int(rng.random() < 0.1)
            anns.append(gt_ann(len(anns) + 1, vid, cid, masks, crowd))
            if rng.random() < 0.1:  # exact duplicate GT: equal IoUs, tie-breaking matters
                anns.append(gt_ann(len(anns) + 1, vid, cid, masks, 0))
            for _ in range(int(rng.integers(0, 4))):
                shift = int(rng.integers(0, side // 3 + 1))
                dboxes = [
                    None if b is None or rng.random() < 0.15 else
                    (b[0], min(b[1] + shift, w - 1), b[2], min(b[3] + shift, w))
                    for b in boxes
                ]  # fmt: skip
                dcid = cid if rng.random() > 0.1 else int(rng.choice([1, 4, 8]))
                score = round(float(rng.random()), 1)  # ties across videos and within
                results.append(make_result(vid, dcid, score, boxes_mask(h, w, dboxes)))
        for _ in range(int(rng.integers(0, 14))):  # false positives, some all-null
            side = int(rng.choice([8, 60, 150]))
            y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            boxes = [(y, x, y + side, x + side) if rng.random() > 0.3 else None for _ in range(T)]
            score = round(float(rng.random()), 1)
            results.append(make_result(vid, int(rng.choice([1, 4, 8])), score,
                                       boxes_mask(h, w, boxes)))  # fmt: skip
    return {"videos": videos, "categories": cats, "annotations": anns}, results


def _dense(segs, h, w):
    return np.stack(
        [np.zeros((h, w), bool) if s is None else mask_utils.decode(s).astype(bool) for s in segs]
    )


class _SpatioTemporalCOCOeval(COCOeval):
    """pycocotools' own matching and accumulation with a dense-numpy spatio-temporal IoU."""

    def computeIoU(self, imgId, catId):
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if not gt and not dt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: self.params.maxDets[-1]]
        ious = np.zeros((len(dt), len(gt)))
        for i, d in enumerate(dt):
            for j, g in enumerate(gt):
                inter = np.logical_and(d["dense"], g["dense"]).sum()
                union = np.logical_or(d["dense"], g["dense"]).sum()
                ious[i, j] = inter / union if union else 0.0
        return ious


def oracle(gt, results):
    h, w = gt["videos"][0]["height"], gt["videos"][0]["width"]
    dummy = {"size": [1, 1], "counts": "01"}

    def coco(anns):
        c = COCO()
        c.dataset = {"images": [{"id": v["id"], "height": 1, "width": 1} for v in gt["videos"]],
                     "categories": gt["categories"], "annotations": anns}  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):
            c.createIndex()
        return c

    def mean_area(areas):
        nz = [a for a in areas if a]
        return float(np.mean(nz)) if nz else 0.0

    gts = [{"id": a["id"], "image_id": a["video_id"], "category_id": a["category_id"],
            "iscrowd": a["iscrowd"], "area": mean_area(a["areas"]), "segmentation": dummy,
            "dense": _dense(a["segmentations"], h, w)} for a in gt["annotations"]]  # fmt: skip
    dts = []
    for i, r in enumerate(results):
        dense = _dense(r["segmentations"], h, w)
        dts.append({"id": i + 1, "image_id": r["video_id"], "category_id": r["category_id"],
                    "iscrowd": 0, "score": r["score"], "segmentation": dummy, "dense": dense,
                    "area": mean_area(dense.reshape(len(dense), -1).sum(1))})  # fmt: skip
    E = _SpatioTemporalCOCOeval(coco(gts), coco(dts), "segm")
    E.params.areaRng = [list(r) for r in ye.AREA_RANGES.values()]
    E.params.areaRngLbl = list(ye.AREA_RANGES)
    with contextlib.redirect_stdout(io.StringIO()):
        E.evaluate()
        E.accumulate()
        E.summarize()
    prec = E.eval["precision"][:, :, :, 0, 2]
    per_cat = [prec[:, :, k] for k in range(prec.shape[2])]
    per_cat = [float(p[p > -1].mean()) if (p > -1).any() else -1.0 for p in per_cat]
    return dict(zip(ALL_KEYS, E.stats.tolist(), strict=True)), per_cat


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_cocoeval_oracle_on_random_videos(seed, monkeypatch):
    """Equal (to 1e-12) to pycocotools' matching/accumulation with a dense IoU; the tiny
    chunk size forces the batched matcher through many padded chunks, and two forked
    workers for the IoU stage change nothing."""
    gt, results = random_case(np.random.default_rng(seed))
    want, want_cat = oracle(gt, results)
    got = evaluate(gt, results)
    assert len(results) > 20 and got["AP"] > 0.05
    for k in ALL_KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
    assert list(got["per_category"].values()) == pytest.approx(want_cat, abs=1e-12)
    monkeypatch.setattr(ye, "_CHUNK_ELEMS", 1)
    again = evaluate(gt, results, workers=2 if seed == 0 else 1)  # forked IoU workers too
    assert again == got


def test_video_iou_equals_dense_numpy():
    """RLE-summed intersections/unions agree exactly with dense masks on random blobs."""
    rng = np.random.default_rng(5)
    h, w, T = 19, 27, 6
    gt = {"videos": [{"id": 1, "height": h, "width": w, "length": T}],
          "categories": [{"id": 1, "name": "x"}]}  # fmt: skip
    masks = rng.random((7, T, h, w)) < rng.uniform(0.05, 0.6, (7, T, 1, 1))
    masks[:, 2] &= rng.random((7, 1, 1)) < 0.5  # some null frames
    gt["annotations"] = [gt_ann(i + 1, 1, 1, m) for i, m in enumerate(masks[:3])]
    g = load_gt(gt)
    dts = check_results([make_result(1, 1, 0.5, m) for m in masks[3:]], g)
    got = video_iou(dts, g.annotations, T)
    d, gg = masks[3:].reshape(4, -1), masks[:3].reshape(3, -1)
    inter = (d[:, None] & gg[None]).sum(-1)
    union = (d[:, None] | gg[None]).sum(-1)
    np.testing.assert_array_equal(got, inter / union)
