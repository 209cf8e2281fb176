"""HOTA, DetA, AssA, LocA and IDF1 as TrackEval's YouTube-VIS evaluation computes them.

The metric math is TrackEval's own (the ``trackeval`` package): its ``HOTA`` and
``Identity`` classes score every (video, category) from the per-sequence dict that its
``YouTubeVIS`` dataset builds in ``get_preprocessed_seq_data``, combine the videos of each
category (``combine_sequences``) and average the categories (``cls_comb_cls_av``,
``combine_classes_class_averaged``). This module only builds that dict, from the evaluator's
validated instances, with the project's exact mask IoU per frame
(:func:`gmpvis.eval.ytvis_eval.pair_intersections`) instead of TrackEval's file loading.

TrackEval's YouTube-VIS conventions, kept here:

- every GT annotation (crowd ones too) and every result (no score threshold, no cap on the
  number per video) is a track; a track is a detection in each frame where its
  segmentation is not null;
- similarities are mask IoUs between the GT and result detections of one frame; a result
  scores only against GT of its own category;
- ids are relabelled per (video, category): GT by annotation id order, results by file order;
- HOTA, DetA, AssA and LocA are means over TrackEval's 19 localisation thresholds
  alpha = 0.05, 0.10, ..., 0.95; IDF1 matches at IoU >= 0.5;
- the class average runs over every category of the ground truth, including categories
  with neither GT nor results in any video (they score HOTA 0, LocA 1); an empty results
  list gives HOTA = DetA = AssA = IDF1 = 0 and LocA = 1.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from gmpvis.eval.results import GroundTruth, Instance
from gmpvis.eval.ytvis_eval import pair_intersections

TRACKING_KEYS = ("HOTA", "DetA", "AssA", "LocA", "IDF1")


def frame_similarities(gts: list[Instance], dts: list[Instance], length: int) -> list:
    """Per frame ``t``: ``(g_idx [n_g], d_idx [n_d], iou float64 [n_g, n_d])``, the GT and
    result instances present in frame ``t`` (in list order) and their mask IoU."""
    g_segs, d_segs = [g.segs for g in gts], [d.segs for d in dts]
    g_area = np.stack([g.areas for g in gts]) if gts else np.zeros((0, length))
    d_area = np.stack([d.areas for d in dts]) if dts else np.zeros((0, length))
    g_here = np.stack([g.present for g in gts]) if gts else np.zeros((0, length), bool)
    d_here = np.stack([d.present for d in dts]) if dts else np.zeros((0, length), bool)
    out = []
    for t in range(length):
        gi, di = np.flatnonzero(g_here[:, t]), np.flatnonzero(d_here[:, t])
        iou = np.zeros((len(gi), len(di)))
        if len(gi) and len(di):
            inter = pair_intersections(
                [d_segs[i][t] for i in di], [g_segs[j][t] for j in gi], d_area[di, t]
            ).T  # [n_g, n_d]
            union = g_area[gi, t][:, None] + d_area[di, t][None, :] - inter
            np.divide(inter, union, out=iou, where=union > 0)
        out.append((gi, di, iou))
    return out


def sequence_data(
    name: str, sims: list, gt_cat: np.ndarray, gt_ids: np.ndarray, dt_cat: np.ndarray, cat: int
) -> dict:
    """The dict TrackEval's ``YouTubeVIS.get_preprocessed_seq_data`` gives its metrics for
    one video and one category (the fields HOTA and Identity read).

    ``sims``: :func:`frame_similarities`; ``gt_cat`` / ``gt_ids`` / ``dt_cat``: category and
    annotation id of each GT instance, category of each result, in list order.
    """
    g_keep, d_keep = gt_cat == cat, dt_cat == cat
    g_used = np.unique(np.concatenate([gi[g_keep[gi]] for gi, _, _ in sims]))
    d_used = np.unique(np.concatenate([di[d_keep[di]] for _, di, _ in sims]))
    g_label = np.full(len(gt_cat), -1, np.int64)  # GT relabelled by annotation id order
    g_label[g_used[np.argsort(gt_ids[g_used], kind="stable")]] = np.arange(len(g_used))
    d_label = np.full(len(dt_cat), -1, np.int64)  # results by file order
    d_label[d_used] = np.arange(len(d_used))
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": [], "seq": name}
    for gi, di, iou in sims:
        gm, dm = g_keep[gi], d_keep[di]
        data["gt_ids"].append(g_label[gi[gm]])
        data["tracker_ids"].append(d_label[di[dm]])
        data["similarity_scores"].append(iou[gm][:, dm])
    data["num_timesteps"] = len(sims)
    data["num_gt_dets"] = int(sum(len(x) for x in data["gt_ids"]))
    data["num_tracker_dets"] = int(sum(len(x) for x in data["tracker_ids"]))
    data["num_gt_ids"], data["num_tracker_ids"] = len(g_used), len(d_used)
    return data


def tracking_metrics(gt: GroundTruth, dts: list[Instance]) -> dict:
    """HOTA, DetA, AssA, LocA, IDF1 (in [0, 1]) of results ``dts`` against ``gt``, TrackEval's
    YouTube-VIS class average; ``per_category`` HOTA too. See the module docstring."""
    if not gt.categories:
        raise ValueError("tracking metrics: the ground truth has no categories")
    from trackeval.metrics import HOTA, Identity  # here: importing trackeval costs ~0.5 s

    hota, ident = HOTA(), Identity({"THRESHOLD": 0.5, "PRINT_CONFIG": False})
    gts_of, dts_of = defaultdict(list), defaultdict(list)
    for g in gt.annotations:
        gts_of[g.video_id].append(g)
    for d in dts:
        dts_of[d.video_id].append(d)
    cats = list(gt.categories)
    per_cat = {c: ({}, {}) for c in cats}  # category -> (HOTA, Identity) results per video
    for vid, video in gt.videos.items():
        g_list, d_list = gts_of[vid], dts_of[vid]
        sims = frame_similarities(g_list, d_list, video.length)
        gt_cat = np.array([g.category_id for g in g_list], np.int64)
        gt_ids = np.array([g.id for g in g_list], np.int64)
        dt_cat = np.array([d.category_id for d in d_list], np.int64)
        for c in cats:
            data = sequence_data(str(vid), sims, gt_cat, gt_ids, dt_cat, c)
            per_cat[c][0][vid] = hota.eval_sequence(data)
            per_cat[c][1][vid] = ident.eval_sequence(data)
    cls_hota = {c: hota.combine_sequences(h) for c, (h, _) in per_cat.items()}
    cls_ident = {c: ident.combine_sequences(i) for c, (_, i) in per_cat.items()}
    comb_hota = hota.combine_classes_class_averaged(cls_hota)
    comb_ident = ident.combine_classes_class_averaged(cls_ident)
    out = {k: float(np.mean(comb_hota[k])) for k in ("HOTA", "DetA", "AssA", "LocA")}
    out["IDF1"] = float(comb_ident["IDF1"])
    names = [gt.categories[c] for c in cats]
    out["per_category_HOTA"] = {
        (f"{n} ({c})" if names.count(n) > 1 else n): float(np.mean(cls_hota[c]["HOTA"]))
        for c, n in zip(cats, names, strict=True)
    }
    return out
