"""Validation of a YouTube-VIS style annotation dict, before any index is built.

One pass over the Python objects checks structure, types and sizes and gathers every
segmentation into flat lists; numpy then checks the contents of all RLEs and polygons at
once (count sums = height * width, finite coordinates). Every problem is attributed to a
video (by index) so that ``skip_bad_videos`` can drop just that video; problems that
belong to no video (the file's top level, the categories) always raise.
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from gmpvis.data.rle import counts_to_rle_strings, rle_strings_check, segment_sums

SEG_NULL, SEG_RLE, SEG_URLE, SEG_POLY = 0, 1, 2, 3  # SEG_URLE only while parsing


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file, video, annotation, field."""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class Parsed:
    """Flat, validated content of an annotation dict (file order, bad items included)."""

    categories: list[tuple[int, str]]
    videos: list[dict]  # id, height, width, length, file_names (validated)
    anns: list[tuple[int, int, int, int, int]]  # (ann id, video idx, category id, iscrowd, seg0)
    seg_kind: np.ndarray  # int8 [S]
    seg_lo: np.ndarray  # int64 [S] start into the buffer of its kind
    seg_hi: np.ndarray  # int64 [S]
    rle_bytes: np.ndarray  # uint8, compressed RLE strings (uncompressed ones re-encoded)
    ring_ptr: np.ndarray  # int64 [R + 1] into coords; polygons index rings
    coords: np.ndarray  # float64 polygon coordinates
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


def _check_video(i: int, v) -> dict:
    """Validated copy of ``videos[i]``; raises ValueError naming the field at fault."""
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
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where}: 'file_names' must be a non-empty list of frame paths")
    for t, name in enumerate(names):
        if not isinstance(name, str) or not name or "\n" in name:
            raise ValueError(f"{where}: file_names[{t}] must be a non-empty path, got {name!r}")
    length = v.get("length", len(names))
    if length != len(names):
        raise ValueError(f"{where}: 'length' is {length} but 'file_names' has {len(names)}")
    return {"id": vid, "height": v["height"], "width": v["width"], "file_names": names}


def parse_annotation_dict(
    data, source: str, *, require_annotations: bool, frames_root: str | None
) -> Parsed:
    """Validate ``data`` (a parsed YouTube-VIS JSON); see module docstring."""
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
            videos.append(_check_video(i, v))
        except ValueError as e:
            videos.append({"id": None, "height": 1, "width": 1, "file_names": ["?"]})
            col.problems[i].append(str(e))
            continue
        if videos[i]["id"] in index_of:
            col.problems[i].append(f"videos[{i}]: duplicate video id {videos[i]['id']}")
        else:
            index_of[videos[i]["id"]] = i

    kinds: list[int] = []
    strs: list[str] = []
    str_seg: list[int] = []
    ulists: list[list] = []
    u_seg: list[int] = []
    rings: list[list] = []
    ring_seg: list[int] = []
    anns: list[tuple[int, int, int, int, int]] = []
    ann_of_seg: list[int] = []
    seen_ann: set[int] = set()

    for j, a in enumerate(anns_in or []):
        vidx = index_of.get(a.get("video_id")) if isinstance(a, dict) else None
        if vidx is None:
            got = a.get("video_id") if isinstance(a, dict) else type(a).__name__
            col.orphans.append(f"annotations[{j}]: unknown video_id {got!r:.40}")
            continue
        v = videos[vidx]
        h, w, length = v["height"], v["width"], len(v["file_names"])
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
        segs = a.get("segmentations")
        if not isinstance(segs, list) or len(segs) != length:
            n = len(segs) if isinstance(segs, list) else type(segs).__name__
            problems.append(f"{where}: 'segmentations' has {n} entries, the video has {length}")
            continue
        start = len(kinds)
        ok = True
        for t, s in enumerate(segs):
            seg_id = len(kinds)
            if s is None or (isinstance(s, list) and not s):
                kinds.append(SEG_NULL)
            elif isinstance(s, dict):
                size, counts = s.get("size"), s.get("counts")
                if size != [h, w]:
                    problems.append(
                        f"{where}: segmentations[{t}].size {size!r:.40} differs "
                        f"from the video size [{h}, {w}]"
                    )
                    ok = False
                    break
                if isinstance(counts, str):
                    kinds.append(SEG_RLE)
                    strs.append(counts)
                    str_seg.append(seg_id)
                elif isinstance(counts, list):
                    kinds.append(SEG_URLE)
                    ulists.append(counts)
                    u_seg.append(seg_id)
                else:
                    problems.append(
                        f"{where}: segmentations[{t}].counts must be a string "
                        f"(compressed RLE) or a list (uncompressed RLE)"
                    )
                    ok = False
                    break
            elif isinstance(s, list):
                bad = [r for r in s if not isinstance(r, list) or len(r) < 6 or len(r) % 2]
                if bad:
                    problems.append(
                        f"{where}: segmentations[{t}] polygon rings must be lists of "
                        f">= 3 (x, y) points, got {bad[0]!r:.60}"
                    )
                    ok = False
                    break
                if not all(type(x) in (int, float) for r in s for x in r):
                    problems.append(
                        f"{where}: segmentations[{t}] polygon coordinates must all be numbers"
                    )
                    ok = False
                    break
                kinds.append(SEG_POLY)
                rings.extend(s)
                ring_seg.extend([seg_id] * len(s))
            else:
                problems.append(
                    f"{where}: segmentations[{t}] must be null, a polygon list or "
                    f"an RLE dict, got {type(s).__name__}"
                )
                ok = False
                break
        if not ok:  # drop this annotation's partial segments
            del kinds[start:]
            for lst, owner in ((strs, str_seg), (ulists, u_seg), (rings, ring_seg)):
                while owner and owner[-1] >= start:
                    owner.pop()
                    lst.pop()
            continue
        anns.append((aid, vidx, a["category_id"], int(iscrowd), start))
        ann_of_seg.extend([len(anns) - 1] * length)

    # ---- vectorised content checks ------------------------------------------------------
    n_seg = len(kinds)
    seg_kind = np.asarray(kinds, np.int8)
    seg_lo = np.zeros(n_seg, np.int64)
    seg_hi = np.zeros(n_seg, np.int64)
    ann_of_seg_a = np.asarray(ann_of_seg, np.int64)
    hw_of_ann = [videos[vidx]["height"] * videos[vidx]["width"] for _, vidx, *_ in anns]
    hw_of_seg = np.asarray(hw_of_ann, np.int64).reshape(-1)[ann_of_seg_a]

    def blame(seg_id: int, what: str) -> None:
        aid, vidx, _, _, s0 = anns[ann_of_seg_a[seg_id]]
        col.problems[vidx].append(
            f"annotation id {aid} (video id {videos[vidx]['id']}): segmentations"
            f"[{seg_id - s0}] {what}"
        )

    # compressed RLE strings: ASCII, then decode counts and compare sums with H*W
    try:
        rle_bytes = np.frombuffer("".join(strs).encode("ascii"), np.uint8)
        str_ok = np.ones(len(strs), bool)
    except UnicodeEncodeError:
        str_ok = np.asarray([s.isascii() for s in strs], bool)
        for i in np.flatnonzero(~str_ok):
            blame(str_seg[i], "counts holds non-ASCII characters (corrupt compressed RLE)")
        strs = [s if o else "" for s, o in zip(strs, str_ok, strict=True)]
        rle_bytes = np.frombuffer("".join(strs).encode("ascii"), np.uint8)
    str_ptr = np.zeros(len(strs) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, strs), np.int64, len(strs)), out=str_ptr[1:])
    if strs:
        sums, bad = rle_strings_check(rle_bytes, str_ptr)
        expect = hw_of_seg[np.asarray(str_seg)]
        for i in np.flatnonzero(str_ok & (bad | (sums != expect))):
            why = "is corrupt" if bad[i] else f"covers {sums[i]} pixels, not H*W = {expect[i]}"
            blame(str_seg[i], f"compressed RLE counts {why}")
        seg_lo[str_seg], seg_hi[str_seg] = str_ptr[:-1], str_ptr[1:]

    # uncompressed RLE: integers in [0, 2**32) whose sum is H*W, flattened to one uint32
    # array; the slow per-list path only runs to name a culprit.
    # (Per-item type checks would cost more than the JSON parse: like numpy, this accepts
    # numeric strings and truncates floats; the H*W sum check still applies.)
    u_len = np.fromiter(map(len, ulists), np.int64, len(ulists))
    u_ptr = np.zeros(len(ulists) + 1, np.int64)
    np.cumsum(u_len, out=u_ptr[1:])
    counts = _flatten_numbers(ulists, int(u_ptr[-1]), np.uint32)
    if counts is None:
        counts = np.zeros(int(u_ptr[-1]), np.uint32)
        for i, lst in enumerate(ulists):
            part = _flatten_numbers([lst], len(lst), np.float64)
            if part is None:
                blame(u_seg[i], "uncompressed RLE counts must all be numbers")
            elif not ((part >= 0) & (part < 2**32)).all():
                blame(u_seg[i], "uncompressed RLE counts must be integers in [0, 2**32)")
            else:
                counts[u_ptr[i] : u_ptr[i + 1]] = part
    if ulists:
        sums = segment_sums(counts, u_ptr)
        expect = hw_of_seg[np.asarray(u_seg)]
        for i in np.flatnonzero(sums != expect):
            blame(
                u_seg[i],
                f"uncompressed RLE counts sum to {sums[i]}, not H*W = {expect[i]} "
                "(RLE size differs from the video)",
            )
        # stored compressed, like the strings: ~1 byte a count instead of 4
        ubuf, ustr_ptr = counts_to_rle_strings(counts, u_ptr)
        del counts
        seg_kind[u_seg] = SEG_RLE
        seg_lo[u_seg], seg_hi[u_seg] = ustr_ptr[:-1] + rle_bytes.size, ustr_ptr[1:] + rle_bytes.size
        rle_bytes = np.concatenate([rle_bytes, ubuf])

    # polygons (numbers, checked above): finite; a polygon segment indexes a run of rings
    r_len = np.fromiter(map(len, rings), np.int64, len(rings))
    ring_ptr = np.zeros(len(rings) + 1, np.int64)
    np.cumsum(r_len, out=ring_ptr[1:])
    coords = np.fromiter(itertools.chain.from_iterable(rings), np.float64, int(ring_ptr[-1]))
    if rings:
        nonfinite = segment_sums(~np.isfinite(coords), ring_ptr) > 0
        for i in np.flatnonzero(nonfinite):
            blame(ring_seg[i], "polygon coordinates must be finite")
        coords = np.nan_to_num(coords, nan=0.0, posinf=0.0, neginf=0.0)
        rs = np.asarray(ring_seg, np.int64)
        first = np.flatnonzero(np.r_[True, rs[1:] != rs[:-1]])
        seg_lo[rs[first]] = first
        seg_hi[rs[first]] = np.r_[first[1:], len(rs)]

    if frames_root is not None:
        check_frame_files(frames_root, videos, col)

    return Parsed(
        categories=categories,
        videos=videos,
        anns=anns,
        seg_kind=seg_kind,
        seg_lo=seg_lo,
        seg_hi=seg_hi,
        rle_bytes=rle_bytes,
        ring_ptr=ring_ptr,
        coords=coords,
        problems={k: v for k, v in col.problems.items() if v},
        orphan_problems=col.orphans,
    )


def _flatten_numbers(lists: list[list], total: int, dtype) -> np.ndarray | None:
    """All numbers of ``lists`` as ``dtype`` ``[total]``; None if one is not a number or
    does not fit ``dtype`` (numpy truncates floats to integers)."""
    try:
        out = np.fromiter(itertools.chain.from_iterable(lists), dtype, total)
    except (TypeError, ValueError, OverflowError):
        return None
    return out


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
