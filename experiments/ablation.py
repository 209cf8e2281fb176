"""Ablation on the synthetic benchmark at its hardest setting: ``python -m experiments.ablation``.

Held-out sets: ``--videos`` hard synthetic videos (look-alike objects crossing each other,
objects leaving and re-entering, camera pan) generated with seed ``HELDOUT_SEED`` (training
videos come from seed 0, the ``infer.py --demo`` video from 2026) under
``data/ablation_hard``; for context the same count of easy videos (the distribution the tiny
preset trains on) under ``data/ablation_easy``.

Rows (all with the same online tracker, :class:`gmpvis.infer.OnlineTracker`):

(a) association by the graph matching head (``model.associate``, the default) against
    association by embedding similarity alone: Hungarian on the cosine similarity of the
    instance embeddings, a pair accepted only when its cosine beats a dustbin threshold
    (several thresholds reported; no graph, no edges, no Sinkhorn);
(b) the model with temporal aggregation against one trained with the same budget and
    ``model.temporal_layers=0``: with no temporal layer the memory tokens are still read from
    and written back into each frame, but no token ever mixes with another frame's, so no
    information crosses frames (``num_memory_tokens=0`` would also drop that per-frame
    block, changing capacity as well).

When ``--hard-trained`` exists (the same recipe trained on hard videos:
``python -m experiments.train_tiny --output-dir outputs/tiny_hard --train-only --extra
data.root=data/synthetic_hard data.synthetic_difficulty=hard``) it gets rows too.

Metrics: video AP, AP50 (``gmpvis.eval.evaluate``) and identity switches
(``gmpvis.eval.tracking_metrics.id_switches``). Results: ``experiments/results/ablation.json``
and a markdown table.

    python -m experiments.train_tiny --output-dir outputs/tiny_notemporal --train-only \\
        --extra model.temporal_layers=0
    python -m experiments.ablation --full outputs/tiny_bench/checkpoint_latest.pth \\
        --no-temporal outputs/tiny_notemporal/checkpoint_latest.pth
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from gmpvis.config import TrackerConfig
from gmpvis.eval import evaluate, read_json
from gmpvis.eval.tracking_metrics import id_switches
from gmpvis.infer import (
    OnlineTracker,
    annotated_sources,
    build_preprocessor,
    build_stepper,
    checked_frames,
    frame_outputs,
    load_model,
    track_outputs,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results" / "ablation.json"
HELDOUT_SEED = 4242
COSINE_THRESHOLDS = (0.3, 0.5, 0.7)


def cosine_associate(threshold: float, match_threshold: float) -> Callable:
    """``associate`` from embedding cosine similarity alone.

    The tracker runs the Hungarian algorithm on the real ``[n1, n2]`` block and keeps pairs
    whose value is >= ``match_threshold``; returning ``cos - threshold + match_threshold``
    (a constant shift: the Hungarian solution is that of ``cos``) makes a pair accepted
    exactly when ``cos >= threshold``, i.e. when it beats a dustbin of score ``threshold``.
    """

    def associate(embeds1, boxes1, embeds2, boxes2, mask1=None, mask2=None):
        cos = F.normalize(embeds1.float(), dim=-1) @ F.normalize(embeds2.float(), dim=-1).mT
        out = cos.new_zeros(cos.shape[0], cos.shape[1] + 1, cos.shape[2] + 1)
        out[:, :-1, :-1] = cos - threshold + match_threshold
        return out

    return associate


def make_heldout(
    root: Path, videos: int, frames: int, size: tuple[int, int], difficulty: str = "hard"
) -> Path:
    from gmpvis.data.synthetic import generate_dataset

    ann = root / "annotations.json"
    if not ann.is_file():
        generate_dataset(
            root,
            videos,
            num_frames=frames,
            height=size[0],
            width=size[1],
            difficulty=difficulty,
            seed=HELDOUT_SEED,
        )
    return ann


@torch.no_grad()
def model_outputs(model, cfg, gt: dict, frames_root: Path) -> dict:
    """Online per-frame outputs of every video (computed once, shared by all trackers):
    video id -> (frame outputs, original size)."""
    cpu = torch.device("cpu")
    stepper, pre = build_stepper(model, cfg, cpu), build_preprocessor(cfg, cpu)
    ids = [v["id"] for v in gt["videos"]]
    return {
        int(src.video_id): (
            list(frame_outputs(stepper, checked_frames(src), pre)),
            (src.height, src.width),
        )
        for src in annotated_sources(gt, ids, str(frames_root))
    }


def track_all(outputs: dict, associate, tracker_cfg, category_ids) -> list:
    results = []
    for vid, (frames, orig_hw) in outputs.items():
        tracker = OnlineTracker(associate, tracker_cfg)
        track_outputs(tracker, frames, orig_hw)
        results.extend(tracker.results(vid, len(frames), category_ids))
    return results


def score(gt: dict, results: list) -> dict:
    m = evaluate(gt, results)
    sw = id_switches(gt, results)
    return {
        "AP": m["AP"],
        "AP50": m["AP50"],
        "AR10": m["AR10"],
        "id_switches": sw["id_switches"],
        "covered_frames": sw["covered_frames"],
        "visible_frames": sw["visible_frames"],
        "tracks": len(results),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| held-out set | model | association | AP | AP50 | AR10 | ID switches "
        "| covered / visible frames |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['model']} | {r['association']} | {r['AP']:.3f} | "
            f"{r['AP50']:.3f} | {r['AR10']:.3f} | {r['id_switches']} | "
            f"{r['covered_frames']} / {r['visible_frames']} |"
        )
    return "\n".join(lines)


def training_holdout(ckpt: str) -> list[dict] | None:
    """The run's own holdout curve (``log.jsonl`` next to the checkpoint): step, AP, AP50."""
    log = Path(ckpt).parent / "log.jsonl"
    if not log.is_file():
        return None
    recs = [json.loads(line) for line in log.open() if line.strip()]
    return [{k: r[k] for k in ("step", "AP", "AP50")} for r in recs if r["kind"] == "eval"]


def evaluate_set(models, ann: Path, tcfg: TrackerConfig, label: str) -> list[dict]:
    """All rows of one held-out set: every model with the GM head, the cosine variants for
    the models flagged for it."""
    gt = read_json(ann)
    frames_root = ann.parent / "JPEGImages"
    category_ids = sorted(int(c["id"]) for c in gt["categories"])
    rows = []
    for name, ckpt, with_cosine in models:
        if not Path(ckpt).is_file():
            print(f"skipping {name}: {ckpt} not found")
            continue
        model, cfg, _ = load_model(ckpt)
        t0 = time.perf_counter()
        outs = model_outputs(model, cfg, gt, frames_root)
        variants = [("graph matching head", model.associate)]
        if with_cosine:
            variants += [
                (f"cosine, dustbin {thr}", cosine_associate(thr, tcfg.match_threshold))
                for thr in COSINE_THRESHOLDS
            ]
        for assoc_name, fn in variants:
            metrics = score(gt, track_all(outs, fn, tcfg, category_ids))
            rows.append(
                {"set": label, "model": name, "association": assoc_name, "checkpoint": ckpt}
                | metrics
            )
        print(f"{label}, {name}: {time.perf_counter() - t0:.1f} s")
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--full",
        default="outputs/tiny_bench/checkpoint_latest.pth",
        help="checkpoint of the model with temporal aggregation (the tiny run)",
    )
    p.add_argument(
        "--no-temporal",
        default="outputs/tiny_notemporal/checkpoint_latest.pth",
        help="checkpoint trained with model.temporal_layers=0 (same budget)",
    )
    p.add_argument(
        "--hard-trained",
        default="outputs/tiny_hard/checkpoint_latest.pth",
        help="optional: the same recipe trained on hard videos (skipped if missing)",
    )
    p.add_argument(
        "--sets",
        nargs="+",
        default=["hard", "easy"],
        help="held-out difficulties; hard is the benchmark, easy = the training distribution",
    )
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--frames", type=int, default=16)
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    tcfg = TrackerConfig()
    models = [
        ("temporal aggregation", args.full, True),
        ("no temporal (temporal_layers=0)", args.no_temporal, False),
        ("temporal aggregation, trained on hard", args.hard_trained, True),
    ]
    rows, sets = [], {}
    for diff in args.sets:
        root = ROOT / "data" / f"ablation_{diff}"
        ann = make_heldout(root, args.videos, args.frames, (128, 128), diff)
        sets[diff] = {"root": str(root.relative_to(ROOT)), "seed": HELDOUT_SEED}
        rows += evaluate_set(models, ann, tcfg, diff)
    record = {
        "training_holdout": {name: training_holdout(ckpt) for name, ckpt, _ in models},
        "heldout": {"sets": sets, "videos": args.videos, "frames": args.frames, "size": [128, 128]},
        "tracker": vars(tcfg),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(rows))
    return record


if __name__ == "__main__":
    main()
