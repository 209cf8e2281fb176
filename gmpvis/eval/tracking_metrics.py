"""Identity switches of video instance segmentation results (a tracking metric next to AP).

Video AP scores a track by its IoU summed over the whole video, so a track that jumps from
one object to another loses AP only indirectly. ID switches count those jumps directly:

* In a frame, a ground-truth instance is *covered* by the predicted track whose mask has the
  highest IoU with the GT mask in that frame, if that IoU is at least ``iou_threshold``
  (0.5); otherwise it is uncovered there.
* Walking the frames where the GT instance is visible (non-empty mask), every time the
  covering track differs from the one that covered it at the previous covered frame is one
  switch (uncovered frames in between are skipped: losing an object and finding it again
  under the same track is not a switch).

A "track" is one result entry; entries with identical per-frame masks (one track reported
under several categories) count as one track. Matching is class-agnostic: identity, not
classification, is measured here.

    switches = id_switches(gt, results)          # gt: path or dict, results: path or list
    switches["id_switches"], switches["per_video"], switches["covered_frames"]

``fragmentation(gt, results)`` says where switches leave a video's instances: per GT
instance, how many distinct tracks cover it in some frame, and whether one track follows it
well enough for video AP to count it (class-agnostic spatio-temporal IoU >= 0.5, 0.75).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from gmpvis.eval.results import GroundTruth, Instance, check_results, load_gt
from gmpvis.eval.ytvis_eval import video_iou


def _dedupe_tracks(instances: list[Instance]) -> list[Instance]:
    """One entry per distinct mask sequence (a track reported under several categories)."""
    seen: dict[tuple, Instance] = {}
    for inst in instances:
        key = tuple(None if s is None else s["counts"] for s in inst.segs)
        best = seen.get(key)
        if best is None or inst.score > best.score:
            seen[key] = inst
    return list(seen.values())


def covering_tracks(
    gt_inst: Instance, tracks: list[Instance], iou_threshold: float = 0.5
) -> list[int | None]:
    """Per visible frame of ``gt_inst`` (in frame order): the index in ``tracks`` of the
    best-IoU track if its mask IoU >= ``iou_threshold``, else None. Frames where the GT mask
    is empty are left out."""
    out: list[int | None] = []
    g_areas = gt_inst.areas
    t_segs = [tr.segs for tr in tracks]
    for t, gseg in enumerate(gt_inst.segs):
        if gseg is None or g_areas[t] <= 0:
            continue
        cand = [(k, segs[t]) for k, segs in enumerate(t_segs) if segs[t] is not None]
        if not cand:
            out.append(None)
            continue
        ious = np.asarray(mask_utils.iou([s for _, s in cand], [gseg], [0])).reshape(-1)
        best = int(np.argmax(ious))
        out.append(cand[best][0] if ious[best] >= iou_threshold else None)
    return out


def count_switches(cover: list[int | None]) -> int:
    """Changes of the covering track between consecutive covered frames."""
    ids = [c for c in cover if c is not None]
    return sum(1 for a, b in zip(ids, ids[1:], strict=False) if a != b)


def id_switches(
    gt: str | Path | dict | GroundTruth,
    results: str | Path | list,
    *,
    iou_threshold: float = 0.5,
    min_score: float = 0.0,
) -> dict:
    """ID switches of ``results`` against ``gt`` (YouTube-VIS formats).

    Returns ``{"id_switches": int (total), "per_video": {video_id: int},
    "gt_instances": int, "visible_frames": int, "covered_frames": int}``; only results with
    ``score >= min_score`` take part. Only videos of the ground truth are counted.
    ``results`` may also be the already-checked instances (:func:`check_results`).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold: expected a value in (0, 1], got {iou_threshold}")
    truth = load_gt(gt)
    checked = results if _are_instances(results) else check_results(results, truth)
    preds = [r for r in checked if r.score >= min_score]
    by_video: dict[int, list[Instance]] = {}
    for r in preds:
        by_video.setdefault(r.video_id, []).append(r)
    per_video = {vid: 0 for vid in truth.videos}
    visible = covered = 0
    tracks_of = {vid: _dedupe_tracks(dl) for vid, dl in by_video.items()}
    for g in truth.annotations:
        if g.iscrowd:
            continue
        cover = covering_tracks(g, tracks_of.get(g.video_id, []), iou_threshold)
        visible += len(cover)
        covered += sum(c is not None for c in cover)
        per_video[g.video_id] += count_switches(cover)
    return {
        "id_switches": int(sum(per_video.values())),
        "per_video": per_video,
        "gt_instances": sum(1 for g in truth.annotations if not g.iscrowd),
        "visible_frames": visible,
        "covered_frames": covered,
    }


def fragmentation(
    gt: str | Path | dict | GroundTruth, results: str | Path | list, *, iou_threshold: float = 0.5
) -> dict:
    """How broken the tracks of ``results`` are, per GT instance (class-agnostic).

    Returns ``{"gt_instances", "tracks" (distinct mask sequences), "tracks_per_instance"
    (tracks / instances), "covering_tracks_mean" (distinct tracks covering an instance in
    some frame, as :func:`covering_tracks` decides), "followed_at_50" / "followed_at_75"
    (share of instances whose best track has spatio-temporal IoU >= 0.5 / 0.75),
    "best_iou_mean"}``. An empty ground truth gives zeros.
    """
    truth = load_gt(gt)
    checked = results if _are_instances(results) else check_results(results, truth)
    by_video: dict[int, list[Instance]] = {}
    for r in checked:
        by_video.setdefault(r.video_id, []).append(r)
    tracks_of = {vid: _dedupe_tracks(dl) for vid, dl in by_video.items()}
    gts = [g for g in truth.annotations if not g.iscrowd]
    gts_of: dict[int, list[Instance]] = {}
    for g in gts:
        gts_of.setdefault(g.video_id, []).append(g)
    covering, best = [], []
    for vid, mine in gts_of.items():
        tracks = tracks_of.get(vid, [])
        ious = video_iou(tracks, mine, truth.videos[vid].length)  # [D, G]
        for j, g in enumerate(mine):
            cover = covering_tracks(g, tracks, iou_threshold)
            covering.append(len({c for c in cover if c is not None}))
            best.append(float(ious[:, j].max()) if tracks else 0.0)
    n = len(gts)
    n_tracks = sum(len(t) for vid, t in tracks_of.items() if vid in truth.videos)
    best_a = np.asarray(best, dtype=np.float64)
    return {
        "gt_instances": n,
        "tracks": n_tracks,
        "tracks_per_instance": n_tracks / n if n else 0.0,
        "covering_tracks_mean": float(np.mean(covering)) if n else 0.0,
        "followed_at_50": float(np.mean(best_a >= 0.5)) if n else 0.0,
        "followed_at_75": float(np.mean(best_a >= 0.75)) if n else 0.0,
        "best_iou_mean": float(best_a.mean()) if n else 0.0,
    }


def _are_instances(results) -> bool:
    return isinstance(results, list) and bool(results) and isinstance(results[0], Instance)
