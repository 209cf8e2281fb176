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

from gmpvis.data.clips import YTVISDataset, build_dataset, masks_to_boxes, sample_clip_indices
from gmpvis.data.collate import collate_clips
from gmpvis.data.inputs import (
    FrameFilesSource,
    VideoFileSource,
    VideoSource,
    open_inputs,
    read_annotation_videos,
    read_frame_folder,
    read_video_file,
)
from gmpvis.data.split import split_videos
from gmpvis.data.transforms import build_eval_transforms, build_train_transforms
from gmpvis.data.ytvis import AnnotationError, VideoInfo, YTVISAnnotations

__all__ = [
    "AnnotationError",
    "FrameFilesSource",
    "VideoFileSource",
    "VideoInfo",
    "VideoSource",
    "YTVISAnnotations",
    "YTVISDataset",
    "build_dataset",
    "build_eval_transforms",
    "build_train_transforms",
    "collate_clips",
    "masks_to_boxes",
    "open_inputs",
    "read_annotation_videos",
    "read_frame_folder",
    "read_video_file",
    "sample_clip_indices",
    "split_videos",
]
