"""Statistics of the association benchmark: ceilings and paired bootstrap intervals.

* ``per_frame_ap``: every frame of every video scored as a one-frame video from the kept
  proposals alone (the detection ceiling; association cannot help or hurt it);
* ``oracle_results``: one track per ground-truth object from the kept proposals assigned to
  it (per-frame Hungarian on mask IoU), the subset of sightings that maximises its
  spatio-temporal IoU (the association ceiling of these proposals);
* ``Bootstrap``: video AP and TrackEval's class-averaged HOTA / AssA of a results list on a
  resample of the videos (multiplicities as weights: the matching of a video does not
  depend on the other videos, so each metric is re-accumulated, not re-evaluated); the
  same resamples serve every arm, so differences are paired.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from gmpvis.association import select_proposals
from gmpvis.config import TrackerConfig
from gmpvis.eval import evaluate
from gmpvis.eval.results import check_results, load_gt
from gmpvis.eval.trackeval_metrics import frame_similarities, sequence_data
from gmpvis.eval.ytvis_eval import IOU_THRS, REC_THRS, YTVISEval, pair_intersections
from gmpvis.train.cache import CachedVideo


def _kept(frame, tracker: TrackerConfig) -> list[int]:
    return select_proposals(
        frame.scores, frame.boxes, tracker.det_threshold, tracker.nms_iou, tracker.max_proposals
    ).tolist()


def _entries(video_id: int, length: int, segs: dict, prob: torch.Tensor, ids, k: int):
    top = torch.topk(prob, min(k, prob.numel()))
    seq = [segs.get(t) for t in range(length)]
    return [
        {"video_id": video_id, "category_id": int(ids[c]), "score": float(s), "segmentations": seq}
        for s, c in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def per_frame_ap(gt: dict, videos: list[CachedVideo], tracker: TrackerConfig, ids) -> dict:
    """AP / AP50 with each frame a one-frame video (see the module docstring)."""
    frame_gt = {"categories": gt["categories"], "videos": [], "annotations": []}
    results, vid_of = [], {}
    for v in gt["videos"]:
        for t in range(v["length"]):
            vid_of[v["id"], t] = len(vid_of) + 1
            frame_gt["videos"].append(
                {"id": vid_of[v["id"], t], "width": v["width"], "height": v["height"],
                 "length": 1, "file_names": [v["file_names"][t]]}
            )  # fmt: skip
    for a in gt["annotations"]:
        for t, seg in enumerate(a["segmentations"]):
            if seg is not None:
                frame_gt["annotations"].append(
                    {"id": len(frame_gt["annotations"]) + 1, "video_id": vid_of[a["video_id"], t],
                     "category_id": a["category_id"], "iscrowd": 0, "segmentations": [seg],
                     "areas": [a["areas"][t]], "bboxes": [a["bboxes"][t]]}
                )  # fmt: skip
    k = tracker.categories_per_track
    for video in videos:
        for t, frame in enumerate(video.frames):
            probs = frame.logits.float().sigmoid()
            for q in _kept(frame, tracker):
                seg = {0: frame.rles[q]}
                results += _entries(vid_of[video.video_id, t], 1, seg, probs[q], ids, k)
    m = evaluate(frame_gt, results)
    return {"AP": m["AP"], "AP50": m["AP50"]}


def _best_prefix(cands: list[tuple[int, float, float]], union0: float) -> list[int]:
    """The frames whose sightings maximise ``(sum i) / (union0 + sum (p - i))`` -> frame list.

    ``cands``: (frame, intersection i, proposal area p) of one object; ``union0``: the object's
    area summed over all its frames (every frame of the object is in the union whatever is
    chosen). Taking sightings in decreasing ``i / (p - i)`` while that ratio exceeds the current
    IoU is optimal (a sighting helps iff its marginal ratio beats the current value)."""
    order = sorted(cands, key=lambda c: c[1] / max(c[2] - c[1], 1e-9), reverse=True)
    inter, union, chosen = 0.0, union0, []
    for t, i, p in order:
        if i <= 0 or (inter + i) / (union + p - i) <= inter / union:
            break
        inter, union = inter + i, union + p - i
        chosen.append(t)
    return chosen


def oracle_results(gt: dict, videos: list[CachedVideo], tracker: TrackerConfig, ids) -> list[dict]:
    """The association ceiling of the kept proposals: one track per ground-truth object.

    Per frame, the kept proposals are assigned to the visible objects by Hungarian matching
    on mask IoU (any overlap); per object, the track keeps the subset of its assigned sightings
    that maximises its spatio-temporal mask IoU (the quantity video AP thresholds). Score and
    categories: the mean class probabilities of the chosen sightings, as the tracker reports.
    """
    objects = defaultdict(list)  # video id -> its GT instances (the evaluator's validator)
    for g in load_gt(gt).annotations:
        if not g.iscrowd:
            objects[g.video_id].append(g)
    k = tracker.categories_per_track
    results = []
    for video in videos:
        objs = objects[video.video_id]
        segs_of = [g.segs for g in objs]  # built once: ``segs`` decodes on every access
        cands = defaultdict(list)  # object index -> [(frame, intersection, area)]
        picks = {}  # (object index, frame) -> query
        for t, frame in enumerate(video.frames):
            kept = [q for q in _kept(frame, tracker) if frame.rles[q] is not None]
            here = [j for j, segs in enumerate(segs_of) if segs[t] is not None]
            if not kept or not here:
                continue
            prop = [frame.rles[q] for q in kept]
            area_p = mask_utils.area(prop).astype(np.float64)  # one frame: <= max_proposals
            area_g = np.array([objs[j].areas[t] for j in here])
            inter = pair_intersections(prop, [segs_of[j][t] for j in here], area_p)
            union = area_p[:, None] + area_g[None, :] - inter
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            for r, c in zip(*linear_sum_assignment(-iou), strict=True):
                if inter[r, c] > 0:
                    cands[here[c]].append((t, float(inter[r, c]), float(area_p[r])))
                    picks[here[c], t] = kept[r]
        for j, c in cands.items():
            chosen = _best_prefix(c, float(objs[j].areas.sum()))
            if not chosen:
                continue
            queries = {t: picks[j, t] for t in chosen}
            segs = {t: video.frames[t].rles[q] for t, q in queries.items()}
            probs = [video.frames[t].logits[q].float().sigmoid() for t, q in queries.items()]
            mean = torch.stack(probs).mean(0)
            results += _entries(video.video_id, len(video.frames), segs, mean, ids, k)
    return results


class Bootstrap:
    """Paired bootstrap over the videos of one ground truth (see the module docstring)."""

    def __init__(self, gt: dict, resamples: int = 1000, seed: int = 0) -> None:
        self.gt = load_gt(gt)
        self.videos = sorted(self.gt.videos)
        rng = np.random.default_rng(seed)
        n = len(self.videos)
        draws = rng.integers(0, n, size=(resamples, n))
        self.counts = np.stack([np.bincount(d, minlength=n) for d in draws])  # [R, n]

    # ---- video AP -------------------------------------------------------------------------
    def _ap_data(self, results: list) -> dict:
        ev = YTVISEval(self.gt, check_results(results, self.gt))
        ev.evaluate()
        pos = {v: i for i, v in enumerate(self.videos)}
        dt_video = np.array([pos[key[0]] for key, dl, _ in ev._groups() for _ in dl], np.int64)
        gts = [g for g in self.gt.annotations if not g.iscrowd]
        return {
            "dt_video": dt_video,
            "matched": ev.dt_matched[0],  # area "all": [T, N]
            "ignored": ev.dt_ignored[0],
            "score": ev.dt_score,
            "cat": ev.dt_cat,
            "rank": ev.dt_rank,
            "gt_video": np.array([pos[g.video_id] for g in gts], np.int64),
            "gt_cat": np.array([g.category_id for g in gts], np.int64),
            "cats": ev.cat_ids,
        }

    @staticmethod
    def _weighted_ap(d: dict, w: np.ndarray) -> float:
        """Video AP (area all, 100 detections) with video ``i`` counted ``w[i]`` times."""
        values = []
        for cid in d["cats"]:
            npig = float(w[d["gt_video"][d["gt_cat"] == cid]].sum())
            if npig == 0:
                continue
            idx = np.flatnonzero((d["cat"] == cid) & (d["rank"] < 100))
            idx = idx[np.argsort(-d["score"][idx], kind="mergesort")]
            wd = w[d["dt_video"][idx]].astype(np.float64)
            idx, wd = idx[wd > 0], wd[wd > 0]
            if idx.size == 0:
                values.append(np.zeros((len(IOU_THRS), len(REC_THRS))))
                continue
            tm, ti = d["matched"][:, idx], d["ignored"][:, idx]
            tp = np.cumsum((tm & ~ti) * wd, axis=1)
            fp = np.cumsum((~tm & ~ti) * wd, axis=1)
            rc = tp / npig
            pr = tp / (fp + tp + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            prec = np.zeros((len(IOU_THRS), len(REC_THRS)))
            for t in range(len(IOU_THRS)):
                inds = np.searchsorted(rc[t], REC_THRS, side="left")
                ok = inds < idx.size
                prec[t] = np.where(ok, pr[t, np.minimum(inds, idx.size - 1)], 0)
            values.append(prec)
        return float(np.mean(values)) if values else -1.0

    # ---- TrackEval ------------------------------------------------------------------------
    def _track_data(self, results: list) -> dict:
        from trackeval.metrics import HOTA

        hota = HOTA()
        dts = check_results(results, self.gt)
        gts_of, dts_of = defaultdict(list), defaultdict(list)
        for g in self.gt.annotations:
            gts_of[g.video_id].append(g)
        for d in dts:
            dts_of[d.video_id].append(d)
        per = {c: {} for c in self.gt.categories}
        for i, vid in enumerate(self.videos):
            g_list, d_list = gts_of[vid], dts_of[vid]
            sims = frame_similarities(g_list, d_list, self.gt.videos[vid].length)
            gt_cat = np.array([g.category_id for g in g_list], np.int64)
            gt_ids = np.array([g.id for g in g_list], np.int64)
            dt_cat = np.array([d.category_id for d in d_list], np.int64)
            for c in per:
                per[c][i] = hota.eval_sequence(
                    sequence_data(str(vid), sims, gt_cat, gt_ids, dt_cat, c)
                )
        return {"metric": hota, "per": per}

    @staticmethod
    def _weighted_tracking(d: dict, w: np.ndarray) -> dict:
        hota, per = d["metric"], d["per"]
        cls = {}
        for c, seqs in per.items():
            chosen = {f"{i}_{j}": seqs[i] for i in np.flatnonzero(w) for j in range(w[i])}
            cls[c] = hota.combine_sequences(chosen)
        comb = hota.combine_classes_class_averaged(cls)
        return {k: float(np.mean(comb[k])) for k in ("HOTA", "AssA", "DetA")}

    # ---- public ---------------------------------------------------------------------------
    def samples(self, results: list) -> dict[str, np.ndarray]:
        """Per resample: AP, HOTA, AssA, DetA ``[R]`` of ``results`` (and the full-set
        values under ``"full"`` to check the re-accumulation against the evaluator)."""
        ap, tr = self._ap_data(results), self._track_data(results)
        ones = np.ones(len(self.videos), np.int64)
        out = {"AP": [], "HOTA": [], "AssA": [], "DetA": []}
        for w in self.counts:
            out["AP"].append(self._weighted_ap(ap, w))
            for k, v in self._weighted_tracking(tr, w).items():
                out[k].append(v)
        res = {k: np.array(v) for k, v in out.items()}
        res["full"] = {"AP": self._weighted_ap(ap, ones), **self._weighted_tracking(tr, ones)}
        return res


def interval(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean and 95 % percentile interval of the paired difference ``a - b``."""
    diff = np.asarray(a) - np.asarray(b)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"mean": float(diff.mean()), "ci95": [float(lo), float(hi)]}


class MarginalRecorder(torch.nn.Module):
    """Wraps a graph matching head and records, for every graph it solves, the largest
    deviation of a real row or column of the assignment from mass 1 (Sinkhorn convergence)."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head, self.errors = head, []

    def forward(self, tracks, props):
        S = self.head(tracks, props)
        for b in range(S.shape[0]):
            n, m = int(tracks.mask[b].sum()), int(props.mask[b].sum())
            rows = S[b, :n].sum(1)  # real rows over every column, dustbin included (padding is 0)
            cols = S[b, :, :m].sum(0)
            self.errors.append(float(torch.cat([rows - 1, cols - 1]).abs().max()))
        return S

    def summary(self) -> dict:
        e = np.array(self.errors)
        return {"graphs": int(e.size), "max": float(e.max()), "median": float(np.median(e)),
                "p99": float(np.percentile(e, 99))}  # fmt: skip
