"""YouTube-VIS video AP, computed as the official YouTube-VIS evaluation (ytvoseval) computes it.

Semantics (facts of the official cocoapi fork, re-implemented and vectorised here):
- IoU of two instances = sum_t |d_t & g_t| / sum_t |d_t | g_t|; a frame where one side is null
  adds its area to the union; 0 when the union is empty. Crowd GTs use the same IoU.
- Detections are grouped per (video, category), sorted by score (stable) and cut to 100.
- Greedy matching per (video, category, area range, IoU threshold): each detection in score
  order takes the unmatched GT with the highest IoU >= t (ties: the later GT), non-ignored
  GTs first; a GT is ignored when crowd or its mean area is outside the range; crowd GTs can
  be matched many times. An unmatched detection whose mean area is outside the range is
  ignored.
- Area of an instance = mean of its non-zero per-frame areas; ranges all [0, 1e10],
  small [0, 128^2], medium [128^2, 256^2], large [256^2, 1e10] (bounds inclusive).
- Precision at 101 recall points from the right-to-left max envelope; -1 where a category
  has no non-ignored GT; AP/AR = mean over the entries that are not -1.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from gmpvis.eval.results import GroundTruth, Instance, check_results, load_gt

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 128.0**2),
    "medium": (128.0**2, 256.0**2),
    "large": (256.0**2, 1e5**2),
}
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")
# Elements of one [P, A, T, G] matching block; bounds memory whatever the group sizes.
_CHUNK_ELEMS = 1 << 21


def pair_intersections(d_rles: list, g_rles: list, d_areas: np.ndarray) -> np.ndarray:
    """Pixels shared by every pair of masks of one frame: float64 ``[len(d), len(g)]``.

    pycocotools' crowd IoU is |d & g| / |d|; times |d| it gives exact integer counts.
    """
    frac = np.asarray(mask_utils.iou(d_rles, g_rles, [1] * len(g_rles)))
    return np.rint(frac.reshape(len(d_rles), len(g_rles)) * d_areas[:, None])


def video_iou(dts: list[Instance], gts: list[Instance], length: int) -> np.ndarray:
    """Spatio-temporal mask IoU ``[D, G]`` of the instances of one video.

    Intersections are exact integers (:func:`pair_intersections`); unions are
    sum|d| + sum|g| - sum|d & g|.
    """
    inter = np.zeros((len(dts), len(gts)), dtype=np.float64)
    if not dts or not gts:
        return inter
    d_segs, g_segs = [d.segs for d in dts], [g.segs for g in gts]
    d_areas = np.stack([d.areas for d in dts])  # [D, T]
    for t in range(length):
        di = [i for i, s in enumerate(d_segs) if s[t] is not None]
        gi = [j for j, s in enumerate(g_segs) if s[t] is not None]
        if not di or not gi:
            continue
        inter[np.ix_(di, gi)] += pair_intersections(
            [d_segs[i][t] for i in di], [g_segs[j][t] for j in gi], d_areas[di, t]
        )
    union = d_areas.sum(1)[:, None] + np.array([g.areas.sum() for g in gts])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _last_argmax(x: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis (the official loop keeps later ties)."""
    return x.shape[-1] - 1 - np.argmax(x[..., ::-1], axis=-1)


def match_groups(ious, dt_valid, gt_ignore, gt_crowd, thrs=IOU_THRS):
    """Greedy matching of many (video, category) groups at once.

    ious ``[P, D, G]`` (detections in score order, padding -1), dt_valid ``[P, D]``,
    gt_ignore ``[P, A, G]`` (crowd or outside area range), gt_crowd ``[P, G]``.
    Returns (matched, on_ignored), both bool ``[P, A, T, D]``.
    """
    P, D, G = ious.shape
    A, T = gt_ignore.shape[1], len(thrs)
    matched = np.zeros((P, A, T, D), dtype=bool)
    on_ign = np.zeros((P, A, T, D), dtype=bool)
    if G == 0 or D == 0:
        return matched, on_ign
    thr = np.minimum(thrs, 1 - 1e-10)[None, None, :, None]  # as the official code clamps it
    ign = gt_ignore[:, :, None, :]
    avail = np.ones((P, A, T, G), dtype=bool)
    p_idx, a_idx, t_idx = np.indices((P, A, T), sparse=True)
    for d in range(D):
        iou_d = ious[:, d, None, None, :]  # [P, 1, 1, G]
        elig = avail & (iou_d >= thr) & dt_valid[:, d, None, None, None]
        reg, ig = elig & ~ign, elig & ign
        has_reg, has_ig = reg.any(-1), ig.any(-1)
        best = np.where(
            has_reg,
            _last_argmax(np.where(reg, iou_d, -1.0)),
            _last_argmax(np.where(ig, iou_d, -1.0)),
        )  # [P, A, T]
        hit = has_reg | has_ig
        matched[..., d] = hit
        on_ign[..., d] = hit & ~has_reg
        # A matched GT leaves the pool unless it is a crowd region.
        take = hit & ~gt_crowd[p_idx, best]
        avail[p_idx, a_idx, t_idx, best] &= ~take
    return matched, on_ign


def _out_of_range(area: np.ndarray) -> np.ndarray:
    """``[A, N]`` True where an area is outside each range (inclusive bounds)."""
    lo = np.array([r[0] for r in AREA_RANGES.values()])[:, None]
    hi = np.array([r[1] for r in AREA_RANGES.values()])[:, None]
    return (area[None, :] < lo) | (area[None, :] > hi)


_FORK_JOBS = None  # (dts, gts, length) per group, set only while a worker pool runs


def _fork_job(i: int) -> np.ndarray:
    return video_iou(*_FORK_JOBS[i])


class YTVISEval:
    """``YTVISEval(gt, results).run()`` -> metrics dict (see :func:`evaluate`).

    ``gt``: a path, dict or :class:`GroundTruth`; ``results``: a path, a list of result
    dicts, or the instances :func:`check_results` made of them.

    ``workers > 1`` computes the IoU stage (pycocotools RLE merges, the dominant cost) in that
    many forked processes; the result is identical.
    """

    def __init__(
        self,
        gt: str | Path | dict | GroundTruth,
        results,
        *,
        max_dets=MAX_DETS,
        workers: int = 1,
    ):
        tic = time.perf_counter()
        self.gt = load_gt(gt)
        checked = isinstance(results, list) and results and isinstance(results[0], Instance)
        self.dts = results if checked else check_results(results, self.gt)
        self.timings = {"load_s": time.perf_counter() - tic}  # seconds per stage
        self.max_dets = tuple(sorted(max_dets))
        self.workers = int(workers)
        self.cat_ids = sorted(self.gt.categories)

    # ---- per-video IoU and matching -------------------------------------------------------
    def _groups(self):
        """(video, category) groups in the official order: videos ascending, dts by score."""
        gts, dts = defaultdict(list), defaultdict(list)
        for g in self.gt.annotations:
            gts[g.video_id, g.category_id].append(g)
        for d in self.dts:
            dts[d.video_id, d.category_id].append(d)
        groups = []
        for key in sorted(set(gts) | set(dts)):
            dl = dts.get(key, [])
            order = np.argsort([-d.score for d in dl], kind="mergesort")
            groups.append((key, [dl[i] for i in order[: self.max_dets[-1]]], gts.get(key, [])))
        return groups

    def evaluate(self) -> None:
        """IoU per (video, category) group, then batched greedy matching.

        Fills ``dt_matched`` / ``dt_ignored`` bool ``[A, T, N]`` over the N kept detections
        (ordered by video, category, score rank), ``dt_score``, ``dt_cat``, ``dt_rank`` ``[N]``
        and ``npig`` ``[K, A]``, the number of non-ignored GTs.
        """
        tic = time.perf_counter()
        groups = self._groups()
        # Only same-category pairs are ever matched, so IoU is computed per group.
        ious = self._group_ious(groups)
        self.timings["iou_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        A, T = len(AREA_RANGES), len(IOU_THRS)
        n_dt = sum(len(g[1]) for g in groups)
        self.dt_matched = np.zeros((A, T, n_dt), dtype=bool)
        self.dt_ignored = np.zeros((A, T, n_dt), dtype=bool)
        starts = np.cumsum([0] + [len(g[1]) for g in groups])
        # Pad groups of similar size together: sort by (G, D), cut into memory-bounded chunks.
        order = sorted(range(len(groups)), key=lambda i: (len(groups[i][2]), len(groups[i][1])))
        chunk, d_max = [], 0
        for gi in order:
            d_new = max(d_max, len(groups[gi][1]))
            size = (len(chunk) + 1) * A * T * (len(groups[gi][2]) + 1) * (d_new + 1)
            if chunk and size > _CHUNK_ELEMS:
                self._match_chunk(chunk, groups, ious, starts)
                chunk, d_new = [], len(groups[gi][1])
            chunk.append(gi)
            d_max = d_new
        if chunk:
            self._match_chunk(chunk, groups, ious, starts)

        dt_area = np.array([d.avg_area for _, dl, _ in groups for d in dl])
        out = _out_of_range(dt_area)[:, None, :]  # [A, 1, N]
        self.dt_ignored |= ~self.dt_matched & out
        self.dt_score = np.array([d.score for _, dl, _ in groups for d in dl])
        self.dt_cat = np.array([k[1] for k, dl, _ in groups for _ in dl], dtype=np.int64)
        self.dt_rank = np.concatenate([np.arange(len(dl)) for _, dl, _ in groups] + [[]]).astype(
            np.int64
        )
        gt_all = self.gt.annotations
        keep = np.array([not g.iscrowd for g in gt_all], dtype=bool)
        in_range = ~_out_of_range(np.array([g.avg_area for g in gt_all]))  # [A, Ngt]
        gt_cat = np.array([g.category_id for g in gt_all], dtype=np.int64)
        # Non-ignored GT count per (category, area): the recall denominator.
        self.npig = np.array(
            [[np.sum(keep & in_range[a] & (gt_cat == c)) for a in range(A)] for c in self.cat_ids],
            dtype=np.int64,
        ).reshape(len(self.cat_ids), A)
        self.timings["match_s"] = time.perf_counter() - tic

    def _group_ious(self, groups) -> list[np.ndarray]:
        """IoU ``[D, G]`` of every group; in ``workers`` forked processes when asked."""
        jobs = [(dl, gl, self.gt.videos[key[0]].length) for key, dl, gl in groups]
        todo = [i for i, (dl, gl, _) in enumerate(jobs) if dl and gl]
        ious = [np.zeros((len(dl), len(gl))) for dl, gl, _ in jobs]
        if self.workers > 1 and len(todo) > 1 and "fork" in mp.get_all_start_methods():
            global _FORK_JOBS
            _FORK_JOBS = jobs  # children inherit it through fork: nothing big is pickled
            try:
                with mp.get_context("fork").Pool(self.workers) as pool:
                    chunk = max(1, len(todo) // (8 * self.workers))
                    for i, iou in zip(todo, pool.imap(_fork_job, todo, chunk), strict=True):
                        ious[i] = iou
            finally:
                _FORK_JOBS = None
        else:
            for i in todo:
                ious[i] = video_iou(*jobs[i])
        return ious

    def _match_chunk(self, chunk, groups, ious, starts) -> None:
        """Pad the groups of ``chunk`` to one ``[P, D, G]`` block and match them together."""
        P = len(chunk)
        D = max(len(groups[gi][1]) for gi in chunk)
        G = max(len(groups[gi][2]) for gi in chunk)
        A = len(AREA_RANGES)
        iou = np.full((P, D, G), -1.0)
        dt_valid = np.zeros((P, D), dtype=bool)
        gt_area = np.zeros((P, G))
        gt_crowd = np.zeros((P, G), dtype=bool)
        gt_pad = np.ones((P, G), dtype=bool)
        for p, gi in enumerate(chunk):
            _, dl, gl = groups[gi]
            iou[p, : len(dl), : len(gl)] = ious[gi]
            dt_valid[p, : len(dl)] = True
            gt_area[p, : len(gl)] = [g.avg_area for g in gl]
            gt_crowd[p, : len(gl)] = [g.iscrowd for g in gl]
            gt_pad[p, : len(gl)] = False
        out = _out_of_range(gt_area.ravel()).reshape(A, P, G).transpose(1, 0, 2)  # [P, A, G]
        gt_ignore = gt_crowd[:, None, :] | out | gt_pad[:, None, :]
        matched, on_ign = match_groups(iou, dt_valid, gt_ignore, gt_crowd)
        for p, gi in enumerate(chunk):
            n = len(groups[gi][1])
            s = starts[gi]
            self.dt_matched[:, :, s : s + n] = matched[p, :, :, :n]
            self.dt_ignored[:, :, s : s + n] = on_ign[p, :, :, :n]

    # ---- accumulation ---------------------------------------------------------------------
    def accumulate(self) -> None:
        """precision ``[T, R, K, A, M]`` and recall ``[T, K, A, M]``; -1 where undefined."""
        tic = time.perf_counter()
        T, R, K = len(IOU_THRS), len(REC_THRS), len(self.cat_ids)
        A, M = len(AREA_RANGES), len(self.max_dets)
        self.precision = -np.ones((T, R, K, A, M))
        self.recall = -np.ones((T, K, A, M))
        for k, cid in enumerate(self.cat_ids):
            idx = np.flatnonzero(self.dt_cat == cid)  # videos ascending, then score rank
            idx = idx[np.argsort(-self.dt_score[idx], kind="mergesort")]
            for a in range(A):
                npig = self.npig[k, a]
                if npig == 0:
                    continue
                for m, max_det in enumerate(self.max_dets):
                    sel = idx[self.dt_rank[idx] < max_det]
                    tm, ti = self.dt_matched[a][:, sel], self.dt_ignored[a][:, sel]  # [T, N]
                    tp = np.cumsum(tm & ~ti, axis=1).astype(np.float64)
                    fp = np.cumsum(~tm & ~ti, axis=1).astype(np.float64)
                    nd = tp.shape[1]
                    if nd == 0:
                        self.recall[:, k, a, m] = 0.0
                        self.precision[:, :, k, a, m] = 0.0
                        continue
                    rc = tp / npig
                    pr = tp / (fp + tp + np.spacing(1))
                    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # envelope
                    self.recall[:, k, a, m] = rc[:, -1]
                    for t in range(T):
                        inds = np.searchsorted(rc[t], REC_THRS, side="left")
                        ok = inds < nd
                        self.precision[t, :, k, a, m] = np.where(
                            ok, pr[t, np.minimum(inds, nd - 1)], 0
                        )
        self.timings["accumulate_s"] = time.perf_counter() - tic

    # ---- summary --------------------------------------------------------------------------
    def summarize(self) -> dict:
        def mean(x):
            v = x[x > -1]
            return float(v.mean()) if v.size else -1.0

        areas = list(AREA_RANGES)
        m100 = self.max_dets.index(100) if 100 in self.max_dets else len(self.max_dets) - 1
        t50 = int(np.argmin(np.abs(IOU_THRS - 0.5)))
        t75 = int(np.argmin(np.abs(IOU_THRS - 0.75)))
        P, Rc = self.precision, self.recall
        out = {
            "AP": mean(P[:, :, :, 0, m100]),
            "AP50": mean(P[t50, :, :, 0, m100]),
            "AP75": mean(P[t75, :, :, 0, m100]),
        }
        for name, key in (("small", "APs"), ("medium", "APm"), ("large", "APl")):
            out[key] = mean(P[:, :, :, areas.index(name), m100])
        for m, max_det in enumerate(self.max_dets):
            out[f"AR{max_det}"] = mean(Rc[:, :, 0, m])
        for name, key in (("small", "ARs"), ("medium", "ARm"), ("large", "ARl")):
            out[key] = mean(Rc[:, :, areas.index(name), m100])
        names = [self.gt.categories[c] for c in self.cat_ids]
        dup = {n for n in names if names.count(n) > 1}
        out["per_category"] = {
            (f"{n} ({c})" if n in dup else n): mean(P[:, :, k, 0, m100])
            for k, (c, n) in enumerate(zip(self.cat_ids, names, strict=True))
        }
        return out

    def run(self) -> dict:
        self.evaluate()
        self.accumulate()
        self.stats = self.summarize()
        return self.stats


def evaluate(gt, results, *, max_dets=MAX_DETS, workers: int = 1) -> dict:
    """Video AP of ``results`` (path to .json/.zip or list) against ``gt`` (path or dict).

    Returns AP, AP50, AP75, APs, APm, APl, AR1, AR10 (also AR100, ARs, ARm, ARl) in [0, 1],
    -1 where undefined (no GT in that range), and ``per_category`` {name: AP}.
    """
    return YTVISEval(gt, results, max_dets=max_dets, workers=workers).run()


def format_table(metrics: dict) -> str:
    """Fixed-width table of the summary metrics (video AP; the tracking metrics and ID switches
    when present), then per-category AP; values x100, n/a = -1."""

    def fmt(v: float) -> str:
        return "   n/a" if v < 0 else f"{100 * v:6.2f}"

    keys = [k for k in (*SUMMARY_KEYS, "AR100", "ARs", "ARm", "ARl") if k in metrics]
    lines = ["YouTube-VIS video AP (x100; n/a: no GT in that range)"]
    lines += [" | ".join(f"{k:>6}" for k in keys), "-+-".join("-" * 6 for _ in keys)]
    lines += [" | ".join(fmt(metrics[k]) for k in keys)]
    tracking = [k for k in ("HOTA", "DetA", "AssA", "LocA", "IDF1") if k in metrics]
    if tracking:
        lines += ["", "TrackEval (x100; class average) and ID switches"]
        head = [*tracking, "ID sw"] if "id_switches" in metrics else tracking
        lines += [" | ".join(f"{k:>6}" for k in head), "-+-".join("-" * 6 for _ in head)]
        vals = [fmt(metrics[k]) for k in tracking]
        if "id_switches" in metrics:
            vals.append(f"{metrics['id_switches']:6d}")
        lines += [" | ".join(vals)]
    per_cat = metrics.get("per_category", {})
    if per_cat:
        width = max(8, *(len(n) for n in per_cat))
        lines += ["", f"{'category':<{width}} |     AP", f"{'-' * width}-+-{'-' * 6}"]
        lines += [f"{n:<{width}} | {fmt(v)}" for n, v in per_cat.items()]
    return "\n".join(lines)
