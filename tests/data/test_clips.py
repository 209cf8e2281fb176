"""Training clips: frame sampling, instance selection, per-frame targets, batching, split."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gmpvis.data import (
    YTVISAnnotations,
    YTVISDataset,
    build_dataset,
    build_train_transforms,
    collate_clips,
    masks_to_boxes,
    sample_clip_indices,
    split_videos,
)
from gmpvis.data.transforms import IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize("length,clip_len,max_gap", [(30, 5, 3), (7, 7, 4), (9, 4, 1), (11, 3, 9)])
def test_sample_clip_indices_sorted_with_bounded_gaps(length, clip_len, max_gap):
    rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))
    starts, spans = set(), set()
    for _ in range(200):
        idx = sample_clip_indices(length, clip_len, max_gap, rng)
        assert idx.shape == (clip_len,) and idx.dtype == np.int64
        gaps = np.diff(idx)
        assert idx.min() >= 0 and idx.max() < length
        assert (gaps >= 1).all() and (gaps <= max_gap).all()
        starts.add(int(idx[0]))
        spans.add(int(idx[-1] - idx[0]))
    if length > (clip_len - 1) * max_gap + 1:
        assert len(starts) > 1  # random placement, not always the start
    if max_gap > 1 and length > clip_len:
        assert len(spans) > 1  # random gaps


def test_sample_clip_indices_short_video_repeats_every_frame():
    rng = np.random.default_rng(5)
    idx = sample_clip_indices(3, 7, 2, rng)
    assert idx.shape == (7,) and (np.diff(idx) >= 0).all()
    assert set(idx.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="max_gap"):
        sample_clip_indices(5, 3, 0, rng)


def test_masks_to_boxes_against_torchvision():
    import torchvision

    masks = torch.rand(3, 5, 23, 31) < 0.02
    masks[0, 0] = False
    masks[1, 2, 4:9, 7:20] = True
    boxes = masks_to_boxes(masks)
    assert boxes.shape == (3, 5, 4) and boxes.dtype == torch.float32
    assert (boxes[0, 0] == 0).all()
    flat, fb = masks.flatten(0, 1), boxes.flatten(0, 1)
    nonempty = flat.flatten(1).any(1)
    xyxy = torchvision.ops.masks_to_boxes(flat[nonempty]).float()
    xyxy[:, 2:] += 1  # torchvision gives the last pixel, we give the pixel edge
    exp = torchvision.ops.box_convert(xyxy, "xyxy", "cxcywh") / torch.tensor([31, 23, 31, 23])
    torch.testing.assert_close(fb[nonempty], exp, atol=1e-6, rtol=0)


def test_load_clip_keeps_instances_present_in_some_frame(tiny_dataset):
    ds = YTVISDataset(tiny_dataset.ann_file, tiny_dataset.frames_root)
    index = ds.ann
    for v in range(len(index)):
        info = index.video(v)
        idx = np.sort(np.random.default_rng(v).choice(info.length, 3, replace=False))
        frames, masks, anns = ds.load_clip(v, idx)
        assert frames.shape == (3, 3, info.height, info.width) and frames.dtype == torch.uint8
        exp_ids = [
            a["id"]
            for a in tiny_dataset.data["annotations"]
            if a["video_id"] == info.id and any(a["segmentations"][t] is not None for t in idx)
        ]
        assert index.ann_ids[anns].tolist() == sorted(exp_ids)
        assert masks.shape == (3, len(anns), info.height, info.width)
        for n, a in enumerate(anns):
            for k, t in enumerate(idx):
                exp = tiny_dataset.truth.get((int(index.ann_ids[a]), int(t)))
                got = masks[k, n].numpy()
                assert (not got.any()) if exp is None else (got == exp).all()
        path = os.path.join(tiny_dataset.frames_root, info.file_names[idx[1]])
        np.testing.assert_array_equal(
            frames[1].permute(1, 2, 0).numpy(), np.asarray(Image.open(path).convert("RGB"))
        )


def test_item_matches_contract(tiny_dataset):
    ds = YTVISDataset(tiny_dataset.ann_file, tiny_dataset.frames_root, clip_len=4, max_gap=2)
    assert ds.category_ids == sorted(c["id"] for c in tiny_dataset.data["categories"])
    for i in range(len(ds)):
        frames, tgt = ds[i]
        info = ds.ann.video(i)
        t, n = 4, len(tgt["labels"])
        assert frames.shape == (t, 3, info.height, info.width) and frames.dtype == torch.float32
        assert tgt["masks"].shape == (t, n, info.height, info.width)
        assert tgt["masks"].dtype == torch.bool and tgt["valid"].dtype == torch.bool
        assert tgt["boxes"].shape == (t, n, 4) and tgt["boxes"].dtype == torch.float32
        assert tgt["labels"].dtype == tgt["instance_ids"].dtype == torch.int64
        assert tgt["size"].tolist() == [info.height, info.width] == tgt["orig_size"].tolist()
        assert tgt["video_id"] == info.id and tgt["frame_indices"].shape == (t,)
        assert (tgt["valid"] == tgt["masks"].flatten(2).any(-1)).all()
        assert tgt["valid"].any(0).all()  # every kept instance is visible somewhere
        assert (tgt["boxes"][~tgt["valid"]] == 0).all()
        torch.testing.assert_close(tgt["boxes"], masks_to_boxes(tgt["masks"]))
        # normalisation undone gives the JPEG pixels
        k = int(tgt["frame_indices"][0])
        img = np.array(Image.open(os.path.join(tiny_dataset.frames_root, info.file_names[k])))
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        back = (frames[0] * std[:, None, None] + mean[:, None, None]) * 255
        assert (back.permute(1, 2, 0) - torch.from_numpy(img).float()).abs().max() < 1e-3
        by_id = {a["id"]: a for a in tiny_dataset.data["annotations"]}
        for lab, aid in zip(tgt["labels"].tolist(), tgt["instance_ids"].tolist(), strict=True):
            assert ds.category_ids[lab] == by_id[aid]["category_id"]


def test_sampling_follows_torch_seed(tiny_dataset):
    ds = YTVISDataset(
        tiny_dataset.ann_file,
        tiny_dataset.frames_root,
        clip_len=2,
        max_gap=3,
        transforms=build_train_transforms([24, 40], 64),
    )
    torch.manual_seed(3)
    a = [ds[1] for _ in range(4)]
    torch.manual_seed(3)
    b = [ds[1] for _ in range(4)]
    for (fa, ta), (fb, tb) in zip(a, b, strict=True):
        assert torch.equal(fa, fb) and torch.equal(ta["masks"], tb["masks"])
        assert torch.equal(ta["frame_indices"], tb["frame_indices"])
    assert len({tuple(t["frame_indices"].tolist()) + tuple(f.shape) for f, t in a}) > 1


def test_augmented_clip_is_consistent_and_collates(tiny_dataset):
    ds = YTVISDataset(
        tiny_dataset.ann_file,
        tiny_dataset.frames_root,
        clip_len=3,
        max_gap=2,
        transforms=build_train_transforms([33, 45, 57], 70),
    )
    samples = [ds[i] for i in range(len(ds))]
    for frames, tgt in samples:
        h, w = frames.shape[-2:]
        assert min(h, w) in (33, 45, 57) or max(h, w) <= 70
        assert tgt["masks"].shape[-2:] == (h, w) and tgt["size"].tolist() == [h, w]
    batch = collate_clips(samples, size_divisibility=8)
    b, t = len(samples), 3
    hp = max(s[0].shape[-2] for s in samples)
    wp = max(s[0].shape[-1] for s in samples)
    hp, wp = -(-hp // 8) * 8, -(-wp // 8) * 8
    assert batch["frames"].shape == (b, t, 3, hp, wp)
    for k, (frames, tgt) in enumerate(samples):
        h, w = frames.shape[-2:]
        assert torch.equal(batch["frames"][k, :, :, :h, :w], frames)
        assert (batch["frames"][k, :, :, h:] == 0).all() and (
            batch["frames"][k, ..., w:] == 0
        ).all()
        assert not batch["pad_mask"][k, :h, :w].any()
        assert batch["pad_mask"][k, h:].all() and batch["pad_mask"][k, :, w:].all()
        assert batch["targets"][k] is tgt
    with pytest.raises(ValueError, match="sample 1"):
        collate_clips([samples[0], (samples[1][0][:2], samples[1][1])])


def test_dataloader_workers(tiny_dataset):
    ds = YTVISDataset(
        tiny_dataset.ann_file,
        tiny_dataset.frames_root,
        clip_len=2,
        transforms=build_train_transforms([32], 48),
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_clips)
    ids = [t["video_id"] for batch in loader for t in batch["targets"]]
    assert sorted(ids) == sorted(int(v) for v in ds.ann.video_ids)


def test_split_is_deterministic_and_disjoint():
    ids = torch.randperm(500)[:97].tolist()
    train, hold = split_videos(ids, 0.1, seed=4)
    assert len(hold) == 10 and sorted(train + hold) == sorted(ids) and not set(train) & set(hold)
    assert split_videos(list(reversed(ids)), 0.1, seed=4) == (train, hold)  # order-free
    assert split_videos(ids, 0.1, seed=5)[1] != hold  # the seed matters
    assert split_videos([3, 9], 0.1)[1] != []  # at least one holdout video
    assert split_videos(ids, 0.0) == (sorted(ids), [])
    with pytest.raises(ValueError, match="holdout_fraction"):
        split_videos(ids, 1.0)
    with pytest.raises(ValueError, match="unique"):
        split_videos([1, 1, 2], 0.5)


def test_build_dataset_from_config(make_dataset):
    tiny = make_dataset(n_videos=6)
    cfg = SimpleNamespace(
        root=tiny.root,
        ann_file="",
        clip_len=2,
        max_gap=2,
        scales=[24, 32],
        max_size=48,
        holdout_fraction=0.34,
        split_seed=1,
    )
    train, hold = build_dataset(cfg, "train"), build_dataset(cfg, "holdout")
    assert len(train) == 4 and len(hold) == 2
    assert not set(train.ann.video_ids.tolist()) & set(hold.ann.video_ids.tolist())
    frames, tgt = hold[0]
    assert min(frames.shape[-2:]) == 32 or max(frames.shape[-2:]) == 48
    full = YTVISAnnotations.load(tiny.ann_file)
    assert len(build_dataset(cfg, "all")) == len(full)
    gt = hold.ann.to_dict()  # ground truth for a local AP
    assert {v["id"] for v in gt["videos"]} == set(hold.ann.video_ids.tolist())
    # an already-parsed index gives the same split without reading the file again
    again = build_dataset(cfg, "train", annotations=full)
    assert again.ann.video_ids.tolist() == train.ann.video_ids.tolist()


def test_retries_prefer_clips_with_visible_instances(make_dataset):
    # instances exist only in frame 0 of a 12-frame video; a 2-frame clip with max_gap 1
    # contains frame 0 with probability 1/11
    tiny = make_dataset(n_videos=1, lengths=(12, 12), null_prob=1.0)
    kw = dict(clip_len=2, max_gap=1)
    lazy = YTVISDataset(tiny.ann_file, tiny.frames_root, retries=0, **kw)
    keen = YTVISDataset(tiny.ann_file, tiny.frames_root, retries=100, **kw)
    lazy_n = [len(lazy[0][1]["labels"]) for _ in range(20)]
    keen_draws = [keen[0][1] for _ in range(20)]
    assert min(lazy_n) == 0
    assert all(len(t["labels"]) > 0 and t["frame_indices"][0] == 0 for t in keen_draws)


def test_video_without_instances_gives_empty_targets(make_dataset):
    import json

    tiny = make_dataset(n_videos=2, sizes=((37, 53), (48, 41)))
    data = json.loads(open(tiny.ann_file).read())
    empty_id = data["videos"][1]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["video_id"] != empty_id]
    with open(tiny.ann_file, "w") as f:
        json.dump(data, f)
    ds = YTVISDataset(
        tiny.ann_file, tiny.frames_root, clip_len=3, transforms=build_train_transforms([29, 35], 60)
    )
    for _ in range(4):
        frames, tgt = ds[1]
        h, w = frames.shape[-2:]
        assert tgt["video_id"] == empty_id
        assert tgt["masks"].shape == (3, 0, h, w) and tgt["boxes"].shape == (3, 0, 4)
        assert tgt["valid"].shape == (3, 0) and tgt["labels"].shape == (0,)
    batch = collate_clips([ds[0], ds[1]])
    assert batch["targets"][1]["masks"].shape[1] == 0
    plain = YTVISDataset(tiny.ann_file, tiny.frames_root, clip_len=2)  # no resize at all
    assert plain[1][1]["masks"].shape == (2, 0, 48, 41)
