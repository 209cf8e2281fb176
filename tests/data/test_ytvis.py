"""YouTube-VIS annotation index: decoding of every segmentation format, mapping, subsets."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from gmpvis.data import YTVISAnnotations
from gmpvis.data.rle import (
    counts_to_rle_strings,
    rle_strings_check,
    rle_strings_to_counts,
    segment_sums,
)


def _runs(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] == 1 else runs


def _check_all_masks(index: YTVISAnnotations, truth: dict) -> int:
    checked = 0
    for i in range(len(index)):
        info = index.video(i)
        anns = index.annotations_of(i)
        masks = index.decode_masks(anns, np.arange(info.length))
        assert masks.shape == (len(anns), info.length, info.height, info.width)
        for n, a in enumerate(anns):
            for t in range(info.length):
                exp = truth.get((int(index.ann_ids[a]), t))
                if exp is None:
                    assert not masks[n, t].any()
                else:
                    np.testing.assert_array_equal(masks[n, t], exp)
                    checked += 1
    return checked


@pytest.mark.parametrize("seed", [0, 1])
def test_decode_every_format_matches_truth(make_dataset, seed):
    ds = make_dataset(seed=seed, n_videos=4, sizes=((37, 53), (48, 41), (29, 30)))
    index = YTVISAnnotations.load(ds.ann_file, frames_root=ds.frames_root)
    kinds = {
        type(s.get("counts", None)) if isinstance(s, dict) else type(s)
        for a in ds.data["annotations"]
        for s in a["segmentations"]
    }
    assert {str, list, type(None)} <= kinds  # compressed, uncompressed/polygon, null frames
    assert _check_all_masks(index, ds.truth) == len(ds.truth) > 10
    assert len(index) == 4 and len(index.ann_ids) == len(ds.data["annotations"])


def test_video_info_and_category_mapping(tiny_dataset):
    ds = tiny_dataset
    index = YTVISAnnotations.load(ds.ann_file)
    cat_ids = sorted(c["id"] for c in ds.data["categories"])
    assert index.category_ids == cat_ids  # sorted although the file lists them reversed
    assert index.category_names == [f"cat{c}" for c in cat_ids]
    by_id = {a["id"]: a for a in ds.data["annotations"]}
    for i, v in enumerate(ds.data["videos"]):
        info = index.video(i)
        assert (info.id, info.height, info.width, info.length) == (
            v["id"],
            v["height"],
            v["width"],
            v["length"],
        )
        assert info.file_names == v["file_names"] and info.name == f"vid{i:04d}"
        assert index.index_of(v["id"]) == i
        anns = index.annotations_of(i)
        ids = index.ann_ids[anns].tolist()
        assert ids == sorted(a["id"] for a in by_id.values() if a["video_id"] == v["id"])
        for a in anns:
            src = by_id[int(index.ann_ids[a])]
            assert index.category_ids[index.ann_labels[a]] == src["category_id"]
            present = index.present(np.array([a]), np.arange(info.length))[0]
            assert present.tolist() == [s is not None for s in src["segmentations"]]
    with pytest.raises(KeyError, match="video id 12345"):
        index.index_of(12345)
    with pytest.raises(ValueError, match="not all of video 1"):
        index.decode_masks(index.annotations_of(0), np.arange(2), 1)


def test_pickle_roundtrip_and_compact(make_dataset):
    ds = make_dataset(n_videos=3, sizes=((61, 67),), formats=("urle",), lengths=(9, 9))
    index = YTVISAnnotations.load(ds.ann_file)
    blob = pickle.dumps(index)
    again = pickle.loads(blob)
    assert _check_all_masks(again, ds.truth) == len(ds.truth)
    # uncompressed counts re-encoded as compressed strings: much smaller than the JSON text
    with open(ds.ann_file, "rb") as f:
        assert len(blob) < 0.6 * len(f.read())


def test_subset_and_to_dict_roundtrip(make_dataset):
    ds = make_dataset(n_videos=5, seed=3)
    index = YTVISAnnotations.load(ds.ann_file)
    ids = [int(index.video_ids[4]), int(index.video_ids[1])]
    sub = index.subset(ids)
    assert sorted(sub.video_ids.tolist()) == sorted(ids) and len(sub) == 2
    assert set(sub.ann_ids.tolist()) == {
        a["id"] for a in ds.data["annotations"] if a["video_id"] in ids
    }
    _check_all_masks(sub, ds.truth)

    gt = sub.to_dict()
    json.dumps(gt)  # plain JSON types only
    again = YTVISAnnotations.from_dict(gt)
    assert _check_all_masks(again, ds.truth) > 0
    for a in gt["annotations"]:
        for t, (seg, area, box) in enumerate(
            zip(a["segmentations"], a["areas"], a["bboxes"], strict=True)
        ):
            exp = ds.truth.get((a["id"], t))
            assert (seg is None) == (exp is None)
            if exp is not None:
                assert isinstance(seg["counts"], str) and area == int(exp.sum())
                ys, xs = np.nonzero(exp)
                assert box == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_inference_file_without_annotations(tiny_dataset, tmp_path):
    data = dict(tiny_dataset.data)
    del data["annotations"]
    path = tmp_path / "valid.json"
    path.write_text(json.dumps(data))
    index = YTVISAnnotations.load(path, require_annotations=False)
    assert len(index) == len(data["videos"]) and len(index.ann_ids) == 0
    assert index.decode_masks(index.annotations_of(1), np.arange(2), 1).shape == (
        0,
        2,
        data["videos"][1]["height"],
        data["videos"][1]["width"],
    )
    with pytest.raises(ValueError, match="'annotations' is missing"):
        YTVISAnnotations.load(path)


def test_rle_string_decoder_matches_pycocotools():
    rng = np.random.default_rng(11)
    strs, expect = [], []
    for i in range(60):
        h, w = rng.integers(1, 70, 2)
        m = rng.random((h, w)) < rng.uniform(0.02, 0.98)
        if i % 6 == 0:
            m[:] = i % 12 == 0  # all-empty and all-full masks
        strs.append(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"])
        expect.append(_runs(m))
    buf = np.frombuffer(b"".join(strs), np.uint8)
    ptr = np.concatenate(([0], np.cumsum([len(s) for s in strs])))
    counts, cnt_ptr, bad = rle_strings_to_counts(buf, ptr)
    assert not bad.any()
    for i, exp in enumerate(expect):
        assert counts[cnt_ptr[i] : cnt_ptr[i + 1]].tolist() == exp
    assert segment_sums(counts, cnt_ptr).tolist() == [sum(e) for e in expect]


def test_rle_string_decoder_flags_corrupt_strings():
    good = mask_utils.encode(np.asfortranarray(np.eye(9, 7, dtype=np.uint8)))["counts"]
    cases = [
        good,  # valid
        good[:-1] + b"P",  # last group says "more follows" (0x20 set) at the string end
        good + b" ",  # character below '0'
        b"p" + good,  # character above 'o'
        b"PPPPPPP0",  # an 8-character group: more than 32 bits
        b"030G",  # "G" = -9: 4th count = -9 + 3 < 0 (delta coding from m = 3)
        b"",  # empty
        good,  # valid again after the bad ones
    ]
    buf = np.frombuffer(b"".join(cases), np.uint8)
    ptr = np.concatenate(([0], np.cumsum([len(s) for s in cases])))
    counts, cnt_ptr, bad = rle_strings_to_counts(buf, ptr)
    assert bad.tolist() == [False, True, True, True, True, True, False, False]
    exp = _runs(np.eye(9, 7, dtype=bool))
    assert counts[cnt_ptr[0] : cnt_ptr[1]].tolist() == exp
    assert counts[cnt_ptr[7] : cnt_ptr[8]].tolist() == exp
    assert cnt_ptr[6] == cnt_ptr[7]  # the empty string has no counts


def test_chunked_rle_check_matches_whole_buffer():
    rng = np.random.default_rng(2)
    strs = []
    for _ in range(40):
        h, w = rng.integers(5, 40, 2)
        m = rng.random((h, w)) < 0.4
        strs.append(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"])
    strs[7] = strs[7] + b"P"  # corrupt: the last group says another one follows
    buf = np.frombuffer(b"".join(strs), np.uint8)
    ptr = np.concatenate(([0], np.cumsum([len(s) for s in strs])))
    counts, cnt_ptr, bad = rle_strings_to_counts(buf, ptr)
    for chunk in (1, 37, 500, 10**6):  # chunk smaller than a string: one string per chunk
        sums, chunk_bad = rle_strings_check(buf, ptr, chunk_chars=chunk)
        assert (chunk_bad == bad).all() and bad[7] and bad.sum() == 1
        assert (sums == segment_sums(counts, cnt_ptr)).all()


def test_cache_dir_skips_json_parsing_until_the_file_changes(make_dataset, tmp_path, monkeypatch):
    import os

    import gmpvis.data.ytvis as ytvis_mod
    from gmpvis.data import AnnotationError

    ds = make_dataset(n_videos=3, seed=5)
    cache = tmp_path / "cache"
    first = YTVISAnnotations.load(ds.ann_file, cache_dir=cache)
    [npz] = list(cache.iterdir())
    assert npz.suffix == ".npz"

    def no_json(path):
        raise AssertionError("JSON parsed although the cache is valid")

    monkeypatch.setattr(ytvis_mod, "read_json", no_json)
    again = YTVISAnnotations.load(ds.ann_file, cache_dir=cache, frames_root=ds.frames_root)
    assert again.category_ids == first.category_ids and again.source == first.source
    assert (again.video_ids == first.video_ids).all() and (again.ann_ids == first.ann_ids).all()
    assert _check_all_masks(again, ds.truth) == len(ds.truth)
    assert [again.video(i) for i in range(3)] == [first.video(i) for i in range(3)]

    # frame files are still checked on a cached load
    v = ds.data["videos"][2]
    os.remove(os.path.join(ds.frames_root, v["file_names"][0]))
    with pytest.raises(AnnotationError, match=rf"video id {v['id']}: frame file_names\[0\]"):
        YTVISAnnotations.load(ds.ann_file, cache_dir=cache, frames_root=ds.frames_root)
    with pytest.warns(UserWarning, match="skipped 1 bad video"):
        kept = YTVISAnnotations.load(
            ds.ann_file, cache_dir=cache, frames_root=ds.frames_root, skip_bad_videos=True
        )
    assert v["id"] not in kept.video_ids and len(kept) == 2

    # a changed file (size / mtime) is parsed again; so is a corrupt cache
    monkeypatch.undo()
    data = json.loads(open(ds.ann_file).read())
    data["videos"] = data["videos"][:2]
    data["annotations"] = [a for a in data["annotations"] if a["video_id"] != v["id"]]
    with open(ds.ann_file, "w") as f:
        json.dump(data, f)
    assert len(YTVISAnnotations.load(ds.ann_file, cache_dir=cache)) == 2
    for f in cache.iterdir():
        f.write_bytes(b"not an npz")
    assert len(YTVISAnnotations.load(ds.ann_file, cache_dir=cache)) == 2


def test_cache_of_a_file_with_bad_videos(make_dataset, tmp_path):
    from gmpvis.data import AnnotationError

    ds = make_dataset(n_videos=3, seed=6)
    data = json.loads(open(ds.ann_file).read())
    data["annotations"][-1]["segmentations"].pop()
    with open(ds.ann_file, "w") as f:
        json.dump(data, f)
    cache = tmp_path / "cache"
    for _ in range(2):  # built, then read from the cache: same warning, same index
        with pytest.warns(UserWarning, match="skipped 1 bad video"):
            index = YTVISAnnotations.load(ds.ann_file, cache_dir=cache, skip_bad_videos=True)
        assert len(index) == 2
    with pytest.raises(AnnotationError, match="'segmentations' has"):
        YTVISAnnotations.load(ds.ann_file, cache_dir=cache)


def test_counts_to_rle_strings_is_byte_identical_to_pycocotools():
    rng = np.random.default_rng(8)
    lists, expect = [], []
    for i in range(80):
        h, w = rng.integers(1, 60, 2)
        m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        if i % 10 == 0:
            m[:] = i % 20 == 0
        lists.append(_runs(m))
        expect.append(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"])
    big = [2**30 + 3, 5, 2**29 + 1, 7]  # 7-group values and large negative deltas
    lists.append(big)
    expect.append(
        mask_utils.frPyObjects({"counts": big, "size": [1, sum(big)]}, 1, sum(big))["counts"]
    )
    flat = np.concatenate([np.asarray(x, np.uint32) for x in lists])
    ptr = np.concatenate(([0], np.cumsum([len(x) for x in lists])))
    for chunk in (1, 64, 1 << 18):
        buf, str_ptr = counts_to_rle_strings(flat, ptr, chunk_counts=chunk)
        got = [buf[str_ptr[i] : str_ptr[i + 1]].tobytes() for i in range(len(lists))]
        assert got == expect
