"""Evaluator reliability on bad input (issue 11): RLE contents, polygons, long videos, the
results zip, atomic writes, streaming, and the CLI's one-line errors."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import gmpvis.eval.ytvis_eval as ye
from gmpvis.data.json_io import iter_json_list
from gmpvis.data.rle import rle_strings_to_counts
from gmpvis.eval import evaluate, load_gt, make_result, write_results
from gmpvis.eval.__main__ import main
from gmpvis.eval.results import check_results
from gmpvis.eval.tracking_metrics import id_switches

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W, T = 11, 14, 3


def _case(rng, length=T, h=H, w=W):
    masks = rng.random((2, length, h, w)) < 0.4
    gt = {
        "videos": [{"id": 1, "height": h, "width": w, "length": length}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            dict(make_result(1, 1, 1.0, m), id=i + 1, iscrowd=0) for i, m in enumerate(masks)
        ],
    }
    for a in gt["annotations"]:
        del a["score"]
    results = [make_result(1, 1, 0.9 - 0.1 * i, m) for i, m in enumerate(masks)]
    return gt, results, masks


def _no_pycocotools_iou(monkeypatch):
    """Any IoU call fails the test: bad RLEs must be refused before pycocotools sees them."""

    def refuse(*args, **kwargs):
        raise AssertionError("pycocotools iou reached with unchecked RLEs")

    monkeypatch.setattr(ye.mask_utils, "iou", refuse)


def _short_rle(h, w, rows_missing=2):
    """Counts of a (h - rows_missing) x w mask under the size [h, w]: they cover fewer pixels
    than the frame, the input on which pycocotools' iou never returns."""
    m = np.zeros((h - rows_missing, w), np.uint8, order="F")
    m[1:4, 2:6] = 1
    counts = mask_utils.encode(m)["counts"]
    runs, ptr, bad = rle_strings_to_counts(
        np.frombuffer(counts, np.uint8), np.array([0, len(counts)])
    )
    assert not bad[0] and runs.sum() == (h - rows_missing) * w < h * w
    return {"size": [h, w], "counts": counts.decode()}


@pytest.mark.parametrize(
    "counts,pattern",
    [
        ("short", r"covers 126 pixels, not H\*W = 154"),
        ("!!garbage{{", r"compressed RLE counts is corrupt"),
        ("long", r"covers 168 pixels, not H\*W = 154"),
        ("é0", r"counts holds non-ASCII characters"),
    ],
)
def test_results_rle_contents_are_checked_before_pycocotools(monkeypatch, counts, pattern):
    gt, results, _ = _case(np.random.default_rng(0))
    if counts == "short":
        seg = _short_rle(H, W)
    elif counts == "long":  # a 12x14 mask under an 11x14 size: more pixels than the frame
        seg = dict(make_result(1, 1, 1.0, np.ones((1, H + 1, W), bool))["segmentations"][0])
        seg["size"] = [H, W]
    else:
        seg = {"size": [H, W], "counts": counts}
    results[1]["segmentations"][2] = seg
    _no_pycocotools_iou(monkeypatch)
    for run in (evaluate, id_switches):
        with pytest.raises(
            ValueError, match=rf"result 1 \(video 1\): segmentations\[2\] .*{pattern}"
        ):
            run(gt, results)


def test_ground_truth_rle_contents_are_checked(monkeypatch):
    gt, results, _ = _case(np.random.default_rng(1))
    gt["annotations"][0]["segmentations"][1] = _short_rle(H, W)
    _no_pycocotools_iou(monkeypatch)
    with pytest.raises(ValueError, match=r"annotation id 1 .*segmentations\[1\] .*covers 126"):
        evaluate(gt, results)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e12, -1e12, 3 * W + 1.0])
def test_polygons_must_be_finite_and_near_the_frame(value):
    gt, results, _ = _case(np.random.default_rng(2))
    poly = [[1.0, 1.0, 6.0, 1.0, 6.0, 5.0, 1.0, value]]
    bad = [dict(results[0], segmentations=[poly, None, None])]
    what = "finite" if not np.isfinite(value) else "too far outside the 11x14 frame"
    with pytest.raises(
        ValueError, match=rf"result 0 \(video 1\): segmentations\[0\] polygon .*{what}"
    ):
        evaluate(gt, bad)
    gt["annotations"][1]["segmentations"][2] = poly
    with pytest.raises(ValueError, match=rf"annotation id 2 .*segmentations\[2\] polygon .*{what}"):
        load_gt(gt)


def test_polygon_slightly_outside_the_frame_is_fine():
    gt, results, _ = _case(np.random.default_rng(3))
    poly = [[-3.0, -2.0, W + 4.0, -2.0, W + 4.0, 6.0]]  # clipped by the rasteriser
    gt["annotations"][0]["segmentations"][0] = poly
    results[0]["segmentations"][0] = poly
    got = evaluate(gt, results)
    assert got["AP"] == pytest.approx(1.0)


def test_instances_in_300_frames():
    """pycocotools' area() overflows on >= 256 RLEs; areas here come from the runs."""
    rng = np.random.default_rng(4)
    gt, results, masks = _case(rng, length=300, h=6, w=7)
    masks_shift = masks.copy()
    masks_shift[1, 100:] = False  # the second result loses its last 200 frames
    results[1] = make_result(1, 1, 0.8, masks_shift[1])
    got = evaluate(gt, results)
    inter = (masks[1] & masks_shift[1]).sum()
    union = (masks[1] | masks_shift[1]).sum()
    assert 0.2 < inter / union < 0.5
    # one TP then one FP: precision 1 up to recall 1/2 -> 51 of the 101 recall points
    assert got["AP50"] == pytest.approx(51 / 101, abs=1e-12)
    g = load_gt(gt)
    dts = check_results(results, g)
    assert ye.video_iou([dts[1]], [g.annotations[1]], 300)[0, 0] == inter / union
    np.testing.assert_array_equal(g.annotations[0].areas, masks[0].reshape(300, -1).sum(1))
    assert id_switches(gt, results)["id_switches"] == 0


def _zip(path, members: dict):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, json.dumps(data))
    return path


def test_results_zip_member_choice(tmp_path):
    gt, results, _ = _case(np.random.default_rng(5))
    other = [dict(r, score=0.5) for r in results[:1]]
    many = _zip(tmp_path / "many.zip", {"a.json": other, "b.json": results})
    with pytest.raises(
        ValueError, match=r"many\.zip holds 2 JSON files \(a\.json, b\.json\) and none"
    ):
        evaluate(gt, many)
    both = _zip(tmp_path / "both.zip", {"a.json": other, "results.json": results})
    assert evaluate(gt, both)["AP"] == pytest.approx(1.0)  # results.json is the one scored
    single = _zip(tmp_path / "single.zip", {"sub/preds.json": results})
    with pytest.warns(UserWarning, match=r"only JSON member 'sub/preds\.json'.*results\.json"):
        assert evaluate(gt, single)["AP"] == pytest.approx(1.0)


def test_write_results_is_atomic(tmp_path, monkeypatch):
    _, results, _ = _case(np.random.default_rng(6))
    path = write_results(results[:1], tmp_path / "results.json")
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    for target in (path, tmp_path / "results.zip"):
        with pytest.raises(OSError, match="No space left"):
            write_results(results, target)
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temp left
    monkeypatch.undo()
    write_results(results, path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(results))


def test_streamed_results_equal_a_whole_parse(tmp_path):
    rng = np.random.default_rng(7)
    items = [
        {"a": int(rng.integers(-5, 5)), "s": "x" * int(rng.integers(0, 40)), "n": [1.5, None]}
        for _ in range(25)
    ] + [3, 12345678901234, "tail", [], {}]
    path = tmp_path / "r.json"
    path.write_text(" \n[ " + " ,\n ".join(json.dumps(x) for x in items) + " ]\n")
    for chunk in (1, 3, 17, 1 << 20):  # numbers and strings split across chunks
        assert list(iter_json_list(path, chunk_chars=chunk)) == items
    (tmp_path / "empty.json").write_text(" [ ] ")
    assert list(iter_json_list(tmp_path / "empty.json")) == []
    text = path.read_text()
    cases = {
        "cut.json": (text[: len(text) // 2], r"cut\.json is not valid JSON \(truncated\?\)"),
        "tail.json": (text + "[1]", r"tail\.json is not valid JSON: extra data"),
        "sep.json": ('[{"a": 1} {"b": 2}]', r"sep\.json is not valid JSON .*expected ',' or ']'"),
        "dict.json": ('{"a": [1]}', r"dict\.json: results must be a JSON list, got dict"),
        "blank.json": ("  \n", r"blank\.json is empty"),
    }
    for name, (content, pattern) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=pattern):
            list(iter_json_list(tmp_path / name, chunk_chars=5))


def test_cli_ends_with_one_line_and_status_2(tmp_path, capsys):
    gt, results, _ = _case(np.random.default_rng(8))
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    res = write_results(results, tmp_path / "results.json")
    bad_rle = [dict(results[0], segmentations=[_short_rle(H, W), None, None])]
    cut = tmp_path / "cut.json"
    cut.write_text(res.read_text()[:40])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (["--gt", str(tmp_path / "nope.json"), "--results", str(res)], "nope.json does not exist"),
        (["--gt", str(tmp_path), "--results", str(res)], "is a directory"),
        (["--gt", str(gt_path), "--results", str(cut)], "cut.json is not valid JSON"),
        (["--gt", str(gt_path), "--results", str(write_results(bad_rle, tmp_path / "b.json"))],
         "covers 126 pixels"),
        (["--gt", str(gt_path), "--results", str(res), "--out", str(blocker / "m.json")],
         "cannot write --out"),
        (["--gt", str(gt_path), "--results", str(res), "--workers", "0"], "--workers"),
    ]  # fmt: skip
    for argv, text in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and text in err, err
    assert main(["--gt", str(gt_path), "--results", str(res)]) == 0


def test_results_file_memory_is_bounded_by_its_size(tmp_path):
    """Streaming: the parsed results of a file are held as one flat RLE buffer, not as the
    Python objects of a whole-file parse (their size is a multiple of the file's)."""
    gt, _, _ = _case(np.random.default_rng(9), length=40, h=60, w=70)
    rng = np.random.default_rng(10)
    results = [make_result(1, 1, 0.5, rng.random((40, 60, 70)) < 0.5) for _ in range(30)]
    path = write_results(results, tmp_path / "results.json")
    dts = check_results(path, load_gt(gt))
    store = dts[0]._store
    assert all(d._store is store for d in dts)
    held = sum(getattr(store, k).nbytes for k in ("kind", "lo", "hi", "rle_bytes", "area"))
    assert held < 1.2 * path.stat().st_size
    assert [d.segs for d in dts[:2]] == [
        [{"size": s["size"], "counts": s["counts"].encode()} for s in r["segmentations"]]
        for r in results[:2]
    ]
