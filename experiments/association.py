"""Association benchmark: graph matching against embedding-only and motion-only association.

    python -m experiments.association --detector outputs/tiny_recipe/stage1/checkpoint_latest.pth
    python -m experiments.association --detector ... --shipped gmpvis/assets/gmpvis_tiny.pth

One frozen detector (the tiny recipe's first stage) runs once over every set
(:mod:`experiments.association_data`: heads-training, validation and test videos of each
difficulty, seeds of their own); its cached outputs feed every arm
(:mod:`experiments.association_arms`) through the same tracker. Per training seed: a fresh
embedding head (contrastive) and fresh graph matching heads (with and without the quadratic
term) are trained on the heads-training videos. Every arm's tracker thresholds are tuned by
coordinate descent on the validation videos (mean video AP over the three difficulties,
the seed-0 heads; the proposal selection is the same for every arm and not tuned), then
fixed for every seed. The test videos are then scored once: AP, AP50, AR10, HOTA, DetA,
AssA, LocA, IDF1, ID switches, the per-frame and oracle-association ceilings, and a paired
bootstrap 95 % interval over test videos of graph matching minus the best baseline (the
seed-averaged metric per resample). Writes ``experiments/results/association.json`` and
``association.md``; ``--shipped`` scores a checkpoint's own heads and stored tracker
settings instead (``experiments/results/shipped.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from experiments.association_arms import Arm, track_cached, tracker_config
from experiments.association_data import ROOT, cached, sets
from experiments.association_stats import (
    Bootstrap,
    MarginalRecorder,
    interval,
    oracle_results,
    per_frame_ap,
)
from gmpvis.eval import evaluate, evaluate_all
from gmpvis.eval.tracking_metrics import fragmentation
from gmpvis.infer import load_model
from gmpvis.train.heads import train_embed_head, train_gm_head

RESULTS = ROOT / "experiments" / "results"
THRESHOLD_GRID = {
    "graph": ("match_threshold", [0.01, 0.03, 0.1, 0.2, 0.35, 0.5]),
    "cosine": ("cosine_threshold", [0.1, 0.2, 0.3, 0.5, 0.7]),
    "iou": ("iou_threshold", [0.01, 0.03, 0.05, 0.1, 0.2, 0.35]),
}
SHARED_GRID = {
    "birth_threshold": [0.05, 0.1, 0.2, 0.3],
    "confirm_hits": [1, 2, 3],
    "max_missing": [2, 5, 10, 15],
}
METRICS = ("AP", "AP50", "AR10", "HOTA", "DetA", "AssA", "LocA", "IDF1", "id_switches")
# from gmpvis.eval.tracking_metrics.fragmentation: where the switches leave the objects
FRAGMENTATION = ("tracks_per_instance", "covering_tracks_mean", "followed_at_50", "followed_at_75")
BASELINES = ("cosine", "contrastive cosine", "motion IoU")
HEAD_KEYS = ("embed_head.", "gm_head.")  # what stage 2 replaces
GRAPH = "graph matching"


def build_arms(cfg, model, heads_videos, seeds) -> dict[str, list[Arm]]:
    """Every arm, one entry per training seed (untrained arms have one)."""
    arms = {
        "cosine": [Arm("cosine", "cosine", use_queries=True)],
        "motion IoU": [Arm("motion IoU", "iou")],
        "graph matching, end to end": [
            Arm("graph matching, end to end", "graph", gm_head=model.gm_head)
        ],
        "contrastive cosine": [],
        GRAPH: [],
        "graph matching, lambda = 0": [],
    }
    for s in seeds:
        tic = time.perf_counter()
        emb = train_embed_head(cfg, heads_videos, s)
        gm = train_gm_head(cfg, heads_videos, emb, s)
        gm0 = train_gm_head(cfg, heads_videos, emb, s, lam=0.0)
        arms["contrastive cosine"].append(Arm("contrastive cosine", "cosine", s, emb))
        arms[GRAPH].append(Arm(GRAPH, "graph", s, emb, gm))
        arms["graph matching, lambda = 0"].append(
            Arm("graph matching, lambda = 0", "graph", s, emb, gm0)
        )
        lam = float(gm.lam)
        print(f"heads of seed {s}: {time.perf_counter() - tic:.0f} s (learned lambda {lam:.3f})")
    return arms


def tune(arm: Arm, cfg, val: list, ids, passes: int = 1) -> tuple[dict, list]:
    """Coordinate descent over the arm's threshold and the shared tracker knobs (``passes``
    rounds), maximising the mean validation AP; -> (best overrides, the trace)."""
    name, grid = THRESHOLD_GRID[arm.association]
    space = {name: grid, **SHARED_GRID}
    embeds = [arm.embeddings(videos) for _, videos in val]
    best = {k: getattr(cfg.tracker, k) for k in space}
    seen: dict[tuple, float] = {}
    trace = []

    def score(over: dict) -> float:
        key = tuple(sorted(over.items()))
        if key not in seen:
            tcfg = tracker_config(cfg.tracker, arm, **over)
            aps = [
                evaluate(gt, track_cached(arm, videos, e, tcfg, ids))["AP"]
                for (gt, videos), e in zip(val, embeds, strict=True)
            ]
            seen[key] = float(np.mean(aps))
            trace.append({**over, "val_AP": seen[key]})
        return seen[key]

    for _ in range(passes):
        for k, values in space.items():
            scores = {v: score({**best, k: v}) for v in values}
            best[k] = max(scores, key=lambda v: (scores[v], -values.index(v)))
    return best, trace


def test_metrics(arm: Arm, cfg, gt, videos, ids) -> tuple[dict, list]:
    results = track_cached(
        arm, videos, arm.embeddings(videos), tracker_config(cfg.tracker, arm), ids
    )
    m = evaluate_all(gt, results)
    frag = fragmentation(gt, results)
    return {k: m[k] for k in METRICS} | {k: frag[k] for k in FRAGMENTATION} | {
        "tracks": len(results)
    }, results


def summarise(rows: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each metric."""
    out = {}
    for k in (*METRICS, *FRAGMENTATION):
        vals = [r[k] for r in rows]
        out[k] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "seeds": vals}
    return out


def markdown(report: dict) -> str:
    lines = []
    if "sinkhorn_marginal_error" in report:
        e = report["sinkhorn_marginal_error"]
        lines += [
            f"Sinkhorn ({e['iterations']} iterations) on the tracker's {e['graphs']} graphs of "
            f"the hard test set: largest row/column mass error {e['max']:.1e} (median "
            f"{e['median']:.1e}, 99th percentile {e['p99']:.1e}).",
            "",
        ]
    for set_name, block in report["test"].items():
        c = block["ceilings"]
        lines += [
            f"### {set_name} ({block['videos']} videos x {block['frames']} frames)",
            "",
            f"Ceilings: per-frame AP {c['per_frame']['AP']:.3f} (AP50 "
            f"{c['per_frame']['AP50']:.3f}), oracle association AP {c['oracle']['AP']:.3f} "
            f"(AP50 {c['oracle']['AP50']:.3f}, AssA {c['oracle']['AssA']:.3f}).",
            "",
            "| arm | seeds | AP | AP50 | HOTA | DetA | AssA | IDF1 | ID switches |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for arm, s in block["arms"].items():
            cells = [f"{s[k]['mean']:.3f} +- {s[k]['std']:.3f}" if len(s[k]["seeds"]) > 1
                     else f"{s[k]['mean']:.3f}" for k in ("AP", "AP50", "HOTA", "DetA", "AssA",
                                                           "IDF1")]  # fmt: skip
            sw = s["id_switches"]["mean"]
            lines.append(
                f"| {arm} | {len(s['AP']['seeds'])} | " + " | ".join(cells) + f" | {sw:.0f} |"
            )
        if "bootstrap" in block:
            b = block["bootstrap"]
            lines += ["", f"Graph matching minus {b['baseline']} (paired bootstrap over test "
                      f"videos, {b['resamples']} resamples, seed-averaged):"]  # fmt: skip
            for k in ("AP", "AssA", "HOTA"):
                d = b[k]
                lines.append(
                    f"- {k}: {d['mean']:+.3f}, 95 % CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
                )
            lines.append(f"- ID switches: {b['id_switch_change']:+.1%}")
        lines.append("")
    return "\n".join(lines)


def ceilings(gt: dict, videos, tracker, ids) -> dict:
    """The per-frame (detection) and oracle-association ceilings of one set's proposals."""
    linked = oracle_results(gt, videos, tracker, ids)
    oracle = evaluate_all(gt, linked)
    followed = fragmentation(gt, linked)["followed_at_50"]
    return {
        "per_frame": per_frame_ap(gt, videos, tracker, ids),
        "oracle": {k: oracle[k] for k in ("AP", "AP50", "HOTA", "AssA")}
        | {"followed_at_50": followed},
    }


def recompute_ceilings(args, data: dict, cfg, ids) -> dict:
    """``--ceilings-only``: an earlier report's ceilings computed again (same caches)."""
    out = Path(args.out)
    report = json.loads(out.read_text())
    for set_name, block in report["test"].items():
        gt, videos = data[set_name]
        block["ceilings"] = ceilings(gt, videos, cfg.tracker, ids)
        print(set_name, block["ceilings"])
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"rewrote {out} and its .md")
    return report


def score_shipped(args, detector, data: dict, ids) -> dict:
    """The shipped checkpoint (its heads and its stored tracker settings, untouched) on the
    test sets, against the same ceilings; its detector must be the benchmark's."""
    model, cfg, _ = load_model(args.shipped, overrides=args.overrides)
    det = {k: v for k, v in detector.state_dict().items() if not k.startswith(HEAD_KEYS)}
    mine = model.state_dict()
    if any(not torch.equal(v, mine[k]) for k, v in det.items()):
        raise ValueError(f"{args.shipped}: its detector is not {args.detector}'s")
    tracker = dataclasses.asdict(cfg.tracker)
    stored = {k: tracker[k] for k in ("match_threshold", *SHARED_GRID)}
    arm = Arm("shipped checkpoint", "graph", None, model.embed_head, model.gm_head, stored)
    report = {"checkpoint": args.shipped, "detector": args.detector, "tracker": tracker}
    for d in ("easy", "medium", "hard"):
        gt, videos = data[f"test_{d}"]
        metrics, _ = test_metrics(arm, cfg, gt, videos, ids)
        c = ceilings(gt, videos, cfg.tracker, ids)
        report[f"test_{d}"] = metrics | {
            "oracle_AP": c["oracle"]["AP"],
            "oracle_followed_at_50": c["oracle"]["followed_at_50"],
            "per_frame_AP": c["per_frame"]["AP"],
            "AP_over_oracle": metrics["AP"] / max(c["oracle"]["AP"], 1e-9),
        }
        print(d, {k: round(v, 3) for k, v in report[f"test_{d}"].items()})
    out = RESULTS / "shipped.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return report


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detector", default="outputs/stage1/checkpoint_latest.pth")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--test-videos", type=int, default=48)
    p.add_argument("--val-videos", type=int, default=24)
    p.add_argument("--heads-videos", type=int, default=64)
    p.add_argument("--passes", type=int, default=1, help="coordinate-descent rounds of tuning")
    p.add_argument("--cache-dir", default="outputs/association")
    p.add_argument("--out", default=str(RESULTS / "association.json"))
    p.add_argument(
        "--shipped", help="only score this checkpoint (stage 2 of the recipe) on the test sets"
    )
    p.add_argument(
        "--ceilings-only",
        action="store_true",
        help="recompute the ceilings of the report in --out (nothing else runs)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="config overrides of the detector's stored config (e.g. model.sinkhorn_iters=20)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tic = time.perf_counter()
    model, cfg, ids = load_model(args.detector, overrides=args.overrides)
    tag = Path(args.detector).parent.name
    all_sets = sets(args.test_videos, args.val_videos, args.heads_videos)
    cache_dir = Path(args.cache_dir)
    data = {n: cached(vs, model, cfg, cache_dir, tag) for n, vs in all_sets.items()}
    if args.shipped:
        return score_shipped(args, model, data, ids)
    if args.ceilings_only:
        return recompute_ceilings(args, data, cfg, ids)
    heads_videos = [v for n, (_, vids) in data.items() if n.startswith("heads_") for v in vids]
    arms = build_arms(cfg, model, heads_videos, args.seeds)
    val = [data[f"val_{d}"] for d in ("easy", "medium", "hard")]
    tuned = {}
    for name, seeds in arms.items():
        t0 = time.perf_counter()
        best, trace = tune(seeds[0], cfg, val, ids, args.passes)
        for arm in seeds:
            arm.tracker = best
        tuned[name] = {"tracker": best, "trace": trace}
        print(f"tuned {name}: {best} (val AP {max(r['val_AP'] for r in trace):.3f}, "
              f"{time.perf_counter() - t0:.0f} s)")  # fmt: skip
    report = {
        "detector": args.detector,
        "overrides": args.overrides,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sets": {n: vars(vs) for n, vs in all_sets.items()},
        "seeds": args.seeds,
        "tuning": {
            "passes": args.passes,
            "grid": {**{k: v for k, v in THRESHOLD_GRID.items()}, **SHARED_GRID},
        },
        "tuned": tuned,
        "test": {},
    }
    for d in ("medium", "hard", "easy"):
        vs = all_sets[f"test_{d}"]
        gt, videos = data[f"test_{d}"]
        block = {"videos": vs.videos, "frames": vs.frames, "arms": {}}
        results_of = {}
        for name, seeds in arms.items():
            rows = []
            for arm in seeds:
                metrics, results = test_metrics(arm, cfg, gt, videos, ids)
                rows.append(metrics)
                results_of.setdefault(name, []).append(results)
            block["arms"][name] = summarise(rows)
        block["ceilings"] = ceilings(gt, videos, cfg.tracker, ids)
        if d == "hard":  # Sinkhorn convergence on the tracker's graphs, seed-0 head
            arm = arms[GRAPH][0]
            recorder = MarginalRecorder(arm.gm_head)
            probe = Arm(arm.name, "graph", arm.seed, arm.embed_head, recorder, arm.tracker)
            test_metrics(probe, cfg, gt, videos, ids)
            report["sinkhorn_marginal_error"] = {
                "iterations": cfg.model.sinkhorn_iters,
                **recorder.summary(),
            }
        if d in ("medium", "hard"):
            base = max(BASELINES, key=lambda n: block["arms"][n]["AP"]["mean"])
            boot = Bootstrap(gt, args.resamples)
            g = [boot.samples(r) for r in results_of[GRAPH]]
            b = [boot.samples(r) for r in results_of[base]]
            bs = {"baseline": base, "resamples": args.resamples}
            for k in ("AP", "AssA", "HOTA"):
                bs[k] = interval(np.mean([x[k] for x in g], 0), np.mean([x[k] for x in b], 0))
            bs["full_set_check"] = {
                "graph": [x["full"] for x in g],
                "baseline": [x["full"] for x in b],
            }
            sw_g = block["arms"][GRAPH]["id_switches"]["mean"]
            sw_b = block["arms"][base]["id_switches"]["mean"]
            bs["id_switch_change"] = (sw_g - sw_b) / max(sw_b, 1e-9)
            block["bootstrap"] = bs
        report["test"][f"test_{d}"] = block
        print(markdown({"test": {f"test_{d}": block}}))
    report["wall_s"] = time.perf_counter() - tic
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out} ({report['wall_s'] / 60:.1f} min)")
    return report


if __name__ == "__main__":
    main()
