"""Synthetic YouTube-VIS videos: textured shapes that move, occlude, leave and re-enter.

``generate_video`` builds one video in memory; ``generate_dataset`` writes a real YouTube-VIS
dataset (JPEG frames + ``annotations.json``), ``ensure_dataset`` reuses a complete one or
writes it again; ``python -m gmpvis.data.synthetic --help``.
"""

from gmpvis.data.synthetic.scene import (
    DIFFICULTIES,
    Difficulty,
    SyntheticVideo,
    generate_video,
    get_difficulty,
)
from gmpvis.data.synthetic.shapes import CATEGORIES, Category
from gmpvis.data.synthetic.writer import (
    dataset_problem,
    ensure_dataset,
    generate_dataset,
    video_annotations,
)

__all__ = [
    "CATEGORIES",
    "DIFFICULTIES",
    "Category",
    "Difficulty",
    "SyntheticVideo",
    "dataset_problem",
    "ensure_dataset",
    "generate_dataset",
    "generate_video",
    "get_difficulty",
    "video_annotations",
]
