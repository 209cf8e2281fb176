"""YouTube-VIS JSON I/O for evaluation: ground truth and results, read, checked and written.

Everything that reaches the evaluator goes through here, so every malformed input fails with a
``ValueError`` that names the file, the video, the result index and the field at fault, instead
of failing (or hanging) deep inside numpy or pycocotools. Ground truth is checked by the same
validator as the training loader (:mod:`gmpvis.data.ytvis_format`); the segmentations of
results by the same segmentation validator (:mod:`gmpvis.data.segments`): RLE counts must
cover exactly H*W pixels, polygons must be finite and near the frame.

Results files are streamed (one result at a time) into one flat buffer of compressed RLE
strings: a results file costs about its own size in memory, not the Python objects of its
parse. Masks are handed to pycocotools only on access (:attr:`Instance.segs`).

Formats (DESIGN.md "Formats"):
  ground truth: ``videos`` (id, height, width, length | file_names), ``categories`` (id, name),
  ``annotations`` (id, video_id, category_id, iscrowd, segmentations: one RLE / polygon / null per
  frame, areas).
  results: a list of ``{video_id, category_id, score, segmentations}``, one compressed RLE
  (``counts`` a string) or null per frame. ``results.zip`` holds ``results.json`` at its root, as
  the CodaLab servers expect.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from gmpvis.data.json_io import atomic_write, iter_json_list, read_json
from gmpvis.data.segments import SEG_NULL, SegmentCollector, Segments
from gmpvis.data.ytvis_format import parse_annotation_dict, report_problems

__all__ = [
    "GroundTruth",
    "Instance",
    "check_results",
    "load_gt",
    "load_results",
    "make_result",
    "read_json",
    "write_results",
    "write_submission",
]

RESULT_FIELDS = ("video_id", "category_id", "score", "segmentations")


@dataclass
class Video:
    height: int
    width: int
    length: int


class Instance:
    """One GT annotation or one result; its masks live in a shared :class:`Segments` store.

    ``segs``: ``length`` entries, a compressed RLE dict (bytes counts) or None, built on
    access; ``areas`` float64 ``[length]`` pixel counts (0 where null); ``present`` bool
    ``[length]``; ``avg_area``: mean of the non-zero per-frame areas (0 if none), or of the
    annotation's own ``areas`` field, the size that decides small/medium/large as the
    official YouTube-VIS evaluation does.
    """

    __slots__ = ("id", "video_id", "category_id", "score", "iscrowd", "avg_area", "_store", "_n")

    def __init__(self, id, video_id, category_id, score, iscrowd, store: Segments, n, avg_area):
        self.id, self.video_id, self.category_id = int(id), int(video_id), int(category_id)
        self.score, self.iscrowd, self.avg_area = float(score), bool(iscrowd), float(avg_area)
        self._store, self._n = store, int(n)

    def _span(self) -> slice:
        p = self._store.inst_ptr
        return slice(int(p[self._n]), int(p[self._n + 1]))

    @property
    def length(self) -> int:
        return self._span().stop - self._span().start

    @property
    def segs(self) -> list[dict | None]:
        return self._store.instance_rles(self._n)

    @property
    def areas(self) -> np.ndarray:
        return self._store.area[self._span()].astype(np.float64)

    @property
    def present(self) -> np.ndarray:
        return self._store.kind[self._span()] != SEG_NULL

    def __repr__(self) -> str:
        return (
            f"Instance(id={self.id}, video_id={self.video_id}, category_id={self.category_id}, "
            f"score={self.score:.4g}, frames={int(self.present.sum())}/{self.length})"
        )


@dataclass
class GroundTruth:
    videos: dict[int, Video]
    categories: dict[int, str]  # category id -> name
    annotations: list[Instance]


def _need(obj: dict, key: str, where: str):
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise ValueError(f"{where}: missing field '{key}'")
    return obj[key]


def _int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    return int(value)


def load_gt(gt: str | Path | dict | GroundTruth) -> GroundTruth:
    """Parse and check a YouTube-VIS annotation file (path or loaded dict).

    The checks are the training loader's (:func:`gmpvis.data.ytvis_format.
    parse_annotation_dict`), except that a video may give its frame count by ``length``
    alone; any problem raises, naming the file, video, annotation and field.
    """
    if isinstance(gt, GroundTruth):
        return gt
    src = str(gt) if isinstance(gt, str | Path) else "ground truth"
    data = read_json(gt) if isinstance(gt, str | Path) else gt
    parsed = parse_annotation_dict(
        data, src, require_annotations=True, frames_root=None, require_file_names=False
    )
    ids = [-1 if v["id"] is None else v["id"] for v in parsed.videos]
    report_problems(src, parsed.problems, ids, parsed.orphan_problems, skip=False)
    store = parsed.segments.rasterized()
    measured = store.mean_areas()
    # The size class uses the annotation's own 'areas' field, as the official code does.
    avg = np.where(np.isnan(parsed.ann_area), measured, parsed.ann_area)
    videos = {v["id"]: Video(v["height"], v["width"], v["length"]) for v in parsed.videos}
    anns = [
        Instance(aid, parsed.videos[vidx]["id"], cid, 1.0, crowd, store, n, avg[n])
        for n, (aid, vidx, cid, crowd, _) in enumerate(parsed.anns)
    ]
    return GroundTruth(videos, dict(parsed.categories), anns)


def load_results(results: str | Path | list) -> list:
    """A results list from a path (``.json`` or ``.zip``) or as given; checks it is a list."""
    src = str(results) if isinstance(results, str | Path) else "results"
    data = read_json(results) if isinstance(results, str | Path) else results
    if not isinstance(data, list):
        raise ValueError(f"{src}: results must be a JSON list, got {type(data).__name__}")
    return data


def _score(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}.score: expected a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{where}.score: must be finite, got {value!r}")
    return float(value)


def check_results(results: str | Path | list, gt: GroundTruth) -> list[Instance]:
    """Validate every result against the GT videos/categories -> list of Instance.

    ``results``: a path (``.json`` / ``.zip``, streamed) or a list. Result ids are
    ``index + 1`` as in the official loader; ``iscrowd`` is always 0.
    """
    if isinstance(results, str | Path):
        prefix, items = f"{results}: ", iter_json_list(results, what="results")
    elif isinstance(results, list):
        prefix, items = "", results
    else:
        raise ValueError(f"results must be a JSON list, got {type(results).__name__}")
    col = SegmentCollector()
    meta: list[tuple[int, int, float]] = []  # (video id, category id, score) per result
    for i, r in enumerate(items):
        where = f"{prefix}result {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(r).__name__}")
        for key in RESULT_FIELDS:
            _need(r, key, where)
        vid = _int(r["video_id"], f"{where}.video_id")
        cid = _int(r["category_id"], f"{where}.category_id")
        if vid not in gt.videos:
            raise ValueError(f"{where}: unknown video_id {vid} (not in the ground truth)")
        if cid not in gt.categories:
            raise ValueError(f"{where}: unknown category_id {cid} (not in the ground truth)")
        score = _score(r["score"], where)
        v = gt.videos[vid]
        error = col.add(r["segmentations"], v.height, v.width, v.length)
        if error is not None:
            raise ValueError(f"{where} (video {vid}): {error}")
        meta.append((vid, cid, score))
    segments, problems = col.finish()
    if problems:
        n, msg = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(f"{prefix}result {n} (video {meta[n][0]}): {msg}{more}")
    store = segments.rasterized()
    avg = store.mean_areas()
    return [
        Instance(n + 1, vid, cid, score, False, store, n, avg[n])
        for n, (vid, cid, score) in enumerate(meta)
    ]


def make_result(video_id: int, category_id: int, score: float, masks) -> dict:
    """One result entry from binary masks ``[T, H, W]`` (numpy or torch); empty frames -> null."""
    if hasattr(masks, "detach"):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected [T, H, W], got shape {tuple(masks.shape)}")
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))  # [H, W, T]
    rles = mask_utils.encode(fortran)
    nonempty = masks.reshape(masks.shape[0], -1).any(axis=1)
    segs = [
        {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}
        if keep
        else None
        for r, keep in zip(rles, nonempty, strict=True)
    ]
    return {
        "video_id": int(video_id),
        "category_id": int(category_id),
        "score": float(score),
        "segmentations": segs,
    }


def _jsonable(results: list) -> list:
    """Plain-JSON copy: numpy scalars -> Python, bytes counts -> str; checks fields and scores."""
    out = []
    for i, r in enumerate(results):
        where = f"result {i}"
        for key in RESULT_FIELDS:
            _need(r, key, where)
        segs = []
        for s in r["segmentations"]:
            if s:
                counts = s["counts"]
                if isinstance(counts, bytes):
                    counts = counts.decode("ascii")
                s = {"size": [int(x) for x in s["size"]], "counts": counts}
            segs.append(s or None)
        out.append(
            {
                "video_id": _int(r["video_id"], f"{where}.video_id"),
                "category_id": _int(r["category_id"], f"{where}.category_id"),
                "score": _score(r["score"], where),
                "segmentations": segs,
            }
        )
    return out


def write_results(results: list, path: str | Path) -> Path:
    """Write results to ``path``: a ``.zip`` holds ``results.json`` at its root, else plain JSON.

    Atomic: the file appears complete or not at all (see :func:`gmpvis.data.json_io.atomic_write`).
    """
    path = Path(path)
    text = json.dumps(_jsonable(results), separators=(",", ":"))
    if path.suffix != ".zip":
        return atomic_write(path, text)
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("results.json", text)
    return atomic_write(path, raw.getvalue())


def write_submission(results: list, out_dir: str | Path) -> tuple[Path, Path]:
    """``out_dir/results.json`` and ``out_dir/results.zip`` (the CodaLab submission)."""
    out_dir = Path(out_dir)
    return (
        write_results(results, out_dir / "results.json"),
        write_results(results, out_dir / "results.zip"),
    )
