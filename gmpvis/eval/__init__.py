"""YouTube-VIS evaluation: video AP, TrackEval's HOTA family and ID switches; results I/O.

``evaluate_all(gt, results)`` gives every metric at once (``python -m gmpvis.eval``);
``evaluate`` video AP alone.
"""

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
from gmpvis.eval.summary import evaluate_all
from gmpvis.eval.ytvis_eval import YTVISEval, evaluate, format_table, video_iou

__all__ = [
    "GroundTruth",
    "Instance",
    "YTVISEval",
    "check_results",
    "evaluate",
    "evaluate_all",
    "format_table",
    "load_gt",
    "load_results",
    "make_result",
    "read_json",
    "video_iou",
    "write_results",
    "write_submission",
]
