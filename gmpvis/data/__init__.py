"""Datasets: YouTube-VIS / OVIS annotations, training clips, transforms, inference inputs."""

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
