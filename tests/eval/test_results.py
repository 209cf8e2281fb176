"""Results I/O: writer/loader round trips, the CodaLab zip, mask encoding, bad input, the CLI."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from gmpvis.eval import (
    evaluate,
    evaluate_all,
    load_results,
    make_result,
    write_results,
    write_submission,
)
from gmpvis.eval.__main__ import main

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W, T = 13, 17, 4


def random_masks(rng, n):
    """``[n, T, H, W]`` random blobs; frame 1 of every instance empty (-> null)."""
    masks = rng.random((n, T, H, W)) < rng.uniform(0.1, 0.7, (n, 1, 1, 1))
    masks[:, 1] = False
    return masks


@pytest.fixture
def case():
    rng = np.random.default_rng(11)
    masks = random_masks(rng, 4)
    gt = {
        "videos": [{"id": v, "height": H, "width": W, "length": T} for v in (3, 8)],
        "categories": [{"id": 2, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [],
    }
    for i, (vid, cid) in enumerate([(3, 2), (3, 9), (8, 2), (8, 9)]):
        r = make_result(vid, cid, 1.0, masks[i])
        areas = [int(m.sum()) or None for m in masks[i]]
        gt["annotations"].append(dict(r, id=i + 1, iscrowd=0, areas=areas))
        del gt["annotations"][-1]["score"]
    results = [make_result(a["video_id"], a["category_id"], 0.9, m)
               for a, m in zip(gt["annotations"], masks, strict=True)]  # fmt: skip
    return gt, results, masks


def test_make_result_round_trips_masks(case):
    _, results, masks = case
    for r, m in zip(results, masks, strict=True):
        assert r["segmentations"][1] is None  # empty frame -> null
        for t in (0, 2, 3):
            seg = r["segmentations"][t]
            assert isinstance(seg["counts"], str) and seg["size"] == [H, W]
            np.testing.assert_array_equal(mask_utils.decode(seg).astype(bool), m[t])


def test_make_result_accepts_torch_and_checks_shape(case):
    import torch

    _, results, masks = case
    assert make_result(3, 2, 0.9, torch.from_numpy(masks[0])) == results[0]
    with pytest.raises(ValueError, match=r"masks: expected \[T, H, W\], got shape \(13, 17\)"):
        make_result(3, 2, 0.9, masks[0, 0])


def test_write_json_and_zip_round_trip(case, tmp_path):
    gt, results, _ = case
    json_path, zip_path = write_submission(results, tmp_path / "sub")
    assert json_path.name == "results.json" and zip_path.name == "results.zip"
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.namelist() == ["results.json"]  # at the root, as CodaLab expects
        assert json.loads(zf.read("results.json")) == json.loads(json_path.read_text())
    assert load_results(json_path) == load_results(zip_path) == results
    assert evaluate(gt, zip_path)["AP"] == pytest.approx(1.0, abs=1e-12)


def test_writer_converts_numpy_and_bytes(tmp_path):
    rle = mask_utils.encode(np.asfortranarray(np.eye(H, W, dtype=np.uint8)))  # counts: bytes
    r = {"video_id": np.int64(3), "category_id": np.int32(2), "score": np.float32(0.25),
         "segmentations": [rle, None, rle, None]}  # fmt: skip
    out = write_results([r], tmp_path / "r.json")
    (back,) = json.loads(out.read_text())
    assert back["video_id"] == 3 and back["score"] == 0.25
    assert back["segmentations"][0]["counts"] == rle["counts"].decode()
    with pytest.raises(ValueError, match=r"result 0\.score: must be finite"):
        write_results([dict(r, score=float("nan"))], tmp_path / "bad.json")


def _err(gt, results, match):
    with pytest.raises(ValueError, match=match):
        evaluate(gt, results)


def test_unknown_ids(case):
    gt, results, _ = case
    bad = [*results[:2], dict(results[2], video_id=77)]
    _err(gt, bad, r"result 2: unknown video_id 77")
    bad = [dict(results[0], category_id=5), *results[1:]]
    _err(gt, bad, r"result 0: unknown category_id 5")


@pytest.mark.parametrize("score", [math.nan, math.inf, "0.5", None, True])
def test_bad_scores(case, score):
    gt, results, _ = case
    bad = [*results[:3], dict(results[3], score=score)]
    _err(gt, bad, r"result 3\.score")


def test_segmentation_length_and_rle_size(case):
    gt, results, _ = case
    short = dict(results[1], segmentations=results[1]["segmentations"][:-1])
    _err(
        gt,
        [results[0], short],
        r"result 1 \(video 3\): 'segmentations' has 3 entries, the video has 4 frames",
    )
    seg = dict(results[2]["segmentations"][3], size=[W, H])
    wrong = dict(results[2], segmentations=[*results[2]["segmentations"][:3], seg])
    _err(
        gt,
        [wrong],
        r"result 0 \(video 8\): segmentations\[3\]\.size \[17, 13\] differs .*\[13, 17\]",
    )
    missing = {k: v for k, v in results[0].items() if k != "segmentations"}
    _err(gt, [results[1], missing], r"result 1: missing field 'segmentations'")
    garbage = dict(results[0], segmentations=[{"size": [H, W], "counts": 5}, None, None, None])
    _err(gt, [garbage], r"result 0 \(video 3\): segmentations\[0\]\.counts must be a string")
    uncompressed = {"size": [H, W], "counts": [H * W - 3, 3]}
    ok = evaluate(gt, [dict(results[0], segmentations=[uncompressed] + [None] * 3)])  # accepted
    assert 0.0 <= ok["AP"] < 1.0
    # The counts of a full 30x30 mask under a 13x17 size: 900 pixels cannot fit.
    bad_rle = {"size": [H, W], "counts": "0Tl0"}
    corrupt = dict(results[0], segmentations=[None, None, bad_rle, None])
    _err(
        gt,
        [corrupt],
        r"result 0 \(video 3\): segmentations\[2\] compressed RLE counts covers 900 pixels, "
        r"not H\*W = 221",
    )
    runs = {"size": [H, W], "counts": [5, 3]}
    _err(
        gt,
        [dict(results[0], segmentations=[runs] + [None] * 3)],
        r"result 0 \(video 3\): segmentations\[0\] uncompressed RLE counts sum to 8, "
        r"not H\*W = 221",
    )


def test_truncated_and_non_json_files(case, tmp_path):
    gt, results, _ = case
    full = tmp_path / "results.json"
    write_results(results, full)
    cut = tmp_path / "cut.json"
    cut.write_text(full.read_text()[: len(full.read_text()) // 2])
    _err(gt, cut, r"cut\.json is not valid JSON \(truncated\?\)")
    binary = tmp_path / "noise.json"
    binary.write_bytes(np.random.default_rng(0).integers(128, 256, 64, dtype=np.uint8).tobytes())
    _err(gt, binary, r"noise\.json is not valid JSON \(not UTF-8 text\)")
    obj = tmp_path / "obj.json"
    obj.write_text('{"video_id": 3}')
    _err(gt, obj, r"obj\.json: results must be a JSON list, got dict")
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt)[:-7])
    _err(gt_path, results, r"gt\.json is not valid JSON")
    fake_zip = tmp_path / "results.zip"
    fake_zip.write_text("not a zip")
    _err(gt, fake_zip, r"results\.zip is not a valid zip file")


def test_bad_ground_truth(case):
    gt, results, _ = case
    ann = dict(gt["annotations"][0], video_id=4)
    _err(dict(gt, annotations=[ann]), results, r"annotations\[0\]: unknown video_id 4")
    ann = dict(gt["annotations"][1], areas=[1, 2])
    _err(dict(gt, annotations=[ann]), results, r"annotations\[0\], video id 3\): 'areas' must be")
    _err({"videos": gt["videos"], "categories": gt["categories"]}, results, r"'annotations'")


def test_cli_prints_table_and_writes_json(case, tmp_path, capsys):
    gt, results, _ = case
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    res_path = write_results(results[:3], tmp_path / "results.json")  # dog in video 8 missed
    out = tmp_path / "m" / "metrics.json"
    assert main(["--gt", str(gt_path), "--results", str(res_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    metrics = json.loads(out.read_text())
    ap_only = evaluate(gt, results[:3])
    assert {k: metrics[k] for k in ap_only} == ap_only
    everything = evaluate_all(gt, results[:3])
    del everything["timings"]
    assert metrics == everything  # + HOTA, DetA, AssA, LocA, IDF1, id_switches
    # dog: 1 of 2 GTs found, precision 1 -> 51/101.
    assert metrics["per_category"] == pytest.approx({"cat": 1.0, "dog": 51 / 101}, abs=1e-12)
    assert "AP50" in text and "dog" in text and f"{100 * 51 / 101:6.2f}" in text
    assert json.loads(text[text.index("{") :]) == metrics
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    assert main(["--gt", str(gt_path), "--results", str(bad)]) == 2
    assert "bad.json is not valid JSON" in capsys.readouterr().err
