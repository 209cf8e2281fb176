"""Inference inputs: annotation file without annotations, frame folders, video files."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gmpvis.data import (
    AnnotationError,
    open_inputs,
    read_annotation_videos,
    read_frame_folder,
    read_video_file,
)
from gmpvis.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _pil(path):
    return np.array(Image.open(path).convert("RGB"))


def test_annotation_file_without_annotations(tiny_dataset, tmp_path):
    data = {k: v for k, v in tiny_dataset.data.items() if k != "annotations"}
    path = tmp_path / "valid.json"
    path.write_text(json.dumps(data))
    videos = open_inputs(str(path), tiny_dataset.frames_root)
    assert [v.video_id for v in videos] == [v["id"] for v in data["videos"]]
    for src, v in zip(videos, data["videos"], strict=True):
        assert (src.length, src.height, src.width) == (v["length"], v["height"], v["width"])
        assert src.name == v["file_names"][0].split("/")[0] and len(src) == v["length"]
        frames = list(src.frames())
        assert len(frames) == v["length"]
        for f, name in zip(frames, v["file_names"], strict=True):
            assert f.dtype == np.uint8 and f.shape == (v["height"], v["width"], 3)
            np.testing.assert_array_equal(f, _pil(os.path.join(tiny_dataset.frames_root, name)))
    x = next(videos[1].tensors())
    mean, std = (
        torch.tensor(IMAGENET_MEAN)[:, None, None],
        torch.tensor(IMAGENET_STD)[:, None, None],
    )
    exp = torch.from_numpy(next(videos[1].frames())).permute(2, 0, 1).float() / 255
    assert x.dtype == torch.float32 and x.shape == (3, videos[1].height, videos[1].width)
    torch.testing.assert_close(x, (exp - mean) / std)
    raw = next(videos[1].tensors(normalize=False))
    torch.testing.assert_close(raw, exp)


def test_annotation_file_checks_frames(tiny_dataset):
    os.remove(
        os.path.join(tiny_dataset.frames_root, tiny_dataset.data["videos"][0]["file_names"][2])
    )
    with pytest.raises(AnnotationError, match=r"file_names\[2\].*does not exist"):
        read_annotation_videos(tiny_dataset.ann_file, tiny_dataset.frames_root)
    with pytest.raises(ValueError, match="needs frames_root"):
        open_inputs(tiny_dataset.ann_file)


def _write_frames(folder, n, h, w, names=None):
    os.makedirs(folder, exist_ok=True)
    frames = []
    for k in range(n):
        img = np.random.randint(0, 256, (h, w, 3), dtype=np.uint8)
        name = names[k] if names else f"{k}.png"
        Image.fromarray(img).save(os.path.join(folder, name))
        frames.append(img)
    return frames


def test_frame_folder_natural_order(tmp_path):
    folder = str(tmp_path / "clip")
    frames = _write_frames(folder, 12, 19, 27)  # 0.png .. 11.png: "10" after "9"
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    [src] = open_inputs(folder)
    assert (src.video_id, src.name, src.length, src.height, src.width) == (0, "clip", 12, 19, 27)
    for got, exp in zip(src.frames(), frames, strict=True):
        np.testing.assert_array_equal(got, exp)


def test_folder_of_frame_folders(tmp_path):
    a = _write_frames(str(tmp_path / "root" / "b_video"), 3, 11, 13)
    b = _write_frames(str(tmp_path / "root" / "a_video"), 4, 15, 9)
    os.makedirs(tmp_path / "root" / "empty")
    videos = read_frame_folder(tmp_path / "root", video_id=5)
    assert [(v.video_id, v.name, v.length) for v in videos] == [
        (5, "a_video", 4),
        (6, "b_video", 3),
    ]
    np.testing.assert_array_equal(list(videos[1].frames())[2], a[2])
    np.testing.assert_array_equal(list(videos[0].frames())[0], b[0])
    with pytest.raises(ValueError, match="holds no images"):
        read_frame_folder(tmp_path / "root" / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_frame_folder(tmp_path / "nowhere")


def test_frame_folder_size_change_is_named(tmp_path):
    folder = str(tmp_path / "clip")
    _write_frames(folder, 2, 10, 12)
    _write_frames(folder, 1, 9, 12, names=["2.png"])
    [src] = read_frame_folder(folder)
    with pytest.raises(ValueError, match=r"2\.png \(video id 0, clip\) is 9x12"):
        list(src.frames())
    # no annotation here: the expected size is the first frame's, and the message says so
    with pytest.raises(ValueError, match=r"is 9x12 \(HxW\) but its first frame 0\.png says 10x12"):
        list(src.frames())


@pytest.mark.parametrize("codec,ext,pix", [("ffv1", "mkv", "bgr0"), ("png", "mov", "rgb24")])
def test_video_file(tmp_path, codec, ext, pix):
    av = pytest.importorskip("av")
    path = str(tmp_path / f"clip.{ext}")
    frames = [np.random.randint(0, 256, (21, 33, 3), dtype=np.uint8) for _ in range(7)]
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 33, 21, pix
        for f in frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)
    [src] = open_inputs(path)
    assert (src.name, src.length, src.height, src.width) == ("clip", 7, 21, 33)
    got = list(src.frames())
    assert len(got) == 7
    for g, f in zip(got, frames, strict=True):  # lossless codecs: exact
        np.testing.assert_array_equal(g, f)
    assert next(src.tensors()).shape == (3, 21, 33)


def test_video_file_without_pyav_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'gmpvis\[video\]' \(or pip install av\)"):
        read_video_file(path)


def test_unreadable_video_and_unknown_input(tmp_path):
    pytest.importorskip("av")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"definitely not a video" * 10)
    with pytest.raises(ValueError, match="broken.mp4 cannot be read"):
        open_inputs(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.mp4 does not exist"):
        open_inputs(str(tmp_path / "missing.mp4"))
    other = tmp_path / "table.csv"
    other.write_text("a,b")
    with pytest.raises(ValueError, match="expected an annotation .json, a folder"):
        open_inputs(str(other))
