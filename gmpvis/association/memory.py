"""A track's memory: what association compares a new frame's proposals with.

One :class:`TrackMemory` per track holds its recent embeddings (the node embedding is their
mean), its box motion state (:class:`~gmpvis.association.motion.BoxKalman`) and when it was
last seen. The online tracker, the offline stitcher and the training graphs of ``L_match``
all drive it through the same two calls, in frame order: ``advance_to(t)`` (predict the
motion up to frame ``t``) and ``update(t, embed, box)`` (the track was seen at ``t``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from gmpvis.association.motion import BoxKalman


@dataclass(frozen=True)
class MemorySpec:
    """How memories are kept: ``history`` embeddings averaged, Kalman noise scales."""

    history: int = 5
    pos_std: float = 0.05
    vel_std: float = 0.02


class TrackMemory:
    """See the module docstring. ``embed [E]`` tensors, ``box`` ``(cx, cy, w, h)`` in [0, 1]."""

    def __init__(self, frame: int, embed: torch.Tensor, box, spec: MemorySpec) -> None:
        self.embeds: deque[torch.Tensor] = deque([embed], maxlen=spec.history)
        self.motion = BoxKalman(_as_list(box), pos_std=spec.pos_std, vel_std=spec.vel_std)
        self.frame = frame  # the frame the motion state refers to
        self.last_seen = frame
        self.hits = 1

    def advance_to(self, t: int) -> None:
        """Predict the motion forward to frame ``t`` (no-op when already there)."""
        while self.frame < t:
            self.motion.predict()
            self.frame += 1

    def update(self, t: int, embed: torch.Tensor, box) -> None:
        """The track was seen at frame ``t`` with this embedding and box."""
        self.advance_to(t)
        self.motion.update(_as_list(box))
        self.embeds.append(embed)
        self.last_seen = t
        self.hits += 1

    @property
    def missed(self) -> int:
        """Frames between the last sighting and the current frame (1 = seen the frame
        before)."""
        return self.frame - self.last_seen

    def embed(self) -> torch.Tensor:
        """Node embedding ``[E]``: the mean of the kept embeddings."""
        return torch.stack(list(self.embeds)).mean(0)

    def box(self) -> torch.Tensor:
        """Motion-predicted box at the current frame ``[4]`` float32."""
        return torch.from_numpy(self.motion.box).float()


def _as_list(box) -> list[float]:
    if isinstance(box, torch.Tensor):
        return box.detach().float().cpu().tolist()
    return [float(v) for v in box]
