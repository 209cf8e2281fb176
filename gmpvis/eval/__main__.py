"""``python -m gmpvis.eval --gt GT.json --results results.json [--out metrics.json]``.

Prints video AP, TrackEval's HOTA / DetA / AssA / LocA / IDF1 and the ID switches
(:func:`gmpvis.eval.evaluate_all`) as a table and as JSON (``--out`` writes the JSON).
Bad input (a missing, unreadable or malformed file, an unwritable ``--out``) ends with one
``error: ...`` line naming the file / video / result index / field at fault, and exit
status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gmpvis.data.json_io import atomic_write
from gmpvis.eval.summary import evaluate_all
from gmpvis.eval.ytvis_eval import format_table


def _fail(exc: BaseException) -> int:
    print("error: " + " ".join(str(exc).split()), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gmpvis.eval", description=__doc__)
    parser.add_argument("--gt", required=True, help="YouTube-VIS annotation JSON")
    parser.add_argument("--results", required=True, help="results.json or results.zip")
    parser.add_argument("--out", default=None, help="write the metrics JSON here")
    parser.add_argument("--workers", type=int, default=1, help="processes for the IoU stage")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.workers < 1:
        return _fail(ValueError(f"--workers: expected an integer >= 1, got {args.workers}"))
    try:
        metrics = evaluate_all(args.gt, args.results, workers=args.workers)
    except (ValueError, OSError) as exc:
        return _fail(exc)
    timings = metrics.pop("timings")
    print(format_table(metrics))
    stages = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in timings.items())
    print(f"\n(evaluated in {time.perf_counter() - start:.2f} s: {stages})")
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        try:
            atomic_write(Path(args.out), text + "\n")
        except OSError as exc:
            return _fail(OSError(f"cannot write --out {args.out}: {exc}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
