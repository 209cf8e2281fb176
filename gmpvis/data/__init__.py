"""Datasets: YouTube-VIS / OVIS annotations, training clips, transforms, inference inputs.

Training::

    ann = YTVISAnnotations.load("ytvis/train.json", frames_root="ytvis/JPEGImages")
    train_ids, holdout_ids = split_videos(ann.video_ids, 0.1, seed=0)
    ds = YTVISDataset(ann, "ytvis/JPEGImages", clip_len=3, max_gap=3, video_ids=train_ids,
                      transforms=build_train_transforms([288, 320, 352], max_size=768))
    loader = DataLoader(ds, batch_size=2, num_workers=4, collate_fn=collate_clips)
    holdout_gt = ann.subset(holdout_ids).to_dict()  # ground truth for a local video AP

Inference: ``open_inputs(path, frames_root=None)`` takes an annotation file without
annotations (with ``frames_root``), a folder of frames, or a video file (PyAV extra).
"""

import importlib

# Exports load on first use (PEP 562), so that ``gmpvis.eval``, which needs only the
# format validators, does not import torch through the dataset classes.
_EXPORTS = {
    "YTVISDataset": "clips",
    "build_dataset": "clips",
    "masks_to_boxes": "clips",
    "sample_clip_indices": "clips",
    "collate_clips": "collate",
    "FrameFilesSource": "inputs",
    "VideoFileSource": "inputs",
    "VideoSource": "inputs",
    "open_inputs": "inputs",
    "read_annotation_videos": "inputs",
    "read_frame_folder": "inputs",
    "read_video_file": "inputs",
    "split_videos": "split",
    "build_eval_transforms": "transforms",
    "build_train_transforms": "transforms",
    "AnnotationError": "ytvis_format",
    "VideoInfo": "ytvis",
    "YTVISAnnotations": "ytvis",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gmpvis.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gmpvis.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
