"""Video AP of a model on annotated videos (the holdout split) with the project's evaluator."""

from __future__ import annotations

import os

from torch import nn

from gmpvis.config import Config
from gmpvis.data.inputs import FrameFilesSource
from gmpvis.engine.tracker import TrackerConfig
from gmpvis.engine.video_inference import track_video
from gmpvis.eval import evaluate


def subset_ground_truth(gt: dict, video_ids: list[int]) -> dict:
    """The annotation dict restricted to ``video_ids`` (all categories kept)."""
    keep = set(int(v) for v in video_ids)
    return {
        **gt,
        "videos": [v for v in gt["videos"] if int(v["id"]) in keep],
        "annotations": [a for a in gt.get("annotations", []) if int(a["video_id"]) in keep],
    }


def predict_videos(
    model: nn.Module,
    cfg: Config,
    gt: dict,
    video_ids: list[int],
    frames_root: str,
    *,
    tracker_cfg: TrackerConfig | None = None,
    window: int | None = None,
) -> list[dict]:
    """YouTube-VIS results for the listed videos of an annotation dict (``window=None``:
    online, frame by frame, as ``infer.py`` runs; an int: clips of that many frames)."""
    category_ids = sorted(int(c["id"]) for c in gt["categories"])
    results: list[dict] = []
    wanted = set(int(v) for v in video_ids)
    for video in gt["videos"]:
        if int(video["id"]) not in wanted:
            continue
        paths = [os.path.join(frames_root, name) for name in video["file_names"]]
        source = FrameFilesSource(
            video["id"], str(video["id"]), paths, video["height"], video["width"]
        )
        tracker = track_video(
            model,
            source.frames(),
            (source.height, source.width),
            cfg,
            tracker_cfg=tracker_cfg,
            window=window,
        )
        results.extend(tracker.results(source.video_id, source.length, category_ids))
    return results


def evaluate_videos(
    model: nn.Module, cfg: Config, gt: dict, video_ids: list[int], frames_root: str, **kwargs
) -> dict:
    """Track the listed videos and score them: AP, AP50, AP75, APs/m/l, AR1, AR10, ..."""
    results = predict_videos(model, cfg, gt, video_ids, frames_root, **kwargs)
    return evaluate(subset_ground_truth(gt, video_ids), results)
