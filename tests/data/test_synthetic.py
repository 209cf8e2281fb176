"""Synthetic YouTube-VIS generator: determinism, masks vs pixels, occlusion, exits, schema."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from scipy.ndimage import binary_dilation

from gmpvis.data.synthetic import (
    CATEGORIES,
    DIFFICULTIES,
    generate_dataset,
    generate_video,
)
from gmpvis.data.synthetic.__main__ import main as cli_main

# Odd, non-square sizes on purpose.
H, W, T = 56, 72, 9


def _hard(seed):
    return generate_video(seed, num_frames=T, height=H, width=W, difficulty="hard")


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(num_frames=7, height=45, width=61, difficulty="hard", seed=3)
    a = generate_dataset(tmp_path / "a", 3, **kw)
    b = generate_dataset(tmp_path / "b", 3, **kw)
    assert a.read_bytes() == b.read_bytes()
    for jpg in sorted((tmp_path / "a" / "JPEGImages").rglob("*.jpg")):
        rel = jpg.relative_to(tmp_path / "a")
        assert jpg.read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    c = generate_dataset(tmp_path / "c", 3, **{**kw, "seed": 4})
    assert c.read_bytes() != a.read_bytes()

    v1, v2, v3 = _hard(11), _hard(11), _hard(12)
    np.testing.assert_array_equal(v1.masks, v2.masks)
    np.testing.assert_array_equal(v1.frames, v2.frames)
    assert v1.frames.shape != v3.frames.shape or not np.array_equal(v1.frames, v3.frames)


def test_video_does_not_depend_on_dataset_size(tmp_path):
    small = json.loads(generate_dataset(tmp_path / "s", 1, num_frames=6, seed=5).read_text())
    big = json.loads(generate_dataset(tmp_path / "b", 3, num_frames=6, seed=5).read_text())
    first = [a for a in big["annotations"] if a["video_id"] == 1]
    assert first == small["annotations"]


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_shapes_and_masks_match_pixels(difficulty):
    v = generate_video(7, num_frames=T, height=H, width=W, difficulty=difficulty)
    n = v.masks.shape[1]
    lo, hi = DIFFICULTIES[difficulty].objects
    assert v.frames.shape == (T, H, W, 3) and v.frames.dtype == np.uint8
    assert v.masks.shape == (T, n, H, W) and v.masks.dtype == bool
    assert 1 <= n <= hi and v.category_ids.shape == (n,)
    assert set(v.category_ids.tolist()) <= {c.id for c in CATEGORIES}
    assert v.visible.any(axis=0).all()  # every kept object is seen at least once
    diff = np.abs(v.frames.astype(np.float32) - v.backgrounds.astype(np.float32)).mean(-1)
    for t in range(T):
        for i in range(n):
            if v.masks[t, i].any():
                # Saturated textured objects on a desaturated background: far from it.
                assert diff[t][v.masks[t, i]].mean() > 20.0, (t, i)
        union = binary_dilation(v.masks[t].any(0), iterations=2)
        # Away from objects only noise and exposure flicker remain.
        assert diff[t][~union].mean() < 3.0 * DIFFICULTIES[difficulty].noise + 4.0


def test_masks_never_overlap_and_front_object_hides_back_one():
    for seed in range(6):
        v = _hard(seed)
        assert v.masks.sum(axis=1).max() <= 1, seed
        # The crossing look-alike pair: at their closest frame the front one stays whole
        # and the back one loses a large part of its usual area.
        a, b = np.flatnonzero(v.lookalike_group >= 0)[:2]
        if v.depth[a] < v.depth[b]:
            a, b = b, a
        t = np.linalg.norm(v.centers[:, a] - v.centers[:, b], axis=1).argmin()
        area = v.masks.sum(axis=(2, 3)).astype(np.float64)
        assert area[t, a] > 0.8 * np.median(area[:, a]), seed
        assert area[t, b] < 0.75 * np.median(area[:, b]), seed


def test_objects_leave_and_reenter():
    found = 0
    for seed in range(4):
        v = _hard(seed)
        for i in np.flatnonzero(v.exits):
            vis = v.visible[:, i]
            seen = np.flatnonzero(vis)
            gaps = [t for t in range(seen[0], seen[-1]) if not vis[t]]
            assert gaps, (seed, i, vis)
            for t in gaps:  # absent because it is out of the image, not hidden
                x, y = v.centers[t, i]
                assert x < 0 or y < 0 or x > W or y > H, (seed, i, t, x, y)
            found += 1
    assert found >= 4  # hard: at least one exiting object per video


def test_lookalikes_at_hard_only():
    for seed in range(4):
        v = _hard(seed)
        group = np.flatnonzero(v.lookalike_group >= 0)
        assert group.size >= 2 and len(set(v.category_ids[group].tolist())) == 1
        # Mean colour of look-alikes is much closer than that of objects of other classes.
        f = v.frames.astype(np.float64)
        mean_color = [f[v.masks[:, i]].mean(0) for i in range(v.masks.shape[1])]
        a, b = group[:2]
        close = np.linalg.norm(mean_color[a] - mean_color[b])
        others = [
            np.linalg.norm(mean_color[a] - mean_color[j])
            for j in range(len(mean_color))
            if v.category_ids[j] != v.category_ids[a]
        ]
        assert close < 25.0, (seed, close)
        if others:
            assert close < min(others), seed
    for seed in range(4):
        v = generate_video(seed, num_frames=T, height=H, width=W, difficulty="easy")
        assert (v.lookalike_group < 0).all()


def test_schema_and_rles_decode(tmp_path):
    ann = generate_dataset(tmp_path, 3, num_frames=7, height=41, width=53, difficulty="hard")
    assert ann == tmp_path / "annotations.json"
    data = json.loads(ann.read_text())
    assert {c["id"] for c in data["categories"]} == {c.id for c in CATEGORIES}
    assert all({"id", "name", "supercategory"} <= set(c) for c in data["categories"])
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    videos = {v["id"]: v for v in data["videos"]}
    assert len(videos) == 3
    reentry = False
    for vid in videos.values():
        assert vid["length"] == len(vid["file_names"]) == 7
        for name in vid["file_names"]:
            with Image.open(tmp_path / "JPEGImages" / name) as im:
                assert im.size == (vid["width"], vid["height"]) == (53, 41)
        anns = [a for a in data["annotations"] if a["video_id"] == vid["id"]]
        assert anns
        owner = np.zeros((7, 41, 53), np.int64)
        for a in anns:
            assert a["iscrowd"] == 0
            assert a["category_id"] in {c["id"] for c in data["categories"]}
            segs, boxes, areas = a["segmentations"], a["bboxes"], a["areas"]
            assert len(segs) == len(boxes) == len(areas) == 7
            present = [s is not None for s in segs]
            assert present == [b is not None for b in boxes] == [x is not None for x in areas]
            idx = np.flatnonzero(present)
            reentry |= idx.size > 0 and not all(present[idx[0] : idx[-1] + 1])
            for t, seg in enumerate(segs):
                if seg is None:
                    continue
                assert isinstance(seg["counts"], str) and seg["size"] == [41, 53]
                m = mask_utils.decode(seg).astype(bool)
                assert m.shape == (41, 53) and m.sum() == areas[t] > 0
                ys, xs = np.nonzero(m)
                x, y, w, h = boxes[t]
                assert (x, y, w, h) == (xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)
                owner[t] += m
        assert owner.max() <= 1  # masks of one frame never overlap
    assert reentry  # some instance is null in the middle and back afterwards


def test_bad_arguments():
    with pytest.raises(ValueError, match="difficulty"):
        generate_video(0, difficulty="extreme")
    with pytest.raises(ValueError, match="num_frames"):
        generate_video(0, num_frames=0)
    with pytest.raises(ValueError, match="height/width"):
        generate_video(0, height=8, width=64)


def test_custom_difficulty_object_count():
    custom = dataclasses.replace(DIFFICULTIES["easy"], objects=(4, 4), size=(0.08, 0.1))
    counts = {generate_video(s, difficulty=custom, num_frames=4).masks.shape[1] for s in range(3)}
    assert max(counts) == 4  # an object fully hidden in every frame may be dropped


def test_cli_writes_dataset_and_gif(tmp_path):
    cli_main(
        ["--out", str(tmp_path), "--videos", "2", "--frames", "6", "--height", "40"]
        + ["--width", "48", "--difficulty", "hard", "--show"]
    )
    data = json.loads((tmp_path / "annotations.json").read_text())
    assert len(data["videos"]) == 2
    with Image.open(tmp_path / "show" / "vid0000.gif") as gif:
        assert gif.n_frames == 6 and gif.size == (48, 40)


def test_300_frames(tmp_path):
    """pycocotools' area() overflows on >= 256 RLEs; the writer counts mask pixels itself."""
    ann = generate_dataset(tmp_path, 1, num_frames=300, height=16, width=20, difficulty="easy")
    data = json.loads(ann.read_text())
    a = max(data["annotations"], key=lambda a: sum(s is not None for s in a["segmentations"]))
    assert sum(s is not None for s in a["segmentations"]) >= 256
    for seg, area in zip(a["segmentations"], a["areas"], strict=True):
        assert (seg is None and area is None) or mask_utils.decode(seg).sum() == area > 0


def test_annotations_written_atomically_and_checked_before_reuse(tmp_path):
    from gmpvis.data.synthetic import dataset_problem, ensure_dataset

    args = dict(num_frames=3, height=20, width=24, difficulty="easy", seed=4)
    ann = ensure_dataset(tmp_path, 2, **args)
    first = ann.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file
    mtime = ann.stat().st_mtime_ns
    assert ensure_dataset(tmp_path, 2, **args) == ann and ann.stat().st_mtime_ns == mtime
    ann.write_bytes(first[: len(first) // 2])  # a write cut short
    assert "not valid JSON (truncated?)" in dataset_problem(ann, num_videos=2, **args)
    with pytest.warns(UserWarning, match="regenerating the synthetic dataset: .*truncated"):
        ensure_dataset(tmp_path, 2, **args)
    assert ann.read_bytes() == first
    assert "num_videos=2, not 3" in dataset_problem(ann, num_videos=3, **args)
    assert "seed=4, not 5" in dataset_problem(ann, num_videos=2, **dict(args, seed=5))
    (tmp_path / "JPEGImages" / "vid0001" / "00002.jpg").unlink()
    assert "00002.jpg is missing" in dataset_problem(ann, num_videos=2, **args)
    with pytest.warns(UserWarning, match="regenerating"):
        ensure_dataset(tmp_path, 2, **args)
    assert dataset_problem(ann, num_videos=2, **args) is None


@pytest.mark.parametrize(
    "argv,text",
    [
        (["--videos", "0"], "--videos: expected an integer >= 1, got 0"),
        (["--frames", "-2"], "--frames: expected an integer >= 1, got -2"),
        (["--height", "8"], "--height: expected an integer >= 16, got 8"),
        (["--jpeg-quality", "101"], "--jpeg-quality: expected an integer in [1, 100], got 101"),
    ],
)
def test_cli_bad_arguments_end_with_one_line(tmp_path, capsys, argv, text):
    assert cli_main(["--out", str(tmp_path / "d"), *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {text}\n"
    assert not (tmp_path / "d").exists()


def test_cli_unwritable_output_ends_with_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main(["--out", str(blocker / "d"), "--videos", "1", "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "file/d" in err
