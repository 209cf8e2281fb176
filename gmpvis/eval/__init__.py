"""YouTube-VIS video AP evaluator and results writer."""

from gmpvis.eval.results import (
    GroundTruth,
    Instance,
    check_results,
    load_gt,
    load_results,
    make_result,
    read_json,
    write_results,
    write_submission,
)
from gmpvis.eval.ytvis_eval import YTVISEval, evaluate, format_table, video_iou

__all__ = [
    "GroundTruth",
    "Instance",
    "YTVISEval",
    "check_results",
    "evaluate",
    "format_table",
    "load_gt",
    "load_results",
    "make_result",
    "read_json",
    "video_iou",
    "write_results",
    "write_submission",
]
