"""Visualiser: stable track colours, exact mask blending, labels/boxes, PNG/GIF/MP4 writers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from gmpvis.utils.visualize import (
    instances_from_annotations,
    overlay_frame,
    render_video,
    save_gif,
    save_mp4,
    save_png_frames,
    track_color,
)

H, W = 37, 53  # odd sizes on purpose


def _frame(rng):
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _masks(rng, n):
    return rng.random((n, H, W)) < 0.3


def test_track_colors_are_stable_and_distinct():
    ids = [0, 1, 2, 3, 7, 42, 1000, -5]
    first = [track_color(i) for i in ids]
    track_color(99)  # no hidden state between calls
    assert [track_color(i) for i in ids] == first
    assert all(len(c) == 3 and all(0 <= x <= 255 and isinstance(x, int) for x in c) for c in first)
    assert len({track_color(i) for i in range(40)}) == 40


def test_overlay_changes_exactly_the_masked_pixels():
    rng = np.random.default_rng(0)
    frame, masks = _frame(rng), _masks(rng, 3)
    ids, alpha = [5, 11, 2], 0.6
    out = overlay_frame(frame, masks, None, None, ids, alpha=alpha, contour=False)
    assert out.shape == frame.shape and out.dtype == np.uint8
    union = masks.any(0)
    np.testing.assert_array_equal(out[~union], frame[~union])
    # Independent reference: sequential alpha blend in float64, rounded once at the end.
    ref = frame.astype(np.float64)
    for m, t in zip(masks, ids, strict=True):
        ref[m] = (1 - alpha) * ref[m] + alpha * np.array(track_color(t), np.float64)
    np.testing.assert_allclose(out.astype(np.float64), np.rint(ref), atol=1.0)
    assert not np.shares_memory(out, frame)


def test_contour_stays_inside_mask():
    rng = np.random.default_rng(1)
    frame = _frame(rng)
    yy, xx = np.mgrid[0:H, 0:W]
    disc = (yy - 18) ** 2 + (xx - 25) ** 2 < 10**2
    out = overlay_frame(frame, disc[None], track_ids=[3], contour=True)
    changed = np.any(out != frame, axis=-1)
    assert not changed[~disc].any()
    # The inner boundary is dark (0.45 * colour), the interior is the blend.
    edge = disc & ~np.roll(disc, 1, axis=1)
    np.testing.assert_allclose(
        out[edge], np.rint(0.45 * np.array(track_color(3)))[None].repeat(edge.sum(), 0), atol=1
    )


def test_boxes_and_labels_draw_outside_masks_in_track_colour():
    rng = np.random.default_rng(2)
    frame, masks = _frame(rng), np.zeros((1, H, W), bool)
    masks[0, 20:30, 10:25] = True
    boxes = np.array([[10.0, 20.0, 24.0, 29.0]])
    out = overlay_frame(frame, masks, boxes, ["star"], [9], contour=False)
    assert tuple(out[20, 10]) == track_color(9)  # box corner
    assert tuple(out[29, 24]) == track_color(9)
    above = np.any(out[:20] != frame[:20], axis=-1)
    assert above.sum() > 20  # label drawn above the box
    with_no_label = overlay_frame(frame, masks, boxes, None, [9], contour=False)
    assert not np.any(with_no_label[:19] != frame[:19])


def test_bad_inputs_name_the_argument():
    rng = np.random.default_rng(3)
    frame = _frame(rng)
    with pytest.raises(ValueError, match="masks"):
        overlay_frame(frame, np.zeros((2, H + 1, W), bool))
    with pytest.raises(ValueError, match="frame"):
        overlay_frame(frame.astype(np.float32), np.zeros((1, H, W), bool))
    with pytest.raises(ValueError, match="track_ids"):
        overlay_frame(frame, np.zeros((2, H, W), bool), track_ids=[1])
    with pytest.raises(ValueError, match="boxes"):
        overlay_frame(frame, np.zeros((2, H, W), bool), boxes=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"instances\[0\]\['masks'\]"):
        render_video([frame] * 3, [{"masks": [None, None]}])


def test_render_video_keeps_track_colour_across_frames():
    rng = np.random.default_rng(4)
    frames = [_frame(rng) for _ in range(4)]
    m = np.zeros((4, H, W), bool)
    m[:, 5:30, 5:30] = True
    other = [None, _masks(rng, 1)[0] & ~m[1], None, None]
    inst = [{"masks": m, "track_id": 17, "label": "disc"}, {"masks": other, "track_id": 4}]
    out = render_video(frames, inst, alpha=1.0, contour=False, draw_boxes=False, draw_labels=False)
    assert len(out) == 4
    for t in range(4):
        assert np.all(out[t][25, 25] == track_color(17))
    np.testing.assert_array_equal(out[0][~m[0]][:50], frames[0][~m[0]][:50])
    assert np.all(out[1][other[1]] == track_color(4))
    # Defaults add boxes and labels, which also touch pixels outside the masks.
    labelled = render_video(frames, inst)
    assert np.any(labelled[0][~m[0]] != frames[0][~m[0]])


def test_instances_from_annotations_roundtrip():
    rng = np.random.default_rng(5)
    masks = rng.random((3, H, W)) < 0.4
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    anns = [{"id": 8, "category_id": 2, "segmentations": [rles[0], None, rles[2]]}]
    res = [{"category_id": 3, "score": 0.75, "segmentations": [None, rles[1], None]}]
    gt = instances_from_annotations(anns, H, W, {2: "square"})
    pr = instances_from_annotations(res, H, W)
    assert gt[0]["track_id"] == 8 and gt[0]["label"] == "square" and gt[0]["masks"][1] is None
    np.testing.assert_array_equal(gt[0]["masks"][2], masks[2])
    np.testing.assert_array_equal(pr[0]["masks"][1], masks[1])
    assert pr[0]["score"] == 0.75 and pr[0]["label"] == "3" and pr[0]["track_id"] == 0
    with pytest.raises(ValueError, match="segmentations"):
        instances_from_annotations(anns, H + 2, W)


def test_png_and_gif_writers(tmp_path):
    rng = np.random.default_rng(6)
    frames = [_frame(rng) for _ in range(5)]
    paths = save_png_frames(frames, tmp_path / "png")
    assert [p.name for p in paths] == [f"{t:05d}.png" for t in range(5)]
    for p, f in zip(paths, frames, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), f)  # lossless
    gif = save_gif(frames, tmp_path / "v.gif", fps=4)
    with Image.open(gif) as im:
        assert im.n_frames == 5 and im.size == (W, H)
        assert im.info["duration"] == 250
    with pytest.raises(ValueError, match="empty"):
        save_gif([], tmp_path / "e.gif")


def test_mp4_needs_av(tmp_path):
    rng = np.random.default_rng(7)
    frames = [_frame(rng) for _ in range(3)]
    if importlib.util.find_spec("av") is None:
        with pytest.raises(RuntimeError, match="'av'"):
            save_mp4(frames, tmp_path / "v.mp4")
    else:
        path = save_mp4(frames, tmp_path / "v.mp4", fps=5)
        assert path.stat().st_size > 0
