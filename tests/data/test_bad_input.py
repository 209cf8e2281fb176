"""Bad input: every fault raises an error naming the file / video / annotation / field at
fault (or, with ``skip_bad_videos=True``, drops the video with a warning); nothing half-loads
and nothing reaches pycocotools or numpy unchecked."""

from __future__ import annotations

import copy
import json
import os
import warnings

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from gmpvis.data import AnnotationError, YTVISAnnotations, YTVISDataset


def _find(data, kind):
    """(annotation position, frame) of the last segmentation of ``kind``."""
    for j in range(len(data["annotations"]) - 1, -1, -1):
        for t, s in enumerate(data["annotations"][j]["segmentations"]):
            if kind == "rle" and isinstance(s, dict) and isinstance(s["counts"], str):
                return j, t
            if kind == "urle" and isinstance(s, dict) and isinstance(s["counts"], list):
                return j, t
            if kind == "poly" and isinstance(s, list):
                return j, t
    raise AssertionError(f"no {kind} segmentation in the fixture")


def _seg(data, kind):
    j, t = _find(data, kind)
    return data["annotations"][j], t


def _other_size_rle(h, w):
    m = np.zeros((h + 3, w), np.uint8, order="F")
    m[1:4, 2:5] = 1
    return mask_utils.encode(m)["counts"].decode()


def m_seg_len(d):
    a = d["annotations"][-1]
    a["segmentations"].pop()
    return a, r"'segmentations' has \d+ entries, the video has \d+"


def m_rle_size(d):
    a, t = _seg(d, "rle")
    h, w = a["segmentations"][t]["size"]
    a["segmentations"][t]["size"] = [h + 1, w]
    return a, rf"segmentations\[{t}\]\.size \[{h + 1}, {w}\] differs from the video size"


def m_urle_sum(d):
    a, t = _seg(d, "urle")
    a["segmentations"][t]["counts"].append(5)
    return a, rf"segmentations\[{t}\] uncompressed RLE counts sum to \d+, not H\*W"


def m_urle_type(d):
    a, t = _seg(d, "urle")
    a["segmentations"][t]["counts"][1] = "x"
    return a, rf"segmentations\[{t}\] uncompressed RLE counts must all be numbers"


def m_urle_negative(d):
    a, t = _seg(d, "urle")
    c = a["segmentations"][t]["counts"]
    c[0], c[1] = c[0] + c[1] + 4, -4
    return a, rf"segmentations\[{t}\] uncompressed RLE counts must be integers"


def m_rle_chars(d):
    a, t = _seg(d, "rle")
    a["segmentations"][t]["counts"] = "!!\x01{" + a["segmentations"][t]["counts"]
    return a, rf"segmentations\[{t}\] compressed RLE counts is corrupt"


def m_rle_sum(d):
    a, t = _seg(d, "rle")
    h, w = a["segmentations"][t]["size"]
    a["segmentations"][t]["counts"] = _other_size_rle(h, w)  # would overrun pycocotools
    return a, rf"segmentations\[{t}\] compressed RLE counts covers {(h + 3) * w} pixels"


def m_rle_unicode(d):
    a, t = _seg(d, "rle")
    a["segmentations"][t]["counts"] += "é"
    return a, rf"segmentations\[{t}\] counts holds non-ASCII"


def m_rle_counts_type(d):
    a, t = _seg(d, "rle")
    a["segmentations"][t]["counts"] = 17
    return a, rf"segmentations\[{t}\]\.counts must be a string"


def m_poly_odd(d):
    a, t = _seg(d, "poly")
    a["segmentations"][t][0].append(3.0)
    return a, rf"segmentations\[{t}\] polygon rings must be lists of >= 3"


def m_poly_nan(d):
    a, t = _seg(d, "poly")
    a["segmentations"][t][0][2] = float("nan")
    return a, rf"segmentations\[{t}\] polygon coordinates must be finite"


def m_poly_huge(d):
    a, t = _seg(d, "poly")
    a["segmentations"][t][0][1] = 1e12  # rasterising it would need terabytes (segfault)
    return a, rf"segmentations\[{t}\] polygon coordinate 1e\+12 is too far outside the"


def m_seg_type(d):
    a = d["annotations"][-1]
    a["segmentations"][0] = "mask.png"
    return a, r"segmentations\[0\] must be null, a polygon list or an RLE dict"


def m_category(d):
    a = d["annotations"][-1]
    a["category_id"] = 999
    return a, "unknown category_id 999"


def m_dup_ann(d):
    a = d["annotations"][-1]
    a["id"] = d["annotations"][0]["id"]
    return a, "'id' must be a unique integer"


def m_iscrowd(d):
    a = d["annotations"][-1]
    a["iscrowd"] = "yes"
    return a, "'iscrowd' must be 0 or 1, got 'yes'"


def m_poly_text(d):
    a, t = _seg(d, "poly")
    a["segmentations"][t][0][3] = "12"
    return a, rf"segmentations\[{t}\] polygon coordinates must all be numbers"


CASES = [
    m_seg_len,
    m_rle_size,
    m_urle_sum,
    m_urle_type,
    m_urle_negative,
    m_rle_chars,
    m_rle_sum,
    m_rle_unicode,
    m_rle_counts_type,
    m_poly_odd,
    m_poly_nan,
    m_poly_huge,
    m_seg_type,
    m_category,
    m_dup_ann,
    m_iscrowd,
    m_poly_text,
]


def _write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def base(make_dataset):
    return make_dataset(n_videos=4, n_instances=(2, 3), null_prob=0.2)


@pytest.mark.parametrize("mutate", CASES, ids=[c.__name__[2:] for c in CASES])
def test_annotation_fault_names_video_annotation_field(base, tmp_path, mutate):
    data = copy.deepcopy(base.data)
    ann, pattern = mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(AnnotationError) as err:
        YTVISAnnotations.load(path)
    msg = str(err.value)
    assert path in msg and f"annotation id {ann['id']}" in msg
    assert f"video id {ann['video_id']}" in msg
    assert __import__("re").search(pattern, msg), msg

    # skip_bad_videos: that video goes, the rest loads and decodes
    with pytest.warns(UserWarning, match="skipped 1 bad video"):
        index = YTVISAnnotations.load(path, skip_bad_videos=True)
    assert len(index) == len(data["videos"]) - 1 and ann["video_id"] not in index.video_ids
    assert index.skipped[0][0] == ann["video_id"]
    for i in range(len(index)):
        index.decode_masks(index.annotations_of(i), np.arange(index.video(i).length))


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (
            lambda d: d["videos"][2].update(length=99),
            r"video id \d+ \(videos\[2\]\): 'length' is 99",
        ),
        (lambda d: d["videos"][1].pop("height"), r"videos\[1\]\): 'height' must be a positive"),
        (lambda d: d["videos"][3].update(file_names=[]), r"videos\[3\]\): 'file_names' must be"),
        (lambda d: d["videos"][2].update(id=d["videos"][0]["id"]), r"videos\[2\]: duplicate video"),
    ],
)
def test_video_fault_names_the_video(base, tmp_path, mutate, pattern):
    data = copy.deepcopy(base.data)
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(AnnotationError, match=pattern):
        YTVISAnnotations.load(path)
    with pytest.warns(UserWarning, match="skipped 1 bad video"):
        assert len(YTVISAnnotations.load(path, skip_bad_videos=True)) == 3


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda d: d.pop("videos"), "'videos' is missing"),
        (lambda d: d.update(categories={"id": 1}), "'categories' must be a list"),
        (lambda d: d["categories"].append({"name": "x"}), r"categories\[\d+\] must be a dict"),
        (lambda d: d.update(annotations={}), "'annotations' must be a list"),
    ],
)
def test_file_level_faults_always_raise(base, tmp_path, mutate, pattern):
    data = copy.deepcopy(base.data)
    mutate(data)
    path = _write(tmp_path, data)
    for skip in (False, True):
        with pytest.raises(AnnotationError, match=pattern):
            YTVISAnnotations.load(path, skip_bad_videos=skip)


def test_unknown_video_id_and_many_problems(base, tmp_path):
    data = copy.deepcopy(base.data)
    data["annotations"][0]["video_id"] = 4242
    data["annotations"][-1]["category_id"] = 999
    path = _write(tmp_path, data)
    with pytest.raises(AnnotationError, match="2 problem") as err:
        YTVISAnnotations.load(path)
    assert "annotations[0]: unknown video_id 4242" in str(err.value)
    with pytest.warns(UserWarning, match="1 annotation"):
        index = YTVISAnnotations.load(path, skip_bad_videos=True)
    assert len(index.skipped) == 2
    assert data["annotations"][0]["id"] not in index.ann_ids


@pytest.mark.parametrize(
    "content,pattern",
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "is not valid JSON"),
        (b'{"videos": [{"id": 1, "width": 3', r"not valid JSON \(truncated\?\)"),
        (b"[1, 2, 3]", "top level must be a JSON object"),
    ],
)
def test_unreadable_annotation_file(tmp_path, content, pattern):
    path = tmp_path / "ann.json"
    if content is not None:
        path.write_bytes(content)
    exc = FileNotFoundError if content is None else AnnotationError
    with pytest.raises(exc, match=pattern) as err:
        YTVISAnnotations.load(path)
    assert str(path) in str(err.value)


def test_truncated_real_file(base, tmp_path):
    raw = open(base.ann_file, "rb").read()
    path = tmp_path / "cut.json"
    path.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(AnnotationError, match=r"cut\.json is not valid JSON \(truncated\?\)"):
        YTVISAnnotations.load(path)


def test_missing_frame_files(base):
    video = base.data["videos"][1]
    missing = os.path.join(base.frames_root, video["file_names"][3])
    os.remove(missing)
    with pytest.raises(AnnotationError, match=rf"video id {video['id']}: frame file_names\[3\]"):
        YTVISAnnotations.load(base.ann_file, frames_root=base.frames_root)
    with pytest.warns(UserWarning, match="skipped 1 bad video"):
        ds = YTVISDataset(base.ann_file, base.frames_root, skip_bad_videos=True)
    assert len(ds) == 3 and video["id"] not in ds.ann.video_ids
    # a frame that disappears after loading: named at read time
    index = YTVISAnnotations.load(base.ann_file)  # no frames_root: no file check
    ds = YTVISDataset(index, base.frames_root, clip_len=video["length"])
    with pytest.raises(FileNotFoundError, match=rf"{missing} \(video id {video['id']}\)"):
        ds[1]


def test_bad_frame_images(base):
    v0, v2 = base.data["videos"][0], base.data["videos"][2]
    ds = YTVISDataset(base.ann_file, base.frames_root, clip_len=max(v0["length"], v2["length"]))
    from PIL import Image

    wrong = os.path.join(base.frames_root, v0["file_names"][1])
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(wrong)
    with pytest.raises(ValueError, match=rf"{wrong} \(video id {v0['id']}\) is 5x7"):
        ds[0]
    broken = os.path.join(base.frames_root, v2["file_names"][0])
    with open(broken, "wb") as f:
        f.write(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ValueError, match=rf"{broken} \(video id {v2['id']}\) cannot be read"):
        ds[2]


def test_valid_file_gives_no_warning(base):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = YTVISAnnotations.load(
            base.ann_file, frames_root=base.frames_root, skip_bad_videos=True
        )
    assert len(index) == 4 and index.skipped == []


@pytest.mark.parametrize("mutate", CASES, ids=[c.__name__[2:] for c in CASES])
def test_evaluator_ground_truth_uses_the_same_validator(base, mutate):
    """One validator: the evaluator's ground-truth loading rejects every fault above with
    the loader's message (a ValueError naming the annotation, video and field)."""
    from gmpvis.eval import load_gt

    data = copy.deepcopy(base.data)
    ann, pattern = mutate(data)
    with pytest.raises(ValueError, match=pattern) as err:
        load_gt(data)
    assert f"annotation id {ann['id']}" in str(err.value)
    assert f"video id {ann['video_id']}" in str(err.value)
    assert "skip_bad_videos" not in str(err.value)  # a loader option, not the evaluator's
    load_gt(base.data)  # the unmutated file loads


def _cfg(root, **kw):
    from types import SimpleNamespace

    base = dict(root=root, ann_file="", clip_len=2, max_gap=2, scales=[24], max_size=48,
                holdout_fraction=0.0, split_seed=0)  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def test_frame_headers_checked_up_front(base):
    from PIL import Image

    from gmpvis.data import build_dataset

    v = base.data["videos"][2]
    wrong = os.path.join(base.frames_root, v["file_names"][-1])
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(wrong)
    pattern = rf"video id {v['id']}: file_names\[{v['length'] - 1}\]: frame {wrong} is 5x7"
    for setting in ("true", "auto"):  # auto: a small dataset is checked
        with pytest.raises(AnnotationError, match=pattern):
            build_dataset(_cfg(base.root, verify_frames=setting), "train")
    ds = build_dataset(_cfg(base.root, verify_frames="false"), "train")  # late, but named
    i = int(np.flatnonzero(ds.ann.video_ids == v["id"])[0])
    ds.clip_len = v["length"]
    with pytest.raises(ValueError, match=rf"{wrong} \(video id {v['id']}\) is 5x7"):
        ds[i]
    with pytest.raises(ValueError, match="verify_frames: expected auto, true or false"):
        build_dataset(_cfg(base.root, verify_frames="sometimes"), "train")
    with pytest.warns(UserWarning, match="skipped 1 bad video"):
        index = YTVISAnnotations.load(base.ann_file).verify_frame_headers(
            base.frames_root, skip_bad_videos=True
        )
    assert v["id"] not in index.video_ids and len(index) == 3


def test_frame_header_check_auto_skips_large_datasets(base, monkeypatch):
    import gmpvis.data.frame_files as ff
    from gmpvis.data import build_dataset

    calls = []
    monkeypatch.setattr(YTVISAnnotations, "verify_frame_headers", lambda self, r: calls.append(r))
    monkeypatch.setattr(ff, "VERIFY_AUTO_MAX_FRAMES", 3)
    build_dataset(_cfg(base.root, verify_frames="auto"), "train")
    assert calls == []
    build_dataset(_cfg(base.root), "train")  # a config without the field: auto
    assert calls == []


def test_empty_training_split_is_refused(base, tmp_path):
    from gmpvis.data import build_dataset

    data = copy.deepcopy(base.data)
    data["annotations"] = []
    os.symlink(base.frames_root, tmp_path / "JPEGImages")
    path = _write(tmp_path, data, "annotations.json")
    with pytest.raises(ValueError, match=r"training split \(4 videos\) has no annotations"):
        build_dataset(_cfg(str(tmp_path)), "train")
    index = YTVISAnnotations.load(path)
    assert len(build_dataset(_cfg(str(tmp_path)), "all", annotations=index)) == 4  # not train
    with pytest.raises(ValueError, match="training split has no videos"):
        build_dataset(_cfg(str(tmp_path)), "train", annotations=index, video_ids=[])


def test_videos_of_300_frames(tmp_path):
    """pycocotools' area() raises OverflowError from 256 RLEs on: the loader, its export and
    the evaluator's ground truth never call it on many masks."""
    from gmpvis.eval import evaluate, load_gt, make_result

    rng = np.random.default_rng(3)
    masks = rng.random((300, 6, 5)) < 0.5
    r = make_result(1, 1, 1.0, masks)
    data = {
        "videos": [{"id": 1, "height": 6, "width": 5, "length": 300,
                    "file_names": [f"v/{t}.jpg" for t in range(300)]}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                         "segmentations": r["segmentations"]}],
    }  # fmt: skip
    index = YTVISAnnotations.from_dict(data)
    got = index.decode_masks(index.annotations_of(0), np.arange(300), 0)
    np.testing.assert_array_equal(got[0], masks)
    gt = index.to_dict()
    assert gt["annotations"][0]["areas"] == [int(m.sum()) or None for m in masks]
    np.testing.assert_array_equal(load_gt(gt).annotations[0].areas, masks.reshape(300, -1).sum(1))
    assert evaluate(gt, [r])["AP"] == pytest.approx(1.0)
