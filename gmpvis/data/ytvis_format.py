"""The one validator of the YouTube-VIS annotation format (2019 / 2021, OVIS).

Used by the training loader (:class:`gmpvis.data.YTVISAnnotations`) and by the evaluator's
ground-truth loading (:func:`gmpvis.eval.load_gt`). One pass over the Python objects checks
structure, types and sizes; the segmentations go through
:class:`gmpvis.data.segments.SegmentCollector`, which checks all RLE and polygon contents at
once. Every problem is attributed to a video (by index) so that ``skip_bad_videos`` can drop
just that video; problems that belong to no video (the file's top level, the categories)
always raise.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from gmpvis.data.json_io import InputFileError
from gmpvis.data.segments import SegmentCollector, Segments


class AnnotationError(InputFileError):
    """A malformed annotation file; the message names the file, video, annotation, field."""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class Parsed:
    """Validated content of an annotation dict (file order; bad videos still listed)."""

    categories: list[tuple[int, str]]
    videos: list[dict]  # id, height, width, length, file_names (validated)
    anns: list[tuple[int, int, int, int, int]]  # (ann id, video idx, category id, iscrowd, seg0)
    segments: Segments  # instance n = anns[n]
    ann_area: np.ndarray  # float64 [len(anns)]: mean of the truthy 'areas' entries, NaN if absent
    problems: dict[int, list[str]] = field(default_factory=dict)  # video idx -> messages
    orphan_problems: list[str] = field(default_factory=list)  # annotations of no known video


class _Collector:
    def __init__(self, source: str):
        self.source = source
        self.problems: dict[int, list[str]] = defaultdict(list)
        self.orphans: list[str] = []

    def fatal(self, msg: str) -> AnnotationError:
        return AnnotationError(f"{self.source}: {msg}")


def _parse_categories(data: dict, col: _Collector) -> list[tuple[int, str]]:
    cats = data.get("categories")
    if not isinstance(cats, list):
        raise col.fatal("field 'categories' must be a list of {id, name}")
    out, seen = [], set()
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise col.fatal(f"categories[{i}] must be a dict with an integer 'id', got {c!r:.80}")
        if c["id"] in seen:
            raise col.fatal(f"categories[{i}]: duplicate category id {c['id']}")
        seen.add(c["id"])
        out.append((c["id"], str(c.get("name", c["id"]))))
    return out


def _check_video(i: int, v, require_file_names: bool) -> dict:
    """Validated copy of ``videos[i]``; raises ValueError naming the field at fault.

    Without ``require_file_names`` (ground truth for evaluation), ``length`` alone may give
    the frame count.
    """
    if not isinstance(v, dict):
        raise ValueError(f"videos[{i}] must be a dict, got {type(v).__name__}")
    vid = v.get("id")
    where = f"video id {vid} (videos[{i}])"
    if not _is_int(vid):
        raise ValueError(f"videos[{i}]: 'id' must be an integer, got {vid!r:.40}")
    for key in ("height", "width"):
        if not _is_int(v.get(key)) or v[key] <= 0:
            raise ValueError(f"{where}: '{key}' must be a positive integer, got {v.get(key)!r}")
    names = v.get("file_names")
    if names is None and not require_file_names:
        length = v.get("length")
        if not _is_int(length) or length <= 0:
            raise ValueError(f"{where}: needs 'file_names' or a positive integer 'length'")
        return {"id": vid, "height": v["height"], "width": v["width"], "length": length,
                "file_names": []}  # fmt: skip
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where}: 'file_names' must be a non-empty list of frame paths")
    for t, name in enumerate(names):
        if not isinstance(name, str) or not name or "\n" in name:
            raise ValueError(f"{where}: file_names[{t}] must be a non-empty path, got {name!r}")
    length = v.get("length", len(names))
    if length != len(names):
        raise ValueError(f"{where}: 'length' is {length} but 'file_names' has {len(names)}")
    return {"id": vid, "height": v["height"], "width": v["width"], "length": len(names),
            "file_names": names}  # fmt: skip


def _area_mean(stored, length: int) -> float | str:
    """Mean of the truthy entries of an annotation's ``areas`` (NaN if absent), or a message."""
    if stored is None:
        return float("nan")
    if not isinstance(stored, list) or len(stored) != length:
        return f"'areas' must be a list of {length} entries (one per frame), got {stored!r:.40}"
    if any(
        x is not None and (isinstance(x, bool) or not isinstance(x, int | float)) for x in stored
    ):
        return "'areas' entries must be numbers or null"
    nz = [x for x in stored if x]  # the official evaluation skips null and 0 alike
    if not all(np.isfinite(nz)):
        return "'areas' entries must be finite"
    return float(np.mean(nz)) if nz else 0.0


def parse_annotation_dict(
    data,
    source: str,
    *,
    require_annotations: bool,
    frames_root: str | None,
    require_file_names: bool = True,
) -> Parsed:
    """Validate ``data`` (a parsed YouTube-VIS JSON); see the module docstring."""
    col = _Collector(source)
    if not isinstance(data, dict):
        raise col.fatal(f"top level must be a JSON object, got {type(data).__name__}")
    if not isinstance(data.get("videos"), list):
        raise col.fatal("field 'videos' is missing or not a list")
    categories = _parse_categories(data, col)
    cat_ids = {c for c, _ in categories}
    anns_in = data.get("annotations")
    if anns_in is None and require_annotations:
        raise col.fatal(
            "field 'annotations' is missing (pass require_annotations=False for "
            "an inference file without annotations)"
        )
    if anns_in is not None and not isinstance(anns_in, list):
        raise col.fatal("field 'annotations' must be a list")

    videos: list[dict] = []
    index_of: dict[int, int] = {}
    for i, v in enumerate(data["videos"]):
        try:
            videos.append(_check_video(i, v, require_file_names))
        except ValueError as e:
            videos.append({"id": None, "height": 1, "width": 1, "length": 1, "file_names": ["?"]})
            col.problems[i].append(str(e))
            continue
        if videos[i]["id"] in index_of:
            col.problems[i].append(f"videos[{i}]: duplicate video id {videos[i]['id']}")
        else:
            index_of[videos[i]["id"]] = i

    segs = SegmentCollector()
    anns: list[tuple[int, int, int, int, int]] = []
    areas: list[float] = []
    wheres: list[tuple[int, int]] = []  # (annotations position, video idx) per kept annotation
    seen_ann: set[int] = set()
    for j, a in enumerate(anns_in or []):
        vidx = index_of.get(a.get("video_id")) if isinstance(a, dict) else None
        if vidx is None:
            got = a.get("video_id") if isinstance(a, dict) else type(a).__name__
            col.orphans.append(f"annotations[{j}]: unknown video_id {got!r:.40}")
            continue
        v = videos[vidx]
        aid = a.get("id")
        where = f"annotation id {aid} (annotations[{j}], video id {v['id']})"
        problems = col.problems[vidx]
        if not _is_int(aid) or aid in seen_ann:
            problems.append(f"{where}: 'id' must be a unique integer")
            continue
        seen_ann.add(aid)
        if a.get("category_id") not in cat_ids:
            problems.append(f"{where}: unknown category_id {a.get('category_id')!r:.40}")
            continue
        iscrowd = a.get("iscrowd", 0)
        if iscrowd not in (0, 1):  # also accepts JSON true/false
            problems.append(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r:.40}")
            continue
        area = _area_mean(a.get("areas"), v["length"])
        if isinstance(area, str):
            problems.append(f"{where}: {area}")
            continue
        start = segs.num_segments
        error = segs.add(a.get("segmentations"), v["height"], v["width"], v["length"])
        if error is not None:
            problems.append(f"{where}: {error}")
            continue
        anns.append((aid, vidx, a["category_id"], int(iscrowd), start))
        areas.append(area)
        wheres.append((j, vidx))

    segments, seg_problems = segs.finish()
    for n, msg in seg_problems:
        j, vidx = wheres[n]
        col.problems[vidx].append(
            f"annotation id {anns[n][0]} (annotations[{j}], video id {videos[vidx]['id']}): {msg}"
        )
    if frames_root is not None:
        check_frame_files(frames_root, videos, col)
    return Parsed(
        categories=categories,
        videos=videos,
        anns=anns,
        segments=segments,
        ann_area=np.asarray(areas, np.float64),
        problems={k: v for k, v in col.problems.items() if v},
        orphan_problems=col.orphans,
    )


def report_problems(
    source, problems: dict, ids: list[int], orphans: list[str], skip: bool, hint: str = ""
) -> list:
    """Raise on problems, or (``skip``) warn once and return ``[(video id, reason)]``.

    ``hint`` ends the error message (e.g. how to skip the videos at fault).
    """
    bad = sorted(problems)
    messages = [m for i in bad for m in problems[i]] + orphans
    if messages and not skip:
        more = f" (and {len(messages) - 5} more problems)" if len(messages) > 5 else ""
        raise AnnotationError(
            f"{source}: {len(messages)} problem(s) in {len(bad)} video(s); first: "
            + "; ".join(messages[:5])
            + more
            + (f". {hint}" if hint else "")
        )
    skipped = [(ids[i], problems[i][0]) for i in bad] + [(-1, m) for m in orphans]
    if skipped:
        warnings.warn(
            f"{source}: skipped {len(bad)} bad video(s) and {len(orphans)} annotation(s) of "
            f"unknown videos; first: {skipped[0][1]}",
            stacklevel=4,
        )
    return skipped


def check_frame_files(frames_root: str, videos: list[dict], col: _Collector) -> None:
    """Every frame file must exist: one directory listing per frame directory."""
    listing: dict[str, set[str] | None] = {}
    for i, v in enumerate(videos):
        if v["id"] is None:
            continue
        for t, name in enumerate(v["file_names"]):
            d, base = os.path.split(name)
            if d not in listing:
                try:
                    listing[d] = set(os.listdir(os.path.join(frames_root, d)))
                except OSError:
                    listing[d] = None
            files = listing[d]
            if files is None or base not in files:
                col.problems[i].append(
                    f"video id {v['id']}: frame file_names[{t}] "
                    f"{os.path.join(frames_root, name)} does not exist"
                )
                break
