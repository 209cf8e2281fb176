"""The one validator of YouTube-VIS segmentations, for annotation files and results alike.

An instance (a ground-truth annotation or a result) has one segmentation per frame: null,
a compressed RLE ``{size, counts: str}``, an uncompressed RLE ``{size, counts: [int]}`` or a
polygon (a list of flat ``[x0, y0, x1, y1, ...]`` rings). :class:`SegmentCollector` checks
the structure of each instance as it is added and gathers its segmentations into flat
buffers; :meth:`SegmentCollector.finish` then checks every content at once with numpy:

- compressed RLE: ASCII, well formed, run counts summing to exactly H*W. pycocotools
  decodes without bounds checks: counts covering fewer pixels make its ``iou`` loop forever,
  more write past its buffers or silently change scores;
- uncompressed RLE: integers in [0, 2**32) summing to H*W (then stored compressed);
- polygons: finite coordinates, each within one frame size of the frame
  (``-W <= x <= 2W``, ``-H <= y <= 2H``): pycocotools rasterises the whole outline, so a
  coordinate of 1e12 is an allocation no machine has.

Each problem comes back as ``(instance number, message)`` so that the training loader can
drop the video at fault and the evaluator can name the result. The pixel count of every
RLE is computed from its runs here, exact for any number of frames.
"""

from __future__ import annotations

import itertools
import numbers
from array import array
from dataclasses import dataclass

import numpy as np

from gmpvis.data.rle import (
    counts_to_rle_strings,
    foreground_sums,
    polygon_to_rle,
    rle_strings_stats,
    segment_sums,
)

SEG_NULL, SEG_RLE, SEG_URLE, SEG_POLY = 0, 1, 2, 3  # SEG_URLE only while collecting
_NUMBER = (int, float)
POLYGON_MARGIN = 1.0  # polygon coordinates may lie this many frame sizes outside the frame


@dataclass
class Segments:
    """Flat, validated segmentations of N instances (S segments in all).

    Segment ``s`` of kind SEG_RLE is the compressed string ``rle_bytes[lo[s]:hi[s]]``; of
    kind SEG_POLY the rings ``lo[s]:hi[s]``, ring ``r`` being ``coords[ring_ptr[r]:
    ring_ptr[r + 1]]``. Instance ``n`` owns segments ``inst_ptr[n]:inst_ptr[n + 1]`` (one per
    frame) of a ``height[n] x width[n]`` video.
    """

    kind: np.ndarray  # int8 [S]
    lo: np.ndarray  # int64 [S]
    hi: np.ndarray  # int64 [S]
    rle_bytes: np.ndarray  # uint8 [C]
    ring_ptr: np.ndarray  # int64 [R + 1]
    coords: np.ndarray  # float64 [P]
    area: np.ndarray  # int64 [S] pixels of each RLE; 0 where null, -1 for a polygon
    inst_ptr: np.ndarray  # int64 [N + 1]
    height: np.ndarray  # int64 [N]
    width: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.inst_ptr) - 1

    def rle(self, s: int) -> dict | None:
        """Segment ``s`` as a pycocotools RLE dict (bytes counts), None where null."""
        kind = self.kind[s]
        if kind == SEG_NULL:
            return None
        n = int(np.searchsorted(self.inst_ptr, s, side="right")) - 1
        h, w = int(self.height[n]), int(self.width[n])
        if kind == SEG_RLE:
            return {"size": [h, w], "counts": self.rle_bytes[self.lo[s] : self.hi[s]].tobytes()}
        p = self.ring_ptr
        rings = [self.coords[p[r] : p[r + 1]] for r in range(self.lo[s], self.hi[s])]
        return polygon_to_rle(rings, h, w)

    def instance_rles(self, n: int) -> list[dict | None]:
        """The per-frame RLE dicts of instance ``n`` (bytes counts; None where null)."""
        a, b = int(self.inst_ptr[n]), int(self.inst_ptr[n + 1])
        size = [int(self.height[n]), int(self.width[n])]
        buf = memoryview(self.rle_bytes)
        out: list[dict | None] = []
        for s, kind, lo, hi in zip(
            range(a, b), self.kind[a:b].tolist(), self.lo[a:b].tolist(), self.hi[a:b].tolist(),
            strict=True,
        ):  # fmt: skip
            if kind == SEG_NULL:
                out.append(None)
            elif kind == SEG_RLE:
                out.append({"size": list(size), "counts": buf[lo:hi].tobytes()})
            else:
                out.append(self.rle(s))
        return out

    def mean_areas(self) -> np.ndarray:
        """Per instance, the mean of its non-zero frame areas (0 if none): float64 ``[N]``,
        the size that decides small / medium / large in the official evaluation."""
        area = np.maximum(self.area, 0)
        total = segment_sums(area, self.inst_ptr)
        count = segment_sums(area > 0, self.inst_ptr)
        return np.divide(total, count, out=np.zeros(len(self)), where=count > 0)

    def rasterized(self) -> Segments:
        """The same segments with every polygon turned into a compressed RLE (and its area)."""
        polys = np.flatnonzero(self.kind == SEG_POLY)
        if polys.size == 0:
            return self
        extra = [self.rle(int(s))["counts"] for s in polys]
        lens = np.fromiter(map(len, extra), np.int64, len(extra))
        kind, lo, hi = self.kind.copy(), self.lo.copy(), self.hi.copy()
        kind[polys] = SEG_RLE
        lo[polys] = self.rle_bytes.size + np.concatenate(([0], np.cumsum(lens)[:-1]))
        hi[polys] = lo[polys] + lens
        buf = np.concatenate([self.rle_bytes, np.frombuffer(b"".join(extra), np.uint8)])
        ptr = np.concatenate(([0], np.cumsum(lens)))
        _, poly_area, _ = rle_strings_stats(buf[self.rle_bytes.size :], ptr)
        area = self.area.copy()
        area[polys] = poly_area
        empty = np.zeros(0, np.float64)
        return Segments(
            kind, lo, hi, buf, np.zeros(1, np.int64), empty, area,
            self.inst_ptr, self.height, self.width,
        )  # fmt: skip


def _size_ok(size, h: int, w: int) -> bool:
    """``size`` is ``[h, w]`` (a list or tuple of two integers, numpy ones included)."""
    if type(size) is list and len(size) == 2 and type(size[0]) is int and type(size[1]) is int:
        return size[0] == h and size[1] == w
    if not isinstance(size, list | tuple) or len(size) != 2:
        return False
    if not all(isinstance(x, int | np.integer) and not isinstance(x, bool) for x in size):
        return False
    return (int(size[0]), int(size[1])) == (h, w)


class SegmentCollector:
    """Gathers the segmentations of many instances; see the module docstring."""

    def __init__(self):
        self._kinds = array("b")
        self._strs = bytearray()
        self._str_ptr = array("q", [0])
        self._str_seg = array("q")
        self._ulists: list[list] = []
        self._u_seg = array("q")
        self._rings: list[list] = []
        self._ring_seg = array("q")
        self._pending: list[tuple[int, str]] = []  # (segment, message) found while adding
        self._inst_ptr = array("q", [0])
        self._height = array("q")
        self._width = array("q")

    def __len__(self) -> int:
        return len(self._height)

    @property
    def num_segments(self) -> int:
        """Segments added so far: the first segment of the next instance."""
        return len(self._kinds)

    def add(self, segs, height: int, width: int, length: int) -> str | None:
        """Add one instance (``segs``: one entry per frame of a ``length``-frame video).

        Returns None, or a message naming the entry at fault (nothing is added then).
        """
        if not isinstance(segs, list):
            return (
                f"'segmentations' must be a list (one entry per frame), got {type(segs).__name__}"
            )
        if len(segs) != length:
            return f"'segmentations' has {len(segs)} entries, the video has {length} frames"
        kinds = self._kinds
        mark = (len(kinds), len(self._strs), len(self._str_ptr), len(self._ulists),
                len(self._rings), len(self._pending))  # fmt: skip
        error = None
        for t, s in enumerate(segs):
            seg = len(kinds)
            if not s:  # null, [] or {}: absent in this frame
                kinds.append(SEG_NULL)
            elif type(s) is dict:
                size, counts = s.get("size"), s.get("counts")
                if not _size_ok(size, height, width):
                    error = (
                        f"segmentations[{t}].size {size!r:.40} differs from the video size "
                        f"[{height}, {width}]"
                    )
                    break
                if type(counts) is str or type(counts) is bytes:
                    if type(counts) is str:
                        try:
                            counts = counts.encode("ascii")
                        except UnicodeEncodeError:
                            counts = b""
                            self._pending.append(
                                (seg, "counts holds non-ASCII characters (corrupt compressed RLE)")
                            )
                    kinds.append(SEG_RLE)
                    self._strs += counts
                    self._str_ptr.append(len(self._strs))
                    self._str_seg.append(seg)
                elif type(counts) is list:
                    kinds.append(SEG_URLE)
                    self._ulists.append(counts)
                    self._u_seg.append(seg)
                else:
                    error = (
                        f"segmentations[{t}].counts must be a string (compressed RLE) or a "
                        "list (uncompressed RLE)"
                    )
                    break
            elif type(s) is list:
                bad = [r for r in s if type(r) is not list or len(r) < 6 or len(r) % 2]
                if bad:
                    error = (
                        f"segmentations[{t}] polygon rings must be lists of >= 3 (x, y) "
                        f"points, got {bad[0]!r:.60}"
                    )
                    break
                if not all(type(x) in _NUMBER for r in s for x in r) and not all(
                    isinstance(x, numbers.Real) and not isinstance(x, bool) for r in s for x in r
                ):  # the fast check, then numpy numbers of an in-memory dict
                    error = f"segmentations[{t}] polygon coordinates must all be numbers"
                    break
                kinds.append(SEG_POLY)
                self._rings.extend(s)
                self._ring_seg.extend([seg] * len(s))
            else:
                error = (
                    f"segmentations[{t}] must be null, a polygon list or an RLE dict, got "
                    f"{type(s).__name__}"
                )
                break
        if error is not None:  # drop this instance's partial segments
            n_seg, n_chars, n_str, n_u, n_ring, n_pending = mark
            del kinds[n_seg:], self._strs[n_chars:], self._str_ptr[n_str:]
            del self._str_seg[n_str - 1 :], self._ulists[n_u:], self._u_seg[n_u:]
            del self._rings[n_ring:], self._ring_seg[n_ring:], self._pending[n_pending:]
            return error
        self._inst_ptr.append(len(kinds))
        self._height.append(height)
        self._width.append(width)
        return None

    def finish(self) -> tuple[Segments, list[tuple[int, str]]]:
        """Check every content; returns the segments and ``[(instance, message)]`` sorted."""
        inst_ptr = np.frombuffer(self._inst_ptr, np.int64).copy()
        heights = np.frombuffer(self._height, np.int64).copy()
        widths = np.frombuffer(self._width, np.int64).copy()
        n_seg = int(inst_ptr[-1])
        kind = np.frombuffer(self._kinds, np.int8).copy()
        seg_inst = np.repeat(np.arange(len(heights)), np.diff(inst_ptr))
        hw = (heights * widths)[seg_inst]  # [S]
        lo, hi = np.zeros(n_seg, np.int64), np.zeros(n_seg, np.int64)
        area = np.zeros(n_seg, np.int64)
        found = list(self._pending)

        # compressed strings: well formed, counts summing to H*W
        buf = np.frombuffer(bytes(self._strs), np.uint8)
        self._strs = bytearray()
        str_ptr = np.frombuffer(self._str_ptr, np.int64).copy()
        str_seg = np.frombuffer(self._str_seg, np.int64).copy()
        if len(str_seg):
            sums, areas, bad = rle_strings_stats(buf, str_ptr)
            expect = hw[str_seg]
            flagged = np.zeros(n_seg, bool)
            flagged[[s for s, _ in self._pending]] = True
            for i in np.flatnonzero((bad | (sums != expect)) & ~flagged[str_seg]):
                why = "is corrupt" if bad[i] else f"covers {sums[i]} pixels, not H*W = {expect[i]}"
                found.append((int(str_seg[i]), f"compressed RLE counts {why}"))
            lo[str_seg], hi[str_seg], area[str_seg] = str_ptr[:-1], str_ptr[1:], areas

        # uncompressed lists: integers in [0, 2**32) summing to H*W, then stored compressed
        # (per-item type checks would cost more than the JSON parse: like numpy, this accepts
        # numeric strings and truncates floats; the H*W sum check still applies)
        ulists, u_seg = self._ulists, np.frombuffer(self._u_seg, np.int64).copy()
        self._ulists = []
        u_ptr = np.zeros(len(ulists) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, ulists), np.int64, len(ulists)), out=u_ptr[1:])
        counts = _flatten_numbers(ulists, int(u_ptr[-1]), np.uint32)
        if counts is None:  # the slow per-list path only runs to name a culprit
            counts = np.zeros(int(u_ptr[-1]), np.uint32)
            for i, lst in enumerate(ulists):
                part = _flatten_numbers([lst], len(lst), np.float64)
                if part is None:
                    found.append((int(u_seg[i]), "uncompressed RLE counts must all be numbers"))
                elif not ((part >= 0) & (part < 2**32)).all():
                    found.append(
                        (int(u_seg[i]), "uncompressed RLE counts must be integers in [0, 2**32)")
                    )
                else:
                    counts[u_ptr[i] : u_ptr[i + 1]] = part
        del ulists
        if len(u_seg):
            sums = segment_sums(counts, u_ptr)
            expect = hw[u_seg]
            for i in np.flatnonzero(sums != expect):
                found.append((
                    int(u_seg[i]),
                    f"uncompressed RLE counts sum to {sums[i]}, not H*W = {expect[i]} "
                    "(RLE size differs from the video)",
                ))  # fmt: skip
            area[u_seg] = foreground_sums(counts, u_ptr)
            ubuf, ustr_ptr = counts_to_rle_strings(counts, u_ptr)  # ~1 byte a count, not 4
            del counts
            kind[u_seg] = SEG_RLE
            lo[u_seg], hi[u_seg] = ustr_ptr[:-1] + buf.size, ustr_ptr[1:] + buf.size
            buf = np.concatenate([buf, ubuf])

        # polygons: finite and near the frame; a polygon segment indexes a run of rings
        rings, ring_seg = self._rings, np.frombuffer(self._ring_seg, np.int64).copy()
        self._rings = []
        r_len = np.fromiter(map(len, rings), np.int64, len(rings))
        ring_ptr = np.zeros(len(rings) + 1, np.int64)
        np.cumsum(r_len, out=ring_ptr[1:])
        coords = np.fromiter(itertools.chain.from_iterable(rings), np.float64, int(ring_ptr[-1]))
        del rings
        if len(ring_seg):
            found += _polygon_problems(coords, ring_ptr, ring_seg, seg_inst, heights, widths)
            coords = np.nan_to_num(coords, nan=0.0, posinf=0.0, neginf=0.0)
            first = np.flatnonzero(np.r_[True, ring_seg[1:] != ring_seg[:-1]])
            lo[ring_seg[first]] = first
            hi[ring_seg[first]] = np.r_[first[1:], len(ring_seg)]
            area[kind == SEG_POLY] = -1

        segments = Segments(kind, lo, hi, buf, ring_ptr, coords, area, inst_ptr, heights, widths)
        problems = sorted(
            (int(seg_inst[s]), int(s - inst_ptr[seg_inst[s]]), msg) for s, msg in found
        )
        return segments, [(n, f"segmentations[{t}] {msg}") for n, t, msg in problems]


def _polygon_problems(coords, ring_ptr, ring_seg, seg_inst, heights, widths) -> list:
    """``[(segment, message)]`` for rings with non-finite or far-off coordinates."""
    out = []
    nonfinite = segment_sums(~np.isfinite(coords), ring_ptr) > 0
    for i in np.flatnonzero(nonfinite):
        out.append((int(ring_seg[i]), "polygon coordinates must be finite"))
    inst = np.repeat(seg_inst[ring_seg], np.diff(ring_ptr))  # [P]
    is_y = (np.arange(coords.size) % 2).astype(bool)  # rings have even lengths: x, y, x, ...
    dim = np.where(is_y, heights[inst], widths[inst]).astype(np.float64)
    with np.errstate(invalid="ignore"):
        far = (coords < -POLYGON_MARGIN * dim) | (coords > (1 + POLYGON_MARGIN) * dim)
    far_ring = (segment_sums(far, ring_ptr) > 0) & ~nonfinite
    for i in np.flatnonzero(far_ring):
        r = ring_ptr[i] + int(np.flatnonzero(far[ring_ptr[i] : ring_ptr[i + 1]])[0])
        n = inst[r]
        out.append((
            int(ring_seg[i]),
            f"polygon coordinate {coords[r]:.6g} is too far outside the {heights[n]}x"
            f"{widths[n]} frame (x must lie in [-W, 2W], y in [-H, 2H])",
        ))  # fmt: skip
    return out


def _flatten_numbers(lists: list[list], total: int, dtype) -> np.ndarray | None:
    """All numbers of ``lists`` as ``dtype`` ``[total]``; None if one is not a number or
    does not fit ``dtype`` (numpy truncates floats to integers)."""
    try:
        return np.fromiter(itertools.chain.from_iterable(lists), dtype, total)
    except (TypeError, ValueError, OverflowError):
        return None
