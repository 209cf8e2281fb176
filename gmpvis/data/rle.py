"""Vectorised checks of COCO run-length encodings, and mask decoding with pycocotools.

A COCO compressed RLE is a string of characters '0'..'o': each run count is written as
5-bit groups, low group first (bit 0x20 = "another group follows", bit 0x10 of the last
group = sign), and from the 4th count on the value stored is the difference to the count
two places back (``cnts[m] = x[m] + cnts[m - 2]`` for ``m > 2``; pycocotools' maskApi.c).
pycocotools decodes such strings without bounds checks, so a corrupt string can write past
the mask buffer; :func:`rle_strings_to_counts` decodes *all* strings of a file at once with
numpy so that the loader can check every count sum equals ``height * width`` before a
single mask is decoded.
"""

from __future__ import annotations

import warnings

import numpy as np
import pycocotools.mask as mask_utils

MAX_TOKEN_CHARS = 7  # 7 groups x 5 bits = 35 bits: enough for any uint32 count


def rle_strings_to_counts(
    buf: np.ndarray, str_ptr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode many compressed RLE strings into run counts.

    Args:
        buf: uint8 ``[C]``, all strings concatenated (ASCII bytes).
        str_ptr: int64 ``[n + 1]``, string ``i`` is ``buf[str_ptr[i]:str_ptr[i + 1]]``.

    Returns:
        counts: int64 ``[M]`` run counts of all strings, concatenated.
        cnt_ptr: int64 ``[n + 1]``, the counts of string ``i`` are
            ``counts[cnt_ptr[i]:cnt_ptr[i + 1]]``.
        bad: bool ``[n]``, True where a string is malformed (a character outside '0'..'o',
            an unterminated or over-long group, or a negative / >= 2**32 count).
    """
    n = len(str_ptr) - 1
    bad = np.zeros(n, dtype=bool)
    if buf.size == 0:
        return np.zeros(0, np.int64), np.zeros(n + 1, np.int64), bad
    str_len = np.diff(str_ptr)
    str_of_char = np.repeat(np.arange(n), str_len)
    c = buf.astype(np.int64) - 48
    out_of_range = (c < 0) | (c > 63)
    bad[str_of_char[out_of_range]] = True
    c = np.clip(c, 0, 63)
    end = (c & 0x20) == 0
    # a group that continues past the end of its string is malformed; end it there so that
    # tokens never straddle two strings
    last = (str_ptr[1:] - 1)[str_len > 0]
    bad[str_of_char[last[~end[last]]]] = True
    end[last] = True

    tok_end = np.flatnonzero(end)
    tok_start = np.concatenate(([0], tok_end[:-1] + 1))
    tok_len = tok_end - tok_start + 1
    too_long = tok_len > MAX_TOKEN_CHARS
    bad[str_of_char[tok_end[too_long]]] = True
    tok_of_char = np.cumsum(end) - end
    k = np.arange(c.size) - tok_start[tok_of_char]
    k = np.minimum(k, MAX_TOKEN_CHARS)
    x = np.add.reduceat((c & 0x1F) << (5 * k), tok_start)
    # sign extension: x |= -1 << 5k equals x - 2**(5k) because x < 2**(5k)
    sign = (c[tok_end] & 0x10) != 0
    x = np.where(sign, x - (np.int64(1) << (5 * np.minimum(tok_len, MAX_TOKEN_CHARS))), x)

    str_of_tok = str_of_char[tok_end]
    cnt_ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(str_of_tok, minlength=n), out=cnt_ptr[1:])
    m = np.arange(x.size) - cnt_ptr[str_of_tok]
    counts = x.copy()
    # cnts[m] = x[m] + cnts[m-2] for m > 2: two interleaved running sums per string,
    # the odd one starting at m = 1 and the even one at m = 2 (m = 0 stands alone)
    for parity in (0, 1):
        sel = (m >= 1) & (m % 2 == parity)
        cs = np.cumsum(np.where(sel, x, 0))
        before = np.concatenate(([0], cs))[cnt_ptr[:-1]]  # running sum before each string
        counts[sel] = (cs - before[str_of_tok])[sel]
    wrong = (counts < 0) | (counts >= 2**32)
    bad[str_of_tok[wrong]] = True
    return counts, cnt_ptr, bad


def segment_sums(values: np.ndarray, ptr: np.ndarray) -> np.ndarray:
    """Sum of ``values[ptr[i]:ptr[i + 1]]`` for every i (empty segments give 0): ``[n]``."""
    cs = np.concatenate(([0], np.cumsum(values, dtype=np.int64)))
    return cs[ptr[1:]] - cs[ptr[:-1]]


def decode_rles(rles: list[dict], height: int, width: int) -> np.ndarray:
    """pycocotools decode of compressed RLE dicts -> bool ``[n, H, W]``."""
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    with warnings.catch_warnings():  # pycocotools' __array__ predates numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        m = mask_utils.decode(rles)  # [H, W, n] uint8, Fortran order
    return np.ascontiguousarray(np.moveaxis(m, -1, 0)).astype(bool)


def uncompressed_to_rle(counts: np.ndarray, height: int, width: int) -> dict:
    """Uncompressed run counts (checked: sum = H*W) -> compressed RLE dict (pycocotools)."""
    return mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)


def polygon_to_rle(rings: list[np.ndarray], height: int, width: int) -> dict:
    """Polygon rings (flat ``[x0, y0, x1, y1, ...]``, >= 3 points each) -> one RLE (union)."""
    return mask_utils.merge(mask_utils.frPyObjects(list(rings), height, width))
