"""Association heads trained on cached decoder states (a frozen detector underneath).

``fit_embed_head``: the instance embedding head, by the contrastive loss over the matched
proposals of several frames per video (each video's objects, look-alikes included, are each
other's negatives). ``fit_gm_head``: the graph matching head, by ``L_match`` on the graphs the
tracker builds (:func:`~gmpvis.association.sample_graph`, with the tracker's proposal
selection and memory update), the embeddings frozen. Both are pure functions of their seed.
"""

from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch
from torch import nn

from gmpvis.association import (
    GraphSpec,
    collate_graphs,
    contrastive_loss,
    match_loss,
    sample_graph,
)
from gmpvis.checkpoint import load_checkpoint, save_checkpoint
from gmpvis.config import Config, TrackerConfig, config_to_dict
from gmpvis.eval import read_json
from gmpvis.infer import load_model
from gmpvis.model.build import build_gm_head, build_graph_spec, build_memory_spec
from gmpvis.model.heads import MLP
from gmpvis.train.cache import CachedVideo, cache_videos


@torch.no_grad()
def embed_videos(embed_head: nn.Module, videos: list[CachedVideo]) -> list[list[torch.Tensor]]:
    """``embed_head(queries)`` of every frame: per video, per frame ``[Nq, E]``."""
    return [[embed_head(f.queries.float()) for f in v.frames] for v in videos]


def fit_embed_head(
    embed_head: nn.Module,
    videos: list[CachedVideo],
    *,
    steps: int = 400,
    lr: float = 1e-3,
    seed: int = 0,
    tau: float = 0.1,
    videos_per_step: int = 8,
    frames_per_video: int = 8,
) -> list[float]:
    """Train ``embed_head`` in place; returns the loss per step."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(embed_head.parameters(), lr=lr, weight_decay=1e-4)
    embed_head.train()
    losses = []
    for _ in range(steps):
        queries, ids = [], []
        for v in rng.choice(len(videos), size=min(videos_per_step, len(videos)), replace=False):
            video = videos[int(v)]
            ts = rng.choice(len(video.frames), size=min(frames_per_video, len(video.frames)))
            for t in np.unique(ts):
                frame = video.frames[int(t)]
                q = torch.nonzero(frame.gt_ids >= 0).flatten()
                queries.append(frame.queries[q].float())
                ids.append(frame.gt_ids[q] + int(v) * 1_000_000)  # objects of other videos differ
        loss = contrastive_loss(embed_head(torch.cat(queries)), torch.cat(ids), tau)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    embed_head.eval()
    return losses


def fit_gm_head(
    gm_head: nn.Module,
    videos: list[CachedVideo],
    embeds: list[list[torch.Tensor]],
    tracker: TrackerConfig,
    graphs: GraphSpec,
    *,
    steps: int = 400,
    lr: float = 1e-3,
    seed: int = 0,
    graphs_per_step: int = 32,
) -> list[float]:
    """Train ``gm_head`` in place on the tracker's graphs; returns the loss per step."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    memory = build_memory_spec(tracker)
    records = [
        [f.record(e, tracker) for f, e in zip(v.frames, ve, strict=True)]
        for v, ve in zip(videos, embeds, strict=True)
    ]
    opt = torch.optim.AdamW(gm_head.parameters(), lr=lr, weight_decay=1e-4)
    gm_head.train()
    losses = []
    for _ in range(steps):
        batch = []
        for _ in range(graphs_per_step * 4):  # some draws give an empty graph
            v = int(rng.integers(len(records)))
            t = int(rng.integers(1, len(records[v])))
            g = sample_graph(records[v], t, rng, memory, graphs)
            if g.memories and len(g.col_target):
                batch.append(g)
            if len(batch) == graphs_per_step:
                break
        if not batch:
            continue
        tracks, props, rows, cols = collate_graphs(batch, torch.device("cpu"))
        loss, _ = match_loss(gm_head(tracks, props), rows, cols)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gm_head.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    gm_head.eval()
    return losses


def train_embed_head(
    cfg: Config, videos: list[CachedVideo], seed: int, steps: int = 400
) -> nn.Module:
    """A fresh embedding head (the model's architecture) trained by the contrastive loss."""
    m = cfg.model
    torch.manual_seed(seed)
    head = MLP(m.hidden_dim, m.hidden_dim, m.embed_dim, 2)
    fit_embed_head(head, videos, steps=steps, seed=seed, tau=cfg.loss.contrastive_tau)
    return head


def train_gm_head(
    cfg: Config,
    videos: list[CachedVideo],
    embed_head: nn.Module,
    seed: int,
    steps: int = 400,
    lam: float | None = None,
) -> nn.Module:
    """A fresh graph matching head (initial quadratic weight ``lam``, default
    ``model.gm_lambda``; 0: none) trained by ``L_match`` over ``embed_head``'s embeddings."""
    head_cfg = copy.deepcopy(cfg)
    if lam is not None:
        head_cfg.model.gm_lambda = lam
    torch.manual_seed(seed)
    head = build_gm_head(head_cfg)
    spec = build_graph_spec(cfg)
    embeds = embed_videos(embed_head, videos)
    fit_gm_head(head, videos, embeds, cfg.tracker, spec, steps=steps, seed=seed)
    return head


def main(argv: list[str] | None = None) -> int:
    """``python -m gmpvis.train.heads``: a detector checkpoint + annotated videos -> the same
    checkpoint with association heads trained on the tracker's graphs."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--checkpoint", required=True, help="the (trained) detector checkpoint")
    p.add_argument("--ann", action="append", required=True, help="annotation file (repeatable)")
    p.add_argument("--frames-root", action="append", required=True, help="its JPEGImages")
    p.add_argument("--output", required=True, help="checkpoint to write (atomically)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embed-steps", type=int, default=400)
    p.add_argument("--gm-steps", type=int, default=400)
    p.add_argument("overrides", nargs="*", help="section.field=value, stored in the output")
    args = p.parse_args(argv)
    if len(args.ann) != len(args.frames_root):
        p.error("give one --frames-root per --ann")
    model, cfg, category_ids = load_model(args.checkpoint, overrides=args.overrides)
    videos = []
    for ann, root in zip(args.ann, args.frames_root, strict=True):
        videos += cache_videos(model, cfg, read_json(ann), root)
    print(f"cached {len(videos)} videos; training the heads (seed {args.seed})")
    embed_head = train_embed_head(cfg, videos, args.seed, args.embed_steps)
    gm_head = train_gm_head(cfg, videos, embed_head, args.seed, args.gm_steps)
    model.embed_head.load_state_dict(embed_head.state_dict())
    model.gm_head.load_state_dict(gm_head.state_dict())
    state = load_checkpoint(args.checkpoint)
    out = {
        "model": model.state_dict(),
        "config": config_to_dict(cfg),
        "step": state["step"],
        "category_ids": category_ids,
        "heads_seed": args.seed,
    }
    path = save_checkpoint(args.output, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
