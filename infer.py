"""Run GMP-VIS on videos: online (frame by frame, constant memory) or offline (clips).

    python infer.py --demo                                   # what `make demo` runs
    python infer.py --checkpoint ckpt.pth --ytvis-json valid.json --frames-root JPEGImages
    python infer.py --checkpoint ckpt.pth --frames path/to/frames_dir --overlay gif
    python infer.py --checkpoint ckpt.pth --video clip.mp4 --amp bf16 --compile --cuda-graphs
    python infer.py ... --offline --clip-len 8 --clip-overlap 2 --eval GT.json

Writes ``<output-dir>/results.json`` and ``results.zip`` (YouTube-VIS results; each track's
score and category come from its class probabilities averaged over its frames),
``latency.json``, optional overlays, and prints per-frame latency (p50 / p90, FPS; model
time and total time apart) and, with ``--eval``, video AP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "gmpvis" / "assets" / "gmpvis_tiny.pth"
DEMO_DIR = Path("outputs/demo")
DEMO_SEED = 2026  # unseen by training (train.py generates videos from data.split_seed = 0)
DEMO_FRAMES = 30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="GMP-VIS inference", usage=__doc__)
    src = p.add_argument_group("input (one of)")
    src.add_argument("--demo", action="store_true", help="synthetic demo video + shipped model")
    src.add_argument("--ytvis-json", help="YouTube-VIS style annotation/video list file")
    src.add_argument("--frames-root", help="JPEGImages folder for --ytvis-json")
    src.add_argument("--frames", help="folder of frames (or of per-video frame folders)")
    src.add_argument("--video", help="video file (needs the optional extra gmpvis[video])")
    p.add_argument("--checkpoint", help=f"model checkpoint (default for --demo: {DEMO_CHECKPOINT})")
    p.add_argument("--preset", default=None, help="expected model preset (checked): tiny|r50|r101")
    p.add_argument("--output-dir", default=None, help="default outputs/infer (demo: outputs/demo)")
    p.add_argument("--eval", dest="eval_gt", default=None, help="ground truth JSON: print video AP")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    lat = p.add_argument_group("latency")
    lat.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    lat.add_argument("--compile", action="store_true", help="torch.compile the per-frame step")
    lat.add_argument("--cuda-graphs", action="store_true", help="CUDA graphs for the frame step")
    lat.add_argument("--channels-last", action="store_true")
    off = p.add_argument_group("offline mode")
    off.add_argument("--offline", action="store_true", help="overlapping clips, stitched")
    off.add_argument("--clip-len", type=int, default=8)
    off.add_argument("--clip-overlap", type=int, default=2)
    trk = p.add_argument_group("tracker")
    trk.add_argument("--det-threshold", type=float, default=None)
    trk.add_argument("--birth-threshold", type=float, default=None)
    trk.add_argument("--match-threshold", type=float, default=None)
    trk.add_argument("--max-missing", type=int, default=None, help="frames kept when occluded")
    trk.add_argument("--track-memory", type=int, default=None, help="embeddings kept per track")
    vis = p.add_argument_group("overlays")
    vis.add_argument("--overlay", action="append", choices=["png", "gif", "mp4"], default=[])
    vis.add_argument("--overlay-threshold", type=float, default=0.3, help="least track score")
    vis.add_argument("--overlay-fps", type=float, default=6.0)
    p.add_argument("--warmup", type=int, default=None, help="frames left out of latency stats")
    p.add_argument("overrides", nargs="*", help="section.field=value (e.g. data.scales=360)")
    args = p.parse_args(argv)
    given = [n for n in ("demo", "ytvis_json", "frames", "video") if getattr(args, n)]
    if len(given) != 1:
        p.error("give exactly one input: --demo, --ytvis-json, --frames or --video")
    if args.ytvis_json and not args.frames_root:
        p.error("--ytvis-json needs --frames-root (the folder holding the frames)")
    if not args.demo and not args.checkpoint:
        p.error("--checkpoint is required (except with --demo)")
    return args


def tracker_config(args):
    from gmpvis.engine.tracker import TrackerConfig

    cfg = TrackerConfig()
    for arg, name in [
        ("det_threshold", "det_threshold"),
        ("birth_threshold", "birth_threshold"),
        ("match_threshold", "match_threshold"),
        ("max_missing", "max_missing"),
        ("track_memory", "memory"),
    ]:
        if getattr(args, arg) is not None:
            setattr(cfg, name, getattr(args, arg))
    return cfg


def prepare_demo(args, cfg_size: tuple[int, int], difficulty: str) -> None:
    """Generate the demo video (fixed seed, unseen in training) and point the inputs at it.

    ``difficulty`` is the one the checkpoint was trained on: the shipped tiny model learns
    the ``easy`` setting in 20 CPU minutes and does not generalise to ``hard`` videos (see
    ``python -m benchmarks.ablation`` for the hard setting)."""
    from gmpvis.data.synthetic import generate_dataset

    data = Path(args.output_dir) / "data"
    ann = generate_dataset(
        data,
        1,
        num_frames=DEMO_FRAMES,
        height=cfg_size[0],
        width=cfg_size[1],
        difficulty=difficulty,
        seed=DEMO_SEED,
    )
    args.ytvis_json, args.frames_root = str(ann), str(data / "JPEGImages")
    args.eval_gt = args.eval_gt or str(ann)
    if "gif" not in args.overlay:
        args.overlay.append("gif")


def open_sources(args):
    from gmpvis.data.inputs import read_annotation_videos, read_frame_folder, read_video_file

    if args.ytvis_json:
        if not os.path.isfile(args.ytvis_json):
            raise FileNotFoundError(f"--ytvis-json {args.ytvis_json} does not exist")
        if not os.path.isdir(args.frames_root):
            raise FileNotFoundError(f"--frames-root {args.frames_root} is not a folder")
        return read_annotation_videos(args.ytvis_json, args.frames_root)
    if args.frames:
        return read_frame_folder(args.frames)
    return read_video_file(args.video)  # names the PyAV extra first when it is missing


def category_info(args, num_classes: int, category_ids: list[int]):
    """(category ids by label, names by id) from the checkpoint and any annotation file."""
    cats = []
    for path in (args.ytvis_json, args.eval_gt):
        if path and os.path.isfile(path):
            with open(path) as f:
                cats = json.load(f).get("categories", []) or cats
            if cats:
                break
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    if not category_ids:
        ids = sorted(names)
        category_ids = ids if len(ids) == num_classes else list(range(1, num_classes + 1))
    return category_ids, names


def write_overlays(run, results: list[dict], names: dict, args, out_dir: Path) -> list[Path]:
    """Render the video's confident tracks over its frames (the whole video in memory)."""
    from gmpvis.utils.visualize import (
        instances_from_annotations,
        render_video,
        save_gif,
        save_mp4,
        save_png_frames,
    )

    src = run.source
    mine = [r for r in results if r["score"] >= args.overlay_threshold]
    inst = instances_from_annotations(mine, src.height, src.width, names)
    frames = [f for _, f in zip(range(run.num_frames), src.frames(), strict=False)]
    drawn = render_video(frames, inst)
    stem = out_dir / ("overlay" if args.demo else f"overlay_{src.video_id}_{src.name}")
    paths = []
    if "png" in args.overlay:
        save_png_frames(drawn, stem)
        paths.append(stem)
    if "gif" in args.overlay:
        paths.append(save_gif(drawn, stem.with_suffix(".gif"), fps=args.overlay_fps))
    if "mp4" in args.overlay:
        paths.append(save_mp4(drawn, stem.with_suffix(".mp4"), fps=args.overlay_fps))
    return paths


def main(argv: list[str] | None = None) -> dict:
    """Run inference; returns a summary (paths, latency, metrics). Errors raise."""
    args = parse_args(argv)
    from gmpvis.engine.checkpoint import CheckpointError
    from gmpvis.engine.online import (
        LatencyStats,
        RunOptions,
        VideoRun,
        build_stepper,
        checked_frames,
        track_frames,
    )
    from gmpvis.engine.video_inference import load_model
    from gmpvis.eval import evaluate, format_table, write_submission

    args.output_dir = args.output_dir or str(DEMO_DIR if args.demo else Path("outputs/infer"))
    out_dir = Path(args.output_dir)
    if args.demo:
        ckpt = Path(args.checkpoint) if args.checkpoint else DEMO_CHECKPOINT
        if not ckpt.is_file():
            raise CheckpointError(
                f"demo checkpoint {ckpt} not found: the shipped model is trained with "
                "`python train.py --preset tiny` and committed as gmpvis/assets/gmpvis_tiny.pth "
                "(or pass --checkpoint PATH)"
            )
        args.checkpoint = str(ckpt)
        args.preset = args.preset or "tiny"
    model, cfg, category_ids = load_model(
        args.checkpoint, preset=args.preset, overrides=args.overrides
    )
    if args.demo:
        prepare_demo(args, tuple(cfg.data.synthetic_size), cfg.data.synthetic_difficulty)
    if args.eval_gt and not os.path.isfile(args.eval_gt):  # fail before the long part
        raise FileNotFoundError(f"--eval {args.eval_gt} does not exist")
    sources = open_sources(args)
    category_ids, names = category_info(args, cfg.model.num_classes, category_ids)
    opts = RunOptions(
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        channels_last=args.channels_last,
    )
    stepper = build_stepper(model, opts)
    tcfg = tracker_config(args)  # the frame loops run under torch.no_grad themselves
    results: list[dict] = []
    stats = LatencyStats()
    overlays: list[Path] = []
    mode = "offline" if args.offline else "online"
    print(f"{mode} inference on {len(sources)} video(s), device {stepper.device}, amp {args.amp}")
    for src in sources:
        frames = checked_frames(src)
        hw = (src.height, src.width)
        if args.offline:
            from gmpvis.engine.stitch import track_frames_offline

            tracker, vstats, n = track_frames_offline(
                stepper, frames, hw, cfg, tcfg, clip_len=args.clip_len, overlap=args.clip_overlap
            )
        else:
            tracker, vstats, n = track_frames(stepper, frames, hw, cfg, tcfg)
        run = VideoRun(src, tracker, vstats, n)
        video_results = run.results(category_ids)
        results.extend(video_results)
        stats.extend(vstats)
        print(f"  video {src.video_id} {src.name!r}: {n} frames, {len(video_results)} tracks")
        if args.overlay:
            overlays += write_overlays(run, video_results, names, args, out_dir)
    json_path, zip_path = write_submission(results, out_dir)
    warmup = args.warmup
    if warmup is None:
        warmup = cfg.model.memory_frames + 2 if (args.compile or args.cuda_graphs) else 1
    latency = stats.summary(skip=warmup)
    (out_dir / "latency.json").write_text(
        json.dumps({"mode": mode, "device": str(stepper.device), "amp": args.amp, **latency})
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
    if args.eval_gt:
        metrics = evaluate(args.eval_gt, results)
        print(format_table(metrics))
        print(f"video AP {100 * metrics['AP']:.2f}")
        summary["metrics"] = metrics
    return summary


def cli() -> int:
    from gmpvis.engine.checkpoint import CheckpointError

    try:
        main()
    except (CheckpointError, FileNotFoundError, ValueError, ImportError, RuntimeError) as err:
        print(f"infer.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
