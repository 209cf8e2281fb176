"""An inference job, end to end: inputs -> tracked videos -> results, overlays, latency, AP.

``run_inference`` is what ``infer.py`` calls once it has a model and a config. It checks the
output folder first, then for each video: predicts it (:func:`predict_videos`), writes its
results to ``<output-dir>/partial/<video id>.json`` at once (atomically, so a failure later
loses nothing already computed) and its overlays; at the end ``results.json``,
``results.zip``, ``latency.json`` and, with ground truth, the metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from gmpvis.config import Config
from gmpvis.data import YTVISAnnotations
from gmpvis.data.inputs import VideoSource, annotation_sources, open_inputs
from gmpvis.data.json_io import atomic_write
from gmpvis.eval import evaluate_all, format_table, read_json, write_results, write_submission
from gmpvis.infer.predict import VideoPrediction, predict_videos
from gmpvis.infer.stepper import prepare_model
from gmpvis.infer.timing import LatencyStats
from gmpvis.runtime import setup_runtime

OUTPUT_FILES = ("results.json", "results.zip", "latency.json", "metrics.json")
METRIC_KEYS = ("AP", "AP50", "AR10", "HOTA", "DetA", "AssA", "IDF1", "id_switches")


@dataclass
class Inputs:
    """What to run on: an annotation file (+ ``frames_root``), a frames folder or a video
    file (``source``), optional ground truth, and the overlay file stem (``None``: one per
    video, ``overlay_<id>_<name>``)."""

    source: str
    frames_root: str | None = None
    eval_gt: str | None = None
    overlay_stem: str | None = None


def prepare_output_dir(out_dir: Path) -> None:
    """Create ``out_dir``, check it is writable, and remove the outputs of an earlier run
    (an old ``results.json`` must never look current)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OSError(f"output folder {out_dir} is not writable: {err}") from err
    for name in OUTPUT_FILES:
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "partial", ignore_errors=True)


def open_sources(inputs: Inputs) -> tuple[list[VideoSource], dict | None]:
    """The videos to run -> (sources, the parsed annotation dict when the input is one)."""
    if not inputs.source.lower().endswith(".json"):
        return open_inputs(inputs.source), None
    if inputs.frames_root is None or not os.path.isdir(inputs.frames_root):
        raise FileNotFoundError(f"frames root {inputs.frames_root} is not a folder")
    gt = read_json(inputs.source)
    index = YTVISAnnotations.from_dict(
        gt, source=inputs.source, frames_root=inputs.frames_root, require_annotations=False
    )
    return annotation_sources(index, inputs.frames_root), gt


def category_info(
    annotation_dicts: list[dict], num_classes: int, category_ids: list[int]
) -> tuple[list[int], dict[int, str]]:
    """(category ids by label, names by id) from the checkpoint and the annotation files."""
    cats = next((d["categories"] for d in annotation_dicts if d.get("categories")), [])
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    if not category_ids:
        ids = sorted(names)
        category_ids = ids if len(ids) == num_classes else list(range(1, num_classes + 1))
    return category_ids, names


def write_overlays(
    video: VideoPrediction, names: dict[int, str], cfg: Config, stem: Path
) -> list[Path]:
    """Render the video's confident tracks over its frames (the whole video in memory)."""
    from gmpvis.utils.visualize import (
        instances_from_annotations,
        render_video,
        save_gif,
        save_mp4,
        save_png_frames,
    )

    i, src = cfg.infer, video.source
    mine = [r for r in video.results if r["score"] >= i.overlay_threshold]
    inst = instances_from_annotations(mine, src.height, src.width, names)
    frames = [f for _, f in zip(range(video.num_frames), src.frames(), strict=False)]
    drawn = render_video(frames, inst)
    paths = []
    if "png" in i.overlay:
        save_png_frames(drawn, stem)
        paths.append(stem)
    if "gif" in i.overlay:
        paths.append(save_gif(drawn, stem.with_suffix(".gif"), fps=i.overlay_fps))
    if "mp4" in i.overlay:
        paths.append(save_mp4(drawn, stem.with_suffix(".mp4"), fps=i.overlay_fps))
    return paths


def latency_warmup(cfg: Config) -> int:
    """Frames left out of the latency figures: ``infer.warmup_frames``, or by default 1, or
    ``K + 2`` with compilation / CUDA graphs (the memory fills, then graphs are captured)."""
    if cfg.infer.warmup_frames >= 0:
        return cfg.infer.warmup_frames
    compiled = cfg.infer.compile or cfg.infer.cuda_graphs
    return cfg.model.memory_frames + 2 if compiled else 1


def run_inference(model: nn.Module, cfg: Config, category_ids: list[int], inputs: Inputs) -> dict:
    """Run the job (see the module docstring); returns a summary (paths, latency, metrics)."""
    out_dir = Path(cfg.infer.output_dir)
    if inputs.eval_gt and not os.path.isfile(inputs.eval_gt):  # fail before the long part
        raise FileNotFoundError(f"--eval {inputs.eval_gt} does not exist")
    prepare_output_dir(out_dir)
    sources, source_gt = open_sources(inputs)
    gt = None
    if inputs.eval_gt:
        same = source_gt is not None and os.path.samefile(inputs.eval_gt, inputs.source)
        gt = source_gt if same else read_json(inputs.eval_gt)
    category_ids, names = category_info(
        [d for d in (source_gt, gt) if d], cfg.model.num_classes, category_ids
    )
    device = setup_runtime(cfg.runtime.device, cfg.runtime.kernels)
    prepare_model(model, device, cfg.infer.channels_last)
    mode = cfg.infer.mode
    print(f"{mode} inference on {len(sources)} video(s), device {device}, amp {cfg.infer.amp}")
    results: list[dict] = []
    stats = LatencyStats()
    overlays: list[Path] = []
    done = 0
    try:
        for video in predict_videos(model, cfg, sources, category_ids, device):
            src = video.source
            write_results(video.results, out_dir / "partial" / f"{src.video_id}.json")
            results.extend(video.results)
            stats.extend(video.stats)
            done += 1
            print(
                f"  video {src.video_id} {src.name!r}: {video.num_frames} frames, "
                f"{len(video.results)} tracks"
            )
            if cfg.infer.overlay:
                stem = inputs.overlay_stem or f"overlay_{src.video_id}_{src.name}"
                overlays += write_overlays(video, names, cfg, out_dir / stem)
    except BaseException:
        print(
            f"stopped after {done} of {len(sources)} videos: their results are in "
            f"{out_dir / 'partial'}; results.json was not written",
            file=sys.stderr,
        )
        raise
    json_path, zip_path = write_submission(results, out_dir)
    shutil.rmtree(out_dir / "partial", ignore_errors=True)
    warmup = latency_warmup(cfg)
    latency = stats.summary(skip=warmup)
    atomic_write(
        out_dir / "latency.json",
        json.dumps({"mode": mode, "device": str(device), "amp": cfg.infer.amp, **latency}),
    )
    print(f"results: {json_path} ({len(results)} tracks), {zip_path}")
    for p in overlays:
        print(f"overlay: {p}")
    print(f"latency ({mode}, first {warmup} frame(s) left out): {stats.format(skip=warmup)}")
    summary = {
        "results": str(json_path),
        "latency": latency,
        "overlays": [str(p) for p in overlays],
    }
    if gt is not None:
        metrics = evaluate_all(gt, results)
        print(format_table(metrics))
        print(f"video AP {100 * metrics['AP']:.2f}")
        keep = {k: metrics[k] for k in METRIC_KEYS}
        atomic_write(out_dir / "metrics.json", json.dumps(keep, indent=1) + "\n")
        summary["metrics"] = metrics
    return summary
