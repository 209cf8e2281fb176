"""Arms of the association benchmark, run on cached model outputs through the one tracker.

Every arm sees the same proposals (the same cached detector outputs and proposal
selection) and the same tracker (:class:`~gmpvis.infer.OnlineTracker`: motion prediction,
tentative births, ``max_missing``); they differ only in the embeddings they read and the
association score:

* ``cosine``: decoder query states, embedding cosine (embedding-only, as MinVIS does);
* ``contrastive cosine``: the contrastively trained embedding head, embedding cosine;
* ``motion IoU``: IoU of the motion-predicted track box with the proposal box;
* ``graph matching``: the contrastive embeddings + motion through the graph matching head;
* ``graph matching, lambda = 0``: the same head trained without its quadratic term;
* ``graph matching, end to end``: the detector checkpoint's own heads (trained in train.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from gmpvis.association import build_associator
from gmpvis.config import TrackerConfig
from gmpvis.infer import OnlineTracker
from gmpvis.train.cache import CachedVideo
from gmpvis.train.heads import embed_videos


@dataclass
class Arm:
    """An association method; ``embeds[v][t]`` its embeddings of each cached frame (None:
    the cache's own), ``gm_head`` for ``graph``."""

    name: str
    association: str
    seed: int | None = None
    embed_head: nn.Module | None = None
    gm_head: nn.Module | None = None
    tracker: dict = field(default_factory=dict)  # tuned tracker overrides
    use_queries: bool = False

    def embeddings(self, videos: list[CachedVideo]) -> list[list[torch.Tensor]]:
        if self.use_queries:
            return [[f.queries.float() for f in v.frames] for v in videos]
        if self.embed_head is not None:
            return embed_videos(self.embed_head, videos)
        return [[f.embeds for f in v.frames] for v in videos]


def tracker_config(base: TrackerConfig, arm: Arm, **extra) -> TrackerConfig:
    return dataclasses.replace(base, association=arm.association, **{**arm.tracker, **extra})


@torch.no_grad()
def track_cached(
    arm: Arm,
    videos: list[CachedVideo],
    embeds: list[list[torch.Tensor]],
    tracker: TrackerConfig,
    category_ids: list[int],
) -> list[dict]:
    """YouTube-VIS results of ``arm`` on cached videos."""
    associate = build_associator(arm.association, arm.gm_head)
    results = []
    for video, video_embeds in zip(videos, embeds, strict=True):
        trk = OnlineTracker(associate, tracker)
        for frame, e in zip(video.frames, video_embeds, strict=True):
            trk.step(frame.proposals(e))
        results.extend(trk.results(video.video_id, len(video.frames), category_ids))
    return results
