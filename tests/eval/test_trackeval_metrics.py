"""HOTA / DetA / AssA / LocA / IDF1 against TrackEval's own YouTube-VIS runner
(``trackeval.datasets.YouTubeVIS`` + ``trackeval.Evaluator`` on files in its layout), on
generated videos: random tracks, id swaps, missing frames, false positives, wrong classes."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import trackeval
from pycocotools import mask as mask_utils
from scipy.ndimage import binary_dilation

from gmpvis.eval import evaluate_all, make_result
from gmpvis.eval.results import check_results, load_gt
from gmpvis.eval.trackeval_metrics import tracking_metrics

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

KEYS = ("HOTA", "DetA", "AssA", "LocA", "IDF1")


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major, starting with background)."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    return ([0] + runs) if flat[0] == 1 else runs


def _blob_track(rng, T, h, w):
    """A box moving across T frames, ``[T, h, w]`` bool; some frames empty."""
    bh, bw = rng.integers(3, h // 2), rng.integers(3, w // 2)
    y, x = rng.integers(0, h - bh), rng.integers(0, w - bw)
    vy, vx = rng.integers(-1, 2, 2)
    m = np.zeros((T, h, w), bool)
    for t in range(T):
        yy, xx = np.clip(y + vy * t, 0, h - bh), np.clip(x + vx * t, 0, w - bw)
        m[t, yy : yy + bh, xx : xx + bw] = True
    m[rng.random(T) < 0.15] = False  # missing frames
    return m


def make_case(seed: int, n_videos: int = 3, cats=(3, 5, 8)):
    """GT (uncompressed RLE, as TrackEval's loader needs) and results with the usual faults."""
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in cats]}
    results = []
    for v in range(n_videos):
        h, w, T = int(rng.integers(14, 24)), int(rng.integers(14, 24)), int(rng.integers(5, 10))
        vid = 10 + v
        gt["videos"].append({"id": vid, "height": h, "width": w, "length": T,
                             "file_names": [f"vid{v}/{t:05d}.jpg" for t in range(T)]})  # fmt: skip
        objs = []
        for _ in range(int(rng.integers(1, 5))):
            m = _blob_track(rng, T, h, w)
            m[int(rng.integers(T))] |= rng.random((h, w)) < 0.05  # speckle: area never 0 here
            cid = int(rng.choice(cats[:-1]))  # the last category has no GT at all
            segs = [{"size": [h, w], "counts": _runs(f)} if f.any() else None for f in m]
            gt["annotations"].append({
                "id": int(1000 - 7 * len(gt["annotations"])),  # ids not in file order
                "video_id": vid, "category_id": cid, "iscrowd": 0, "height": h, "width": w,
                "segmentations": segs, "areas": [int(f.sum()) or None for f in m],
            })  # fmt: skip
            objs.append((m, cid))
        tracks = []
        for m, cid in objs:
            near = binary_dilation(m, np.ones((1, 3, 3), bool))
            noisy = m ^ (near & (rng.random(m.shape) < rng.uniform(0.05, 0.4)))  # jittered
            noisy[rng.random(T) < 0.2] = False  # missed frames
            if rng.random() < 0.2:
                cid = int(rng.choice(cats))  # wrong class
            tracks.append([noisy, cid])
        if len(tracks) >= 2 and rng.random() < 0.7:  # an id swap halfway
            s = T // 2
            a, b = tracks[0][0].copy(), tracks[1][0].copy()
            tracks[0][0][s:], tracks[1][0][s:] = b[s:], a[s:]
        if tracks and rng.random() < 0.5:  # a fragmented track
            m, cid = tracks[-1]
            first, second = m.copy(), m.copy()
            first[T // 3 :], second[: T // 3] = False, False
            tracks[-1] = [first, cid]
            tracks.append([second, cid])
        for _ in range(int(rng.integers(0, 3))):  # false positives
            tracks.append([_blob_track(rng, T, h, w), int(rng.choice(cats))])
        order = rng.permutation(len(tracks))
        for k in order:
            m, cid = tracks[k]
            results.append(make_result(vid, cid, float(rng.uniform(0.05, 1)), m))
    rng.shuffle(results)
    return gt, results


def trackeval_reference(gt: dict, results: list, tmp_path) -> dict:
    """TrackEval's own runner on files written in its YouTube-VIS layout."""
    split = "test"
    gt_dir = tmp_path / "gt" / f"youtube_vis_{split}"
    tr_dir = tmp_path / "trackers" / f"youtube_vis_{split}" / "ours" / "data"
    gt_dir.mkdir(parents=True)
    tr_dir.mkdir(parents=True)
    (gt_dir / "gt.json").write_text(json.dumps(gt))
    (tr_dir / "results.json").write_text(json.dumps(results))
    dataset = trackeval.datasets.YouTubeVIS({
        "GT_FOLDER": f"{tmp_path / 'gt'}/", "TRACKERS_FOLDER": f"{tmp_path / 'trackers'}/",
        "OUTPUT_FOLDER": str(tmp_path / "out"), "SPLIT_TO_EVAL": split, "PRINT_CONFIG": False,
    })  # fmt: skip
    evaluator = trackeval.Evaluator({
        "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
        "TIME_PROGRESS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
        "PLOT_CURVES": False, "LOG_ON_ERROR": None,
    })  # fmt: skip
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.Identity({"PRINT_CONFIG": False})]
    with contextlib.redirect_stdout(io.StringIO()):
        res, msg = evaluator.evaluate([dataset], metrics)
    assert msg["YouTubeVIS"]["ours"] == "Success"
    comb = res["YouTubeVIS"]["ours"]["COMBINED_SEQ"]["cls_comb_cls_av"]
    out = {k: float(np.mean(comb["HOTA"][k])) for k in ("HOTA", "DetA", "AssA", "LocA")}
    out["IDF1"] = float(comb["Identity"]["IDF1"])
    return out


@pytest.mark.parametrize("seed", range(5))
def test_matches_trackeval_youtube_vis_runner(seed, tmp_path):
    gt, results = make_case(seed)
    want = trackeval_reference(gt, results, tmp_path)
    got = evaluate_all(gt, results)
    assert 0.05 < got["HOTA"] < 0.95 and 0.0 < got["IDF1"] < 1.0  # a non-trivial case
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-6), k


def test_perfect_results_and_empty_inputs():
    gt, _ = make_case(11, n_videos=2, cats=(1, 2))
    truth = load_gt(gt)
    perfect = [
        make_result(a["video_id"], a["category_id"], 1.0, _masks(a, gt)) for a in gt["annotations"]
    ]
    got = tracking_metrics(truth, check_results(perfect, truth))
    # category 2 has no GT and no result in any video: HOTA 0 there (TrackEval's class mean)
    assert got["per_category_HOTA"] == pytest.approx({"c1": 1.0, "c2": 0.0})
    assert got["HOTA"] == pytest.approx(0.5) and got["LocA"] == pytest.approx(1.0)
    none = tracking_metrics(truth, [])  # an empty results list: defined, TrackEval's values
    assert none == {"HOTA": 0.0, "DetA": 0.0, "AssA": 0.0, "LocA": 1.0, "IDF1": 0.0,
                    "per_category_HOTA": {"c1": 0.0, "c2": 0.0}}  # fmt: skip
    empty_gt = dict(gt, annotations=[])  # a GT without tracks
    all_fp = evaluate_all(empty_gt, perfect)
    assert all(np.isfinite(all_fp[k]) for k in KEYS) and all_fp["HOTA"] == 0.0
    assert all_fp["AP"] == -1.0 and all_fp["id_switches"] == 0
    with pytest.raises(ValueError, match="no categories"):
        tracking_metrics(load_gt(dict(empty_gt, categories=[])), [])


def _masks(ann: dict, gt: dict) -> np.ndarray:
    v = next(v for v in gt["videos"] if v["id"] == ann["video_id"])
    out = np.zeros((v["length"], v["height"], v["width"]), bool)
    for t, s in enumerate(ann["segmentations"]):
        if s is not None:
            rle = mask_utils.frPyObjects(s, v["height"], v["width"])
            out[t] = mask_utils.decode(rle).astype(bool)
    return out


def test_video_without_predictions_and_evaluate_all_keys(tmp_path):
    gt, results = make_case(3)
    first = gt["videos"][0]["id"]
    kept = [r for r in results if r["video_id"] != first]
    want = trackeval_reference(gt, kept, tmp_path)
    got = evaluate_all(gt, kept)
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-6), k
    for k in ("AP", "AP50", "AR10", *KEYS, "id_switches"):
        assert k in got and np.isfinite(got[k])
