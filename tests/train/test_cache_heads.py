"""Cached detector outputs and the association heads trained on them (stage 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from gmpvis.association import GraphMatchingHead, GraphSpec, MemorySpec, collate_graphs, match_loss
from gmpvis.association import sample_graph as sample
from gmpvis.config import TrackerConfig, get_config
from gmpvis.model.heads import MLP
from gmpvis.train.cache import CachedFrame, CachedVideo, cache_videos, match_objects
from gmpvis.train.heads import embed_videos, fit_embed_head, fit_gm_head, train_embed_head

H = W = 32


def rle(y0: int, x0: int, h: int = 8, w: int = 8) -> dict:
    m = np.zeros((H, W), np.uint8)
    m[y0 : y0 + h, x0 : x0 + w] = 1
    return mask_utils.encode(np.asfortranarray(m))


def test_match_objects_hungarian_threshold_and_duplicates():
    objects = [rle(0, 0), rle(16, 16)]
    proposals = [rle(0, 1), rle(0, 0), None, rle(16, 20), rle(24, 0)]
    gt_ids, dup_ids = match_objects(proposals, [7, 9], objects)
    # the exact copy wins object 7, the shifted one duplicates it; object 9 is covered at IoU
    # 32/96 < 0.5 by proposal 3 (not matched); proposal 4 covers nothing; 2 is not cached
    assert gt_ids.tolist() == [-1, 7, -1, -1, -1]
    assert dup_ids.tolist() == [7, -1, -1, -1, -1]
    assert match_objects([None, None], [7], objects[:1])[0].tolist() == [-1, -1]


def moving_video(rng: np.random.Generator, objects: int, frames: int, E: int, D: int):
    """Objects at fixed speeds with distinct decoder states; queries shuffled per frame."""
    pos = rng.uniform(0.2, 0.8, (objects, 2))
    vel = rng.uniform(-0.03, 0.03, (objects, 2))
    state = rng.normal(size=(objects, D))
    video = CachedVideo(1, H, W)
    Nq = objects + 2
    for t in range(frames):
        perm = rng.permutation(Nq)
        boxes = torch.rand(Nq, 4) * 0.1 + 0.05
        queries = torch.randn(Nq, D)
        gt = torch.full((Nq,), -1, dtype=torch.long)
        logits = torch.full((Nq, 3), -4.0)
        for k in range(objects):
            q = int(perm[k])
            c = pos[k] + vel[k] * t
            boxes[q] = torch.tensor([c[0], c[1], 0.1, 0.1])
            queries[q] = torch.from_numpy(state[k] + 0.3 * rng.normal(size=D)).float()
            gt[q], logits[q, 0] = k, 3.0
        video.frames.append(
            CachedFrame(logits, boxes, queries.half(), torch.zeros(Nq, E), [None] * Nq, gt,
                        torch.full((Nq,), -1, dtype=torch.long))
        )  # fmt: skip
    return video


def test_contrastive_embedding_head_learns_identities_across_query_switches():
    rng = np.random.default_rng(0)
    videos = [moving_video(rng, 4, 8, 8, 16) for _ in range(6)]
    torch.manual_seed(0)
    head = MLP(16, 16, 8, 2)
    losses = fit_embed_head(head, videos, steps=60, lr=3e-3, seed=0, videos_per_step=4)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    # same object in another frame (another query) is closer than any other object
    emb = embed_videos(head, videos[:1])[0]
    f0, f5 = videos[0].frames[0], videos[0].frames[5]
    a = torch.nn.functional.normalize(emb[0][f0.gt_ids >= 0], dim=-1)
    b = torch.nn.functional.normalize(emb[5][f5.gt_ids >= 0], dim=-1)
    ids_a, ids_b = f0.gt_ids[f0.gt_ids >= 0], f5.gt_ids[f5.gt_ids >= 0]
    best = (a @ b.T).argmax(1)
    assert torch.equal(ids_b[best], ids_a)


def test_graph_matching_head_training_lowers_l_match_on_the_trackers_graphs():
    rng = np.random.default_rng(1)
    videos = [moving_video(rng, 4, 10, 8, 16) for _ in range(4)]
    embeds = [[f.queries.float() for f in v.frames] for v in videos]
    tracker = TrackerConfig(det_threshold=0.5)
    spec = GraphSpec(max_gap=3)

    def held_out_loss(head) -> float:
        records = [[f.record(e, tracker) for f, e in zip(v.frames, ve, strict=True)]
                   for v, ve in zip(videos, embeds, strict=True)]  # fmt: skip
        g_rng = np.random.default_rng(99)
        graphs = [sample(records[i % 4], 1 + i % 9, g_rng, MemorySpec(), spec) for i in range(32)]
        graphs = [g for g in graphs if g.memories]
        tracks, props, rows, cols = collate_graphs(graphs, torch.device("cpu"))
        with torch.no_grad():
            return match_loss(head(tracks, props), rows, cols)[0].item()

    torch.manual_seed(0)
    head = GraphMatchingHead(embed_dim=16, iters=1, sinkhorn_iters=10)
    before = held_out_loss(head)
    fit_gm_head(head, videos, embeds, tracker, spec, steps=40, lr=3e-3, seed=0, graphs_per_step=8)
    assert held_out_loss(head) < 0.8 * before


@pytest.mark.slow
def test_cache_videos_of_a_generated_dataset(tmp_path):
    from gmpvis.data.synthetic import generate_dataset
    from gmpvis.eval import read_json
    from gmpvis.model import build_model

    cfg = get_config("tiny", ["data.scales=64", "data.max_size=64"])
    ann = generate_dataset(tmp_path, 2, num_frames=3, height=64, width=64, difficulty="easy")
    torch.manual_seed(0)
    model = build_model(cfg)
    videos = cache_videos(model, cfg, read_json(ann), str(tmp_path / "JPEGImages"), min_score=0)
    assert [len(v.frames) for v in videos] == [3, 3]
    f = videos[0].frames[0]
    Nq = cfg.model.num_queries
    assert f.queries.shape == (Nq, cfg.model.hidden_dim) and f.embeds.shape[0] == Nq
    assert all(r is not None and r["size"] == [64, 64] for r in f.rles)  # min_score 0
    assert model.training  # the cache left the model's mode alone
    # a cached frame feeds the tracker with its RLEs and the training graphs with its ids
    assert len(f.proposals().rles(torch.tensor([0, 1]))) == 2
    assert train_embed_head(cfg, videos, seed=0, steps=2) is not None
