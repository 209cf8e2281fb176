"""TrackMemory: advance_to / update order, missed frames, embedding history, motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gmpvis.association import MemorySpec, TrackMemory
from gmpvis.association.motion import BoxKalman

SPEC = MemorySpec(history=3, pos_std=0.05, vel_std=0.02)


def _box(t: int) -> list[float]:
    return [0.2 + 0.03 * t, 0.5 - 0.01 * t, 0.1 + 0.002 * t, 0.15]


def test_advance_to_predicts_once_per_frame_and_never_backwards():
    mem = TrackMemory(4, torch.randn(6), _box(0), SPEC)
    ref = BoxKalman(_box(0), pos_std=SPEC.pos_std, vel_std=SPEC.vel_std)
    assert (mem.frame, mem.last_seen, mem.missed, mem.hits) == (4, 4, 0, 1)
    mem.advance_to(4)  # already there: no prediction
    np.testing.assert_array_equal(mem.motion.cov, ref.cov)
    mem.advance_to(7)
    for _ in range(3):
        ref.predict()
    np.testing.assert_array_equal(mem.motion.mean, ref.mean)
    np.testing.assert_array_equal(mem.motion.cov, ref.cov)
    assert (mem.frame, mem.last_seen, mem.missed, mem.hits) == (7, 4, 3, 1)
    mem.advance_to(5)  # an earlier frame changes nothing
    assert mem.frame == 7
    np.testing.assert_array_equal(mem.motion.cov, ref.cov)


def test_update_advances_then_corrects():
    e0, e1 = torch.randn(6), torch.randn(6)
    mem = TrackMemory(0, e0, _box(0), SPEC)
    mem.update(3, e1, torch.tensor(_box(3)))  # a tensor box is accepted as well
    ref = BoxKalman(_box(0), pos_std=SPEC.pos_std, vel_std=SPEC.vel_std)
    for _ in range(3):
        ref.predict()
    ref.update(torch.tensor(_box(3)).tolist())  # the float32 box the memory saw
    np.testing.assert_allclose(mem.motion.mean, ref.mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mem.motion.cov, ref.cov, rtol=1e-12, atol=1e-18)
    assert (mem.frame, mem.last_seen, mem.missed, mem.hits) == (3, 3, 0, 2)
    mem.advance_to(4)
    assert mem.missed == 1  # 1 = seen the frame before
    box = mem.box()
    assert box.dtype == torch.float32 and box.shape == (4,)
    torch.testing.assert_close(box, torch.from_numpy(mem.motion.box).float())


def test_node_embedding_is_the_mean_of_the_last_history_embeddings():
    embeds = [torch.randn(5) for _ in range(6)]
    mem = TrackMemory(0, embeds[0], _box(0), SPEC)
    torch.testing.assert_close(mem.embed(), embeds[0])
    mem.update(1, embeds[1], _box(1))
    torch.testing.assert_close(mem.embed(), (embeds[0] + embeds[1]) / 2)
    for t in range(2, 6):
        mem.update(t, embeds[t], _box(t))
    torch.testing.assert_close(mem.embed(), torch.stack(embeds[3:]).mean(0))
    assert mem.hits == 6 and len(mem.embeds) == SPEC.history
    mem.advance_to(9)  # prediction does not touch the embeddings
    torch.testing.assert_close(mem.embed(), torch.stack(embeds[3:]).mean(0))


@pytest.mark.parametrize("seen", [[0, 1, 2, 3, 4, 5], [0, 2, 5, 6], [1, 6]])
def test_one_by_one_or_through_gaps_gives_the_same_memory(seen):
    """Advancing frame by frame between sightings (the tracker, which calls ``advance_to``
    every frame) and jumping straight to the next sighting (the training graphs) are the same
    memory."""
    gen = torch.Generator().manual_seed(len(seen))
    embeds = {t: torch.randn(4, generator=gen) for t in seen}
    step = TrackMemory(seen[0], embeds[seen[0]], _box(seen[0]), SPEC)
    jump = TrackMemory(seen[0], embeds[seen[0]], _box(seen[0]), SPEC)
    for t in range(seen[0] + 1, 9):
        step.advance_to(t)
        if t in embeds:
            step.update(t, embeds[t], _box(t))
            jump.update(t, embeds[t], _box(t))
    jump.advance_to(8)
    np.testing.assert_array_equal(step.motion.mean, jump.motion.mean)
    np.testing.assert_array_equal(step.motion.cov, jump.motion.cov)
    assert (step.frame, step.last_seen, step.missed, step.hits) == (
        jump.frame,
        jump.last_seen,
        jump.missed,
        jump.hits,
    )
    assert step.missed == 8 - seen[-1] and step.hits == len(seen)
    torch.testing.assert_close(step.embed(), jump.embed(), rtol=0, atol=0)
