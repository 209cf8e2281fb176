"""The training loader pads batches to size buckets under torch.compile (issue 10 item 8)."""

from types import SimpleNamespace

import pytest
import torch

from gmpvis.config import get_config
from gmpvis.train.trainer import Trainer


def _samples(sizes):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(2, 3, h, w, generator=g), {"id": i}) for i, (h, w) in enumerate(sizes)]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.compile=true"], (128, 128)),  # -1 -> 32 under compile
        (["train.compile=false"], (113, 101)),  # -1 -> batch max only
        (["train.compile=false", "data.size_divisibility=16"], (128, 112)),
        (["train.compile=true", "data.size_divisibility=0"], (113, 101)),
    ],
)
def test_training_batches_pad_to_the_configured_multiple(overrides, expected):
    cfg = get_config("tiny", overrides)
    samples = _samples([(113, 97), (100, 101)])
    batch = Trainer.collate(SimpleNamespace(cfg=cfg), samples)
    assert tuple(batch["frames"].shape) == (2, 2, 3, *expected)
    # the frames sit top-left, the rest is padding the mask marks
    assert torch.equal(batch["frames"][0, :, :, :113, :97], samples[0][0])
    assert batch["pad_mask"][1, :100, :101].logical_not().all()
    assert batch["pad_mask"][1].sum() == expected[0] * expected[1] - 100 * 101


def test_compile_buckets_cover_every_tiny_batch_with_one_size():
    cfg = get_config("tiny", ["train.compile=true"])
    shapes = {
        tuple(Trainer.collate(SimpleNamespace(cfg=cfg), _samples([(h, 128)]))["frames"].shape)
        for h in range(97, 129, 5)
    }
    assert shapes == {(1, 2, 3, 128, 128)}


def test_size_divisibility_below_minus_one_is_refused():
    with pytest.raises(ValueError, match="data.size_divisibility"):
        get_config("tiny", ["data.size_divisibility=-2"])
