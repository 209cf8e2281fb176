"""Every metric of a results file in one call: ``evaluate_all(gt, results) -> dict``.

The ground truth and the results are read and checked once; video AP (the official
YouTube-VIS evaluation), TrackEval's HOTA / DetA / AssA / LocA / IDF1 (class-averaged) and
the ID-switch count are computed from the same instances. This is what ``python -m
gmpvis.eval`` prints and ``infer.py --eval`` writes to ``metrics.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

from gmpvis.eval.results import GroundTruth, check_results, load_gt
from gmpvis.eval.trackeval_metrics import tracking_metrics
from gmpvis.eval.tracking_metrics import id_switches
from gmpvis.eval.ytvis_eval import YTVISEval

SUMMARY_KEYS = ("AP", "AP50", "AP75", "AR1", "AR10", "HOTA", "DetA", "AssA", "LocA", "IDF1",
                "id_switches")  # fmt: skip


def evaluate_all(
    gt: str | Path | dict | GroundTruth, results: str | Path | list, *, workers: int = 1
) -> dict:
    """All metrics of ``results`` (path to .json/.zip, or a list) against ``gt``.

    Returns the keys of :func:`gmpvis.eval.evaluate` (AP, AP50, AP75, APs/m/l, AR1, AR10,
    AR100, ARs/m/l, ``per_category``; -1 where undefined) plus HOTA, DetA, AssA, LocA,
    IDF1 in [0, 1] (TrackEval's YouTube-VIS class average, ``per_category_HOTA``),
    ``id_switches`` (int) and ``timings`` (seconds per stage). Bad input raises ValueError
    naming the file / video / result / field.
    """
    tic = time.perf_counter()
    truth = load_gt(gt)
    dts = check_results(results, truth)
    timings = {"load_s": time.perf_counter() - tic}
    tic = time.perf_counter()
    out = YTVISEval(truth, dts, workers=workers).run()
    timings["ap_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    out.update(tracking_metrics(truth, dts))
    timings["trackeval_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    out["id_switches"] = id_switches(truth, dts)["id_switches"]
    timings["id_switches_s"] = time.perf_counter() - tic
    out["timings"] = timings
    return out
