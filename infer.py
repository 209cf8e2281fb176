"""Run GMP-VIS on videos: online (frame by frame, constant memory) or offline (clips).

    python infer.py --demo                                   # what `make demo` runs
    python infer.py --checkpoint ckpt.pth --ytvis-json valid.json --frames-root JPEGImages
    python infer.py --checkpoint ckpt.pth --frames path/to/frames_dir --overlay gif
    python infer.py --checkpoint ckpt.pth --video clip.mp4 --amp bf16 --compile --cuda-graphs
    python infer.py ... --offline --clip-len 8 --clip-overlap 2 --eval GT.json
    python infer.py ... tracker.max_missing=8 infer.amp=bf16 runtime.device=cuda:1

Every option is a config field (``gmpvis/config.py``: sections ``tracker``, ``infer``,
``runtime``; the model's own sections come from the checkpoint) set by a positional
``section.field=value``, as ``train.py`` takes them; the flags below are shortcuts for the
common ones. Writes ``<output-dir>/results.json`` and ``results.zip`` (YouTube-VIS results),
``latency.json``, optional overlays, and prints per-frame latency; with ``--eval GT`` it
prints the metrics and writes ``metrics.json`` (video AP, AP50, AR10, HOTA, DetA, AssA, IDF1,
ID switches).
"""

from __future__ import annotations

import argparse
import sys

from gmpvis.checkpoint import CheckpointError
from gmpvis.infer import Inputs, load_model, make_demo_video, run_inference
from gmpvis.infer.demo import SHIPPED_CHECKPOINT, check_demo_checkpoint

DEMO_CHECKPOINT = SHIPPED_CHECKPOINT

# flag -> config field it sets (a shortcut for ``field=value``)
FLAG_FIELDS = {
    "output_dir": "infer.output_dir",
    "device": "runtime.device",
    "amp": "infer.amp",
    "clip_len": "infer.offline_clip_len",
    "clip_overlap": "infer.offline_overlap",
    "warmup": "infer.warmup_frames",
    "overlay_threshold": "infer.overlay_threshold",
    "overlay_fps": "infer.overlay_fps",
    "det_threshold": "tracker.det_threshold",
    "birth_threshold": "tracker.birth_threshold",
    "match_threshold": "tracker.match_threshold",
    "max_missing": "tracker.max_missing",
    "track_memory": "tracker.embed_history",
    "association": "tracker.association",
}
SWITCH_FIELDS = {
    "compile": "infer.compile=true",
    "cuda_graphs": "infer.cuda_graphs=true",
    "channels_last": "infer.channels_last=true",
    "offline": "infer.mode=offline",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="GMP-VIS inference", usage=__doc__)
    src = p.add_argument_group("input (one of)")
    src.add_argument("--demo", action="store_true", help="synthetic demo video + shipped model")
    src.add_argument("--ytvis-json", help="YouTube-VIS style annotation/video list file")
    src.add_argument("--frames-root", help="JPEGImages folder for --ytvis-json")
    src.add_argument("--frames", help="folder of frames (or of per-video frame folders)")
    src.add_argument("--video", help="video file (needs the optional extra gmpvis[video])")
    p.add_argument("--checkpoint", help="model checkpoint (default for --demo: the shipped one)")
    p.add_argument("--preset", default=None, help="expected model preset (checked): tiny|r50|r101")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="also read a checkpoint that only full unpickling loads (written by an older "
        "gmpvis): it can run code, so only for files you trust",
    )
    p.add_argument("--eval", dest="eval_gt", default=None, help="ground truth JSON: print video AP")
    p.add_argument(
        "--output-dir", help="infer.output_dir (default outputs/infer, demo outputs/demo)"
    )
    p.add_argument("--device", help="runtime.device: auto | cpu | cuda[:i]")
    lat = p.add_argument_group("latency")
    lat.add_argument("--amp", choices=["off", "bf16", "fp16"], help="infer.amp")
    lat.add_argument("--compile", action="store_true", help="infer.compile: torch.compile")
    lat.add_argument("--cuda-graphs", action="store_true", help="infer.cuda_graphs")
    lat.add_argument("--channels-last", action="store_true", help="infer.channels_last")
    lat.add_argument("--warmup", type=int, help="infer.warmup_frames: left out of latency")
    off = p.add_argument_group("offline mode")
    off.add_argument("--offline", action="store_true", help="infer.mode=offline")
    off.add_argument("--clip-len", type=int, help="infer.offline_clip_len")
    off.add_argument("--clip-overlap", type=int, help="infer.offline_overlap")
    trk = p.add_argument_group("tracker")
    trk.add_argument(
        "--association",
        choices=["graph", "cosine", "iou"],
        help="tracker.association: graph matching head (default), embedding cosine "
        "(embedding-only, MinVIS-style) or IoU of motion-predicted boxes (motion-only)",
    )
    trk.add_argument("--det-threshold", type=float, help="tracker.det_threshold")
    trk.add_argument("--birth-threshold", type=float, help="tracker.birth_threshold")
    trk.add_argument("--match-threshold", type=float, help="tracker.match_threshold")
    trk.add_argument("--max-missing", type=int, help="tracker.max_missing")
    trk.add_argument("--track-memory", type=int, help="tracker.embed_history")
    vis = p.add_argument_group("overlays")
    vis.add_argument("--overlay", action="append", choices=["png", "gif", "mp4"], default=[])
    vis.add_argument("--overlay-threshold", type=float, help="infer.overlay_threshold")
    vis.add_argument("--overlay-fps", type=float, help="infer.overlay_fps")
    p.add_argument("overrides", nargs="*", help="section.field=value (e.g. tracker.max_missing=8)")
    args = p.parse_args(argv)
    given = [n for n in ("demo", "ytvis_json", "frames", "video") if getattr(args, n)]
    if len(given) != 1:
        p.error("give exactly one input: --demo, --ytvis-json, --frames or --video")
    if args.ytvis_json and not args.frames_root:
        p.error("--ytvis-json needs --frames-root (the folder holding the frames)")
    if not args.demo and not args.checkpoint:
        p.error("--checkpoint is required (except with --demo)")
    return args


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The shortcut flags as ``section.field=value`` overrides; positional ones come after
    and win."""
    out = [f"{field}={getattr(args, flag)}" for flag, field in FLAG_FIELDS.items()
           if getattr(args, flag) is not None]  # fmt: skip
    out += [setting for flag, setting in SWITCH_FIELDS.items() if getattr(args, flag)]
    if args.overlay:
        out.append(f"infer.overlay={','.join(args.overlay)}")
    return out + list(args.overrides)


def main(argv: list[str] | None = None) -> dict:
    """Run inference; returns a summary (paths, latency, metrics). Errors raise."""
    args = parse_args(argv)
    overrides = flag_overrides(args)
    if args.demo:
        demo_defaults = ["infer.output_dir=outputs/demo", "infer.overlay=gif"]
        model, cfg, category_ids = load_model(
            check_demo_checkpoint(args.checkpoint or DEMO_CHECKPOINT),
            preset=args.preset or "tiny",
            overrides=demo_defaults + overrides,
            trust=args.trust_checkpoint,
        )
        ann, frames_root = make_demo_video(cfg, cfg.infer.output_dir)
        inputs = Inputs(str(ann), str(frames_root), args.eval_gt or str(ann), "overlay")
    else:
        model, cfg, category_ids = load_model(
            args.checkpoint, preset=args.preset, overrides=overrides, trust=args.trust_checkpoint
        )
        source = args.ytvis_json or args.frames or args.video
        inputs = Inputs(source, args.frames_root, args.eval_gt)
    return run_inference(model, cfg, category_ids, inputs)


def cli(argv: list[str] | None = None) -> int:
    """``main`` with one ``infer.py: error:`` line and exit status 2 instead of a traceback."""
    try:
        main(argv)
    except (CheckpointError, ValueError, ImportError, OSError, RuntimeError) as err:
        print(f"infer.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infer.py: interrupted (SIGINT)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
