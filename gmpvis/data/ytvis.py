"""YouTube-VIS (2019 / 2021) and OVIS annotations: parsed once into a compact index.

The JSON is read and validated once (:mod:`gmpvis.data.ytvis_format`); the index keeps only flat
numpy arrays (per video, per annotation, per (annotation, frame) segment) plus one string of
frame names per video, so it pickles quickly to DataLoader workers. Every RLE, compressed or
not in the file, is kept as a COCO compressed string (about one byte a run count, against a
Python int object each in the parsed JSON); masks are decoded on demand with pycocotools.

Category ids are mapped to contiguous labels ``0..C-1`` in sorted-id order;
``category_ids[label]`` gives the id back for writing results.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils

from gmpvis.data import json_io
from gmpvis.data.frame_files import frame_header_problem
from gmpvis.data.index_cache import cache_path, load_index, save_index
from gmpvis.data.rle import decode_rles, polygon_to_rle
from gmpvis.data.segments import SEG_NULL, SEG_POLY, SEG_RLE
from gmpvis.data.ytvis_format import (
    AnnotationError,
    _Collector,
    check_frame_files,
    parse_annotation_dict,
    report_problems,
)

__all__ = ["AnnotationError", "VideoInfo", "YTVISAnnotations"]


@dataclass(frozen=True)
class VideoInfo:
    """One video of the index."""

    index: int  # position in the index
    id: int  # video id in the JSON
    name: str  # frame directory (the part of file_names[0] before the file name)
    height: int
    width: int
    length: int
    file_names: list[str]  # relative to the frames root


def read_json(path: str | os.PathLike):
    """Parse an annotation file; a missing, empty, truncated or non-JSON file raises
    (FileNotFoundError / :class:`AnnotationError`) naming the file."""
    return json_io.read_json(path, error=AnnotationError)


def _id_or_minus1(x) -> int:
    return -1 if x is None else int(x)


_SKIP_HINT = "Fix the file or pass skip_bad_videos=True to drop those videos"


class YTVISAnnotations:
    """Validated, compact index of a YouTube-VIS style annotation file.

    Build it with :meth:`load` (a path) or :meth:`from_dict`. ``len(index)`` is the number of
    videos; videos keep file order, annotations of a video are sorted by id.
    """

    def __init__(self, parsed, *, source: str, keep: np.ndarray, skipped: list[tuple[int, str]]):
        self.source = source
        cats = sorted(parsed.categories)
        self.category_ids: list[int] = [c for c, _ in cats]
        self.category_names: list[str] = [n for _, n in cats]
        label_of = {c: i for i, c in enumerate(self.category_ids)}
        vids = [parsed.videos[i] for i in keep]
        self.video_ids = np.asarray([v["id"] for v in vids], np.int64)
        self.heights = np.asarray([v["height"] for v in vids], np.int32)
        self.widths = np.asarray([v["width"] for v in vids], np.int32)
        self.lengths = np.asarray([len(v["file_names"]) for v in vids], np.int32)
        self._names = ["\n".join(v["file_names"]) for v in vids]  # one str per video
        self.skipped = skipped  # [(video id or -1, reason)] when skip_bad_videos=True

        new_index = np.full(len(parsed.videos), -1, np.int64)
        new_index[keep] = np.arange(len(keep))
        anns = [a for a in parsed.anns if new_index[a[1]] >= 0]
        anns.sort(key=lambda a: (new_index[a[1]], a[0]))
        self.ann_ids = np.asarray([a[0] for a in anns], np.int64)
        self.ann_video = np.asarray([new_index[a[1]] for a in anns], np.int64)
        self.ann_labels = np.asarray([label_of[a[2]] for a in anns], np.int64)
        self.ann_iscrowd = np.asarray([a[3] for a in anns], np.uint8)
        self.ann_seg0 = np.asarray([a[4] for a in anns], np.int64)  # first segment
        # CSR: annotations of video i are ann_ptr[i]:ann_ptr[i+1]
        self.ann_ptr = np.zeros(len(vids) + 1, np.int64)
        np.cumsum(np.bincount(self.ann_video, minlength=len(vids)), out=self.ann_ptr[1:])
        seg = parsed.segments
        self._seg_kind, self._seg_lo, self._seg_hi = seg.kind, seg.lo, seg.hi
        self._rle_bytes, self._ring_ptr, self._coords = seg.rle_bytes, seg.ring_ptr, seg.coords
        self._index_of = {int(v): i for i, v in enumerate(self.video_ids)}

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        ann_file: str | os.PathLike,
        *,
        frames_root: str | os.PathLike | None = None,
        require_annotations: bool = True,
        skip_bad_videos: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> YTVISAnnotations:
        """Read and validate ``ann_file``; with ``frames_root`` also check every frame exists.

        A malformed file raises :class:`AnnotationError` (a ValueError) naming the video,
        annotation and field, and nothing is loaded; with ``skip_bad_videos=True`` the
        videos at fault are dropped instead, with one warning giving their count.

        ``cache_dir``: keep the validated index there (an ``.npz`` keyed by the file's path,
        size and mtime), so the next load of an unchanged file skips JSON parsing. Frame
        files are checked on every load.
        """
        if cache_dir is None:
            data = read_json(ann_file)
            return cls.from_dict(
                data,
                source=os.fspath(ann_file),
                frames_root=frames_root,
                require_annotations=require_annotations,
                skip_bad_videos=skip_bad_videos,
            )
        path = cache_path(cache_dir, ann_file, require_annotations)
        index = None
        if os.path.isfile(path):
            try:
                index = cls.load_saved(path)
            except (OSError, ValueError, KeyError):  # unreadable or old cache: rebuild it
                index = None
        if index is not None and index.skipped:
            if skip_bad_videos:  # the file has bad videos: say so again
                warnings.warn(
                    f"{index.source}: skipped {len(index.skipped)} bad video(s) or "
                    f"annotation(s) (cached index); first: {index.skipped[0][1]}",
                    stacklevel=2,
                )
            else:  # parse again to raise with the full report
                index = None
        if index is None:
            index = cls.from_dict(
                read_json(ann_file),
                source=os.fspath(ann_file),
                require_annotations=require_annotations,
                skip_bad_videos=skip_bad_videos,
            )
            os.makedirs(cache_dir, exist_ok=True)
            index.save(path)
        if frames_root is not None:
            index = index._check_frames(frames_root, skip_bad_videos)
        return index

    @classmethod
    def from_dict(
        cls,
        data: dict,
        *,
        source: str = "<dict>",
        frames_root: str | os.PathLike | None = None,
        require_annotations: bool = True,
        skip_bad_videos: bool = False,
    ) -> YTVISAnnotations:
        root = None if frames_root is None else os.fspath(frames_root)
        parsed = parse_annotation_dict(
            data, source, require_annotations=require_annotations, frames_root=root
        )
        ids = [_id_or_minus1(v["id"]) for v in parsed.videos]
        skipped = report_problems(
            source, parsed.problems, ids, parsed.orphan_problems, skip_bad_videos, _SKIP_HINT
        )
        keep = np.asarray([i for i in range(len(parsed.videos)) if i not in parsed.problems])
        return cls(parsed, source=source, keep=keep.astype(np.int64), skipped=skipped)

    def _check_frames(self, frames_root, skip_bad_videos: bool) -> YTVISAnnotations:
        """Check every frame file exists (one listing per frame directory)."""
        videos = [
            {"id": int(self.video_ids[i]), "file_names": self.file_names(i)}
            for i in range(len(self))
        ]
        col = _Collector(self.source)
        check_frame_files(os.fspath(frames_root), videos, col)
        return self._drop({k: v for k, v in col.problems.items() if v}, skip_bad_videos)

    def verify_frame_headers(
        self, frames_root: str | os.PathLike, skip_bad_videos: bool = False
    ) -> YTVISAnnotations:
        """Open the header of every frame (not its pixels): each must be an image of its
        video's size. A problem raises :class:`AnnotationError` naming the video and file
        (or, with ``skip_bad_videos``, drops the video with a warning). Done once per index
        and frames root."""
        root = os.fspath(frames_root)
        if getattr(self, "_headers_verified", None) == root:
            return self
        problems = {}
        for i in range(len(self)):
            hw = (int(self.heights[i]), int(self.widths[i]))
            for t, name in enumerate(self.file_names(i)):
                why = frame_header_problem(os.path.join(root, name), hw)
                if why is not None:
                    problems[i] = [f"video id {int(self.video_ids[i])}: file_names[{t}]: {why}"]
                    break
        out = self._drop(problems, skip_bad_videos)
        out._headers_verified = root
        return out

    def _drop(self, problems: dict[int, list[str]], skip_bad_videos: bool) -> YTVISAnnotations:
        """Raise on ``problems`` (video index -> messages), or drop those videos."""
        if not problems:
            return self
        ids = [int(v) for v in self.video_ids]
        skipped = report_problems(self.source, problems, ids, [], skip_bad_videos, _SKIP_HINT)
        out = self.subset([v for i, v in enumerate(ids) if i not in problems])
        out.skipped = self.skipped + skipped
        return out

    # ---- cache ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the index as one ``.npz`` (see :mod:`gmpvis.data.index_cache`)."""
        save_index(self, path)

    @classmethod
    def load_saved(cls, path: str | os.PathLike) -> YTVISAnnotations:
        """Read an index written by :meth:`save`."""
        return load_index(cls, path)

    # ---- queries --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def index_of(self, video_id: int) -> int:
        """Position of ``video_id`` in the index (KeyError naming it if absent)."""
        try:
            return self._index_of[int(video_id)]
        except KeyError:
            raise KeyError(f"video id {video_id} is not in {self.source}") from None

    def file_names(self, i: int) -> list[str]:
        return self._names[i].split("\n")

    def video(self, i: int) -> VideoInfo:
        names = self.file_names(i)
        return VideoInfo(
            index=i,
            id=int(self.video_ids[i]),
            name=os.path.dirname(names[0]) or str(int(self.video_ids[i])),
            height=int(self.heights[i]),
            width=int(self.widths[i]),
            length=int(self.lengths[i]),
            file_names=names,
        )

    def annotations_of(self, i: int) -> np.ndarray:
        """Annotation positions (into ``ann_*`` arrays) of video ``i``: int64 ``[n]``."""
        return np.arange(self.ann_ptr[i], self.ann_ptr[i + 1])

    def present(self, ann: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """bool ``[len(ann), len(frames)]``: the segmentation there is not null."""
        seg = self.ann_seg0[ann][:, None] + np.asarray(frames)[None, :]
        return self._seg_kind[seg] != SEG_NULL

    def rle(self, ann: int, frame: int) -> dict | None:
        """Compressed RLE (pycocotools dict, bytes counts) of one segmentation, or None."""
        v = self.ann_video[ann]
        h, w = int(self.heights[v]), int(self.widths[v])
        s = self.ann_seg0[ann] + frame
        kind, lo, hi = self._seg_kind[s], self._seg_lo[s], self._seg_hi[s]
        if kind == SEG_NULL:
            return None
        if kind == SEG_RLE:
            return {"size": [h, w], "counts": self._rle_bytes[lo:hi].tobytes()}
        assert kind == SEG_POLY
        p = self._ring_ptr
        return polygon_to_rle([self._coords[p[r] : p[r + 1]] for r in range(lo, hi)], h, w)

    def decode_masks(self, ann: np.ndarray, frames: np.ndarray, video: int | None = None):
        """Masks of annotations ``ann`` of video ``video`` at ``frames``: bool ``[N, T, H, W]``.

        Null segmentations give empty masks. ``video`` (an index) may be left out when
        ``ann`` is not empty; with neither, H = W = 0.
        """
        ann, frames = np.asarray(ann, np.int64), np.asarray(frames, np.int64)
        owners = np.unique(self.ann_video[ann])
        if owners.size > 1 or (video is not None and owners.size and owners[0] != video):
            raise ValueError(f"decode_masks: annotations {ann} are not all of video {video}")
        v = int(owners[0]) if owners.size else video
        if v is None:
            return np.zeros((0, len(frames), 0, 0), dtype=bool)
        h, w = int(self.heights[v]), int(self.widths[v])
        out = np.zeros((len(ann), len(frames), h, w), dtype=bool)
        where, rles = [], []
        for n, a in enumerate(ann):
            for t, f in enumerate(frames):
                r = self.rle(int(a), int(f))
                if r is not None:
                    where.append((n, t))
                    rles.append(r)
        if rles:
            masks = decode_rles(rles, h, w)
            for (n, t), m in zip(where, masks, strict=True):
                out[n, t] = m
        return out

    # ---- subsets and export -----------------------------------------------------------
    def subset(self, video_ids) -> YTVISAnnotations:
        """A view of some videos (shares the segment buffers; no copy of the RLE data)."""
        keep = np.asarray(sorted(self.index_of(v) for v in video_ids), np.int64)
        new = object.__new__(YTVISAnnotations)
        new.__dict__.update(self.__dict__)
        for key in ("video_ids", "heights", "widths", "lengths"):
            setattr(new, key, getattr(self, key)[keep])
        new._names = [self._names[i] for i in keep]
        new_index = np.full(len(self), -1, np.int64)
        new_index[keep] = np.arange(len(keep))
        sel = np.concatenate([self.annotations_of(i) for i in keep]) if len(keep) else []
        sel = np.asarray(sel, np.int64)
        for key in ("ann_ids", "ann_labels", "ann_iscrowd", "ann_seg0"):
            setattr(new, key, getattr(self, key)[sel])
        new.ann_video = new_index[self.ann_video[sel]]
        new.ann_ptr = np.zeros(len(keep) + 1, np.int64)
        np.cumsum(np.bincount(new.ann_video, minlength=len(keep)), out=new.ann_ptr[1:])
        new._index_of = {int(v): i for i, v in enumerate(new.video_ids)}
        new.skipped = []
        return new

    def to_dict(self) -> dict:
        """YouTube-VIS ground-truth dict (compressed RLE strings, areas, bboxes) of the index.

        This is what a video-AP evaluator needs for a local holdout split.
        """
        videos, anns = [], []
        for i in range(len(self)):
            info = self.video(i)
            videos.append(
                {
                    "id": info.id,
                    "width": info.width,
                    "height": info.height,
                    "length": info.length,
                    "file_names": info.file_names,
                }
            )
            for a in self.annotations_of(i):
                segs, areas, boxes = [], [], []
                for t in range(info.length):
                    r = self.rle(int(a), t)
                    if r is None:
                        segs.append(None)
                        areas.append(None)
                        boxes.append(None)
                        continue
                    segs.append({"size": r["size"], "counts": r["counts"].decode("ascii")})
                    areas.append(int(mask_utils.area(r)))
                    boxes.append([float(x) for x in mask_utils.toBbox(r)])
                anns.append(
                    {
                        "id": int(self.ann_ids[a]),
                        "video_id": info.id,
                        "category_id": self.category_ids[int(self.ann_labels[a])],
                        "iscrowd": int(self.ann_iscrowd[a]),
                        "segmentations": segs,
                        "areas": areas,
                        "bboxes": boxes,
                    }
                )
        cats = [
            {"id": c, "name": n}
            for c, n in zip(self.category_ids, self.category_names, strict=True)
        ]
        return {"videos": videos, "annotations": anns, "categories": cats}

    def __repr__(self) -> str:
        return (
            f"YTVISAnnotations({self.source!r}, videos={len(self)}, "
            f"annotations={len(self.ann_ids)}, categories={self.num_classes})"
        )
