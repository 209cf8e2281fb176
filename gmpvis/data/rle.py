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
# signed value of a one-character token, by (character - 48) & 63: 5 bits, 0x10 the sign
_ONE_CHAR_VALUE = ((np.arange(64) & 0x1F) - ((np.arange(64) & 0x10) << 1)).astype(np.int32)


def rle_strings_to_counts(
    buf: np.ndarray, str_ptr: np.ndarray, *, with_parity: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode many compressed RLE strings into run counts.

    Args:
        buf: uint8 ``[C]``, all strings concatenated (ASCII bytes).
        str_ptr: int64 ``[n + 1]``, string ``i`` is ``buf[str_ptr[i]:str_ptr[i + 1]]``.

    Returns:
        counts: int32 ``[M]`` run counts of all strings, concatenated.
        cnt_ptr: int64 ``[n + 1]``, the counts of string ``i`` are
            ``counts[cnt_ptr[i]:cnt_ptr[i + 1]]``.
        bad: bool ``[n]``, True where a string is malformed (a character outside '0'..'o',
            an unterminated or over-long group, or a count >= 2**31 once wrapped to 32 bits
            the way pycocotools does).
        (``with_parity`` only) odd: bool ``[M]``, the count is at an odd position of its
            string (a foreground run).
    """
    n = len(str_ptr) - 1
    bad = np.zeros(n, dtype=bool)
    if buf.size == 0:
        empty = (np.zeros(0, np.int32), np.zeros(n + 1, np.int64), bad)
        return (*empty, np.zeros(0, bool)) if with_parity else empty

    def blame(char_pos: np.ndarray) -> None:
        bad[np.searchsorted(str_ptr, char_pos, side="right") - 1] = True

    c = buf - np.uint8(48)  # uint8: characters below '0' wrap around to > 63
    blame(np.flatnonzero(c > 63))
    end = (c & 0x20) == 0
    # a group that continues past the end of its string is malformed; end it there so that
    # tokens never straddle two strings
    nonempty = np.diff(str_ptr) > 0
    last = (str_ptr[1:] - 1)[nonempty]
    blame(last[~end[last]])
    end[last] = True

    tok_end = np.flatnonzero(end)
    tok_start = np.concatenate(([0], tok_end[:-1] + 1))
    tok_len = tok_end - tok_start + 1
    blame(tok_end[tok_len > MAX_TOKEN_CHARS])
    # value of each token: 5-bit groups, low first, the last group's bit 0x10 the sign.
    # Most tokens are one character: a table gives its signed value; longer ones below.
    x = _ONE_CHAR_VALUE[c[tok_start] & 0x3F]
    idx = np.flatnonzero(tok_len > 1)
    if idx.size:
        starts, lens = tok_start[idx], tok_len[idx]
        v = (c[starts] & 0x1F).astype(np.int64)
        sub = np.arange(idx.size)
        for j in range(1, MAX_TOKEN_CHARS):
            v[sub] |= (c[starts[sub] + j] & 0x1F).astype(np.int64) << (5 * j)
            sub = sub[lens[sub] > j + 1]
        # sign extension: x |= -1 << 5k equals x - 2**(5k) because x < 2**(5k)
        sign = ((c[tok_end[idx]] >> 4) & 1).astype(np.int64)
        v -= sign << (5 * np.minimum(lens, MAX_TOKEN_CHARS))
        # pycocotools keeps counts as 32-bit unsigned ints; int32 wrap-around arithmetic
        # gives the same bits, so "0 <= count" below checks what pycocotools would decode
        x[idx] = v.astype(np.int32)

    # tokens of string i: cnt_ptr[i]:cnt_ptr[i+1] (token ends before the string start)
    cnt_ptr = np.searchsorted(tok_end, str_ptr, side="left").astype(np.int64)
    first = np.repeat(cnt_ptr[:-1], np.diff(cnt_ptr))  # global index of the string's token 0
    # cnts[m] = x[m] + cnts[m-2] for m > 2: two interleaved running sums per string, the odd
    # one from m = 1 and the even one from m = 2. With S[g] the running sum of x over the
    # global indices of g's parity, cnts[g] = S[g] - S[r], r = the last index <= first(g) of
    # g's parity (first itself for even local m, m = 0 fixed below; first - 1 for odd m).
    n_tok = x.size
    pairs = np.zeros(2 * ((n_tok + 1) // 2), np.int32)
    pairs[:n_tok] = x
    S = np.cumsum(pairs.reshape(-1, 2), axis=0, dtype=np.int32).reshape(-1)[:n_tok]
    odd = ((np.arange(n_tok) - first) & 1).astype(bool)  # local index parity
    ref = first - odd
    counts = S - np.where(ref >= 0, S[np.maximum(ref, 0)], 0).astype(np.int32)
    m0 = cnt_ptr[:-1][nonempty]
    counts[m0] = x[m0]
    wrong = np.flatnonzero(counts < 0)
    bad[np.searchsorted(cnt_ptr, wrong, side="right") - 1] = True
    return (counts, cnt_ptr, bad, odd) if with_parity else (counts, cnt_ptr, bad)


def segment_sums(values: np.ndarray, ptr: np.ndarray) -> np.ndarray:
    """Sum of ``values[ptr[i]:ptr[i + 1]]`` for every i (empty ones give 0): int64 ``[n]``.

    ``ptr[-1]`` must be ``len(values)`` (contiguous segments).
    """
    n = len(ptr) - 1
    out = np.zeros(n, np.int64)
    nonempty = ptr[1:] > ptr[:-1]
    if nonempty.any():  # reduceat sums up to the next start; empty segments stay 0
        out[nonempty] = np.add.reduceat(values, ptr[:-1][nonempty], dtype=np.int64)
    return out


def decode_rles(rles: list[dict], height: int, width: int) -> np.ndarray:
    """pycocotools decode of compressed RLE dicts -> bool ``[n, H, W]``."""
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    with warnings.catch_warnings():  # pycocotools' __array__ predates numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        m = mask_utils.decode(rles)  # [H, W, n] uint8, Fortran order
    return np.ascontiguousarray(np.moveaxis(m, -1, 0)).astype(bool)


def polygon_to_rle(rings: list[np.ndarray], height: int, width: int) -> dict:
    """Polygon rings (flat ``[x0, y0, x1, y1, ...]``, >= 3 points each) -> one RLE (union)."""
    return mask_utils.merge(mask_utils.frPyObjects(list(rings), height, width))


def foreground_sums(counts: np.ndarray, ptr: np.ndarray, chunk_counts: int = 1 << 18) -> np.ndarray:
    """Pixels inside each mask: the sum of its odd-position runs (runs start with
    background), int64 ``[n]`` for the RLEs ``counts[ptr[i]:ptr[i + 1]]``.

    Works on chunks of whole RLEs of about ``chunk_counts`` runs (bounded temporaries).
    """
    n = len(ptr) - 1
    out = np.zeros(n, np.int64)
    i = 0
    while i < n:
        j = int(np.searchsorted(ptr, ptr[i] + chunk_counts, side="right")) - 1
        j = min(max(j, i + 1), n)
        lo, hi = int(ptr[i]), int(ptr[j])
        p = ptr[i : j + 1] - lo
        local = np.arange(hi - lo) - np.repeat(p[:-1], np.diff(p))
        out[i:j] = segment_sums(np.where(local % 2 == 1, counts[lo:hi], 0), p)
        i = j
    return out


def rle_strings_stats(
    buf: np.ndarray, str_ptr: np.ndarray, chunk_chars: int = 1 << 18
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-string ``(sum of counts, foreground pixels, bad)`` of many compressed RLEs:
    int64 ``[n]``, int64 ``[n]``, bool ``[n]``.

    Same decoding as :func:`rle_strings_to_counts`, run on chunks of about ``chunk_chars``
    characters so that the temporaries (a few int64 per character) stay cache-sized and a
    file of any size needs bounded memory. The pixel count is exact for any number of masks
    (pycocotools' ``area`` overflows from 256 masks on).
    """
    n = len(str_ptr) - 1
    sums = np.zeros(n, np.int64)
    areas = np.zeros(n, np.int64)
    bad = np.zeros(n, dtype=bool)
    i = 0
    while i < n:
        j = int(np.searchsorted(str_ptr, str_ptr[i] + chunk_chars, side="right")) - 1
        j = min(max(j, i + 1), n)  # at least one string per chunk
        lo, hi = int(str_ptr[i]), int(str_ptr[j])
        counts, cnt_ptr, chunk_bad, odd = rle_strings_to_counts(
            buf[lo:hi], str_ptr[i : j + 1] - lo, with_parity=True
        )
        sums[i:j] = segment_sums(counts, cnt_ptr)
        areas[i:j] = segment_sums(np.where(odd, counts, 0), cnt_ptr)
        bad[i:j] = chunk_bad
        i = j
    return sums, areas, bad


def rle_strings_check(
    buf: np.ndarray, str_ptr: np.ndarray, chunk_chars: int = 1 << 18
) -> tuple[np.ndarray, np.ndarray]:
    """Per-string ``(sum of counts int64 [n], bad bool [n])``: :func:`rle_strings_stats`
    without the pixel counts."""
    sums, _, bad = rle_strings_stats(buf, str_ptr, chunk_chars)
    return sums, bad


def counts_to_rle_strings(
    counts: np.ndarray, ptr: np.ndarray, chunk_counts: int = 1 << 18
) -> tuple[np.ndarray, np.ndarray]:
    """Encode many uncompressed RLEs (checked: counts in [0, 2**31)) as COCO strings.

    The inverse of :func:`rle_strings_to_counts`, byte-identical to pycocotools: the value
    written for ``m > 2`` is ``cnts[m] - cnts[m - 2]``, in 5-bit groups, low first, as few as
    hold it in two's complement (bit 0x10 of the last group is the sign), 0x20 = "more".

    Args:
        counts: ``[M]`` run counts of all RLEs, concatenated.
        ptr: int64 ``[n + 1]``, RLE ``i`` is ``counts[ptr[i]:ptr[i + 1]]``.

    Returns:
        buf: uint8 ``[C]`` all strings concatenated; str_ptr: int64 ``[n + 1]``.
    """
    n = len(ptr) - 1
    parts, lengths = [], np.zeros(n, np.int64)
    i = 0
    while i < n:  # chunks of whole RLEs keep the int64 temporaries small
        j = int(np.searchsorted(ptr, ptr[i] + chunk_counts, side="right")) - 1
        j = min(max(j, i + 1), n)
        lo, hi = int(ptr[i]), int(ptr[j])
        c = counts[lo:hi].astype(np.int64)
        m = np.arange(hi - lo) - np.repeat(ptr[i:j] - lo, np.diff(ptr[i : j + 1]))
        x = c.copy()
        x[2:] -= np.where(m[2:] > 2, c[:-2], 0)
        # groups needed: x must fit 5k-bit two's complement, -2**(5k-1) <= x < 2**(5k-1)
        k = np.ones(x.size, np.int64)
        for g in range(1, MAX_TOKEN_CHARS):
            k += (x < -(1 << (5 * g - 1))) | (x >= (1 << (5 * g - 1)))
        start = np.concatenate(([0], np.cumsum(k)[:-1]))
        out = np.empty(int(k.sum()), np.uint8)
        idx = np.arange(x.size)
        for g in range(MAX_TOKEN_CHARS):
            idx = idx[k[idx] > g]
            if idx.size == 0:
                break
            val = (x[idx] >> (5 * g)) & 0x1F
            val |= np.where(k[idx] > g + 1, 0x20, 0)
            out[start[idx] + g] = val + 48
        parts.append(out)
        lengths[i:j] = segment_sums(k, ptr[i : j + 1] - lo)
        i = j
    str_ptr = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=str_ptr[1:])
    buf = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return buf, str_ptr
