"""Inference inputs: an annotation file without annotations, a folder of frames, a video file.

Each reader returns :class:`VideoSource` objects: the video id and name, frame count and
size up front, and the frames lazily (one at a time, so a long video never sits in memory)
as uint8 ``[H, W, 3]`` arrays or normalised float32 ``[3, H, W]`` tensors. Video files need
the optional extra PyAV (``pip install 'gmpvis[video]'``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import numpy as np
import torch

from gmpvis.data.frame_files import frame_size, read_frame
from gmpvis.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from gmpvis.data.ytvis import YTVISAnnotations

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_tensor(frame: np.ndarray, normalize: bool = True) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in [0, 1], ImageNet-normalised if asked."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255.0
    return (x - _MEAN) / _STD if normalize else x


class VideoSource:
    """One video to run on. Subclasses implement :meth:`frames`."""

    def __init__(self, video_id: int, name: str, length: int, height: int, width: int):
        self.video_id, self.name = int(video_id), name
        self.length, self.height, self.width = int(length), int(height), int(width)

    def frames(self) -> Iterator[np.ndarray]:
        """Frames in order, each uint8 ``[H, W, 3]``."""
        raise NotImplementedError

    def tensors(self, normalize: bool = True) -> Iterator[torch.Tensor]:
        """Frames in order, each float32 ``[3, H, W]`` (see :func:`to_tensor`)."""
        for f in self.frames():
            yield to_tensor(f, normalize)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.video_id}, name={self.name!r}, "
            f"length={self.length}, size={self.height}x{self.width})"
        )


class FrameFilesSource(VideoSource):
    """A video stored as one image file per frame."""

    def __init__(self, video_id: int, name: str, paths: list[str], height=None, width=None):
        if not paths:
            raise ValueError(f"video {name!r}: no frames")
        # the size every frame must have: the annotation's, or else the first frame's
        self.size_from = "the annotation"
        if height is None or width is None:
            try:
                height, width = frame_size(paths[0])
            except (FileNotFoundError, ValueError) as e:
                raise type(e)(f"{e} (video {name!r})") from None
            self.size_from = f"its first frame {os.path.basename(paths[0])}"
        super().__init__(video_id, name, len(paths), height, width)
        self.paths = list(paths)

    def frames(self) -> Iterator[np.ndarray]:
        label = f"id {self.video_id}, {self.name}"
        for p in self.paths:
            yield read_frame(p, (self.height, self.width), label, self.size_from)


class VideoFileSource(VideoSource):
    """A video file decoded with PyAV (first video stream)."""

    def __init__(self, path: str | os.PathLike, video_id: int = 0):
        av = _import_av()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"video file {self.path} does not exist")
        try:
            with av.open(self.path) as container:
                if not container.streams.video:
                    raise ValueError(f"video file {self.path} has no video stream")
                stream = container.streams.video[0]
                height, width = stream.codec_context.height, stream.codec_context.width
                length = stream.frames
                if not length:  # not in the header: count the packets (no decoding)
                    length = sum(1 for p in container.demux(stream) if p.size)
        except av.error.FFmpegError as e:
            raise ValueError(f"video file {self.path} cannot be read: {e}") from None
        name = os.path.splitext(os.path.basename(self.path))[0]
        super().__init__(video_id, name, length, height, width)

    def frames(self) -> Iterator[np.ndarray]:
        av = _import_av()
        k = 0
        try:
            with av.open(self.path) as container:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")
                    k += 1
        except av.error.FFmpegError as e:
            raise ValueError(f"video file {self.path}: decoding failed at frame {k}: {e}") from None


def _import_av():
    try:
        import av
    except ImportError as e:
        raise ImportError(
            "reading video files needs PyAV, an optional extra: pip install 'gmpvis[video]' "
            "(or pip install av)"
        ) from e
    return av


def _natural_key(name: str):
    """'frame2' < 'frame10': digit runs compare as numbers."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _images_in(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS)]
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def read_annotation_videos(
    ann_file: str | os.PathLike, frames_root: str | os.PathLike
) -> list[VideoSource]:
    """Videos of a YouTube-VIS style file (``annotations`` may be absent, as in valid.json).

    Every frame file is checked to exist before anything runs.
    """
    index = YTVISAnnotations.load(ann_file, frames_root=frames_root, require_annotations=False)
    return annotation_sources(index, frames_root)


def annotation_sources(
    index: YTVISAnnotations, frames_root: str | os.PathLike
) -> list[VideoSource]:
    """One frame-files source per video of an already-parsed annotation index."""
    root = os.fspath(frames_root)
    out = []
    for i in range(len(index)):
        v = index.video(i)
        paths = [os.path.join(root, n) for n in v.file_names]
        out.append(FrameFilesSource(v.id, v.name, paths, v.height, v.width))
    return out


def read_frame_folder(folder: str | os.PathLike, video_id: int = 0) -> list[VideoSource]:
    """A folder of frames (one video), or a folder of such folders (one video each).

    Frames are ordered by natural sort of their names; ids count up from ``video_id``.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"frames folder {folder} does not exist")
    images = _images_in(folder)
    if images:
        return [FrameFilesSource(video_id, os.path.basename(os.path.normpath(folder)), images)]
    subdirs = sorted(
        (d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))),
        key=_natural_key,
    )
    out = []
    for d in subdirs:
        imgs = _images_in(os.path.join(folder, d))
        if imgs:
            out.append(FrameFilesSource(video_id + len(out), d, imgs))
    if not out:
        raise ValueError(f"frames folder {folder} holds no images ({', '.join(IMAGE_EXTS)})")
    return out


def read_video_file(path: str | os.PathLike, video_id: int = 0) -> list[VideoSource]:
    """One video file (needs PyAV)."""
    return [VideoFileSource(path, video_id)]


def open_inputs(
    source: str | os.PathLike, frames_root: str | os.PathLike | None = None
) -> list[VideoSource]:
    """Dispatch on ``source``: ``.json`` (with ``frames_root``), a folder, or a video file."""
    source = os.fspath(source)
    if source.lower().endswith(".json"):
        if frames_root is None:
            raise ValueError(f"{source}: an annotation file needs frames_root (the JPEGImages dir)")
        return read_annotation_videos(source, frames_root)
    if os.path.isdir(source):
        return read_frame_folder(source)
    if source.lower().endswith(VIDEO_EXTS):
        return read_video_file(source)
    if not os.path.exists(source):
        raise FileNotFoundError(f"input {source} does not exist")
    raise ValueError(
        f"input {source}: expected an annotation .json, a folder of frames or a video file "
        f"({', '.join(VIDEO_EXTS)})"
    )
