"""Utilities: visualisation of video instance segmentations."""

from gmpvis.utils.visualize import (
    instances_from_annotations,
    overlay_frame,
    render_video,
    save_gif,
    save_mp4,
    save_png_frames,
    track_color,
)

__all__ = [
    "instances_from_annotations",
    "overlay_frame",
    "render_video",
    "save_gif",
    "save_mp4",
    "save_png_frames",
    "track_color",
]
