"""``python -m gmpvis.eval --gt GT.json --results results.json [--out metrics.json]``.

Prints the metric table and the metrics as JSON; bad input exits with status 2 and one line
naming the file / video / result index / field at fault.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gmpvis.eval.ytvis_eval import evaluate, format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gmpvis.eval", description=__doc__)
    parser.add_argument("--gt", required=True, help="YouTube-VIS annotation JSON")
    parser.add_argument("--results", required=True, help="results.json or results.zip")
    parser.add_argument("--out", default=None, help="write the metrics JSON here")
    parser.add_argument("--workers", type=int, default=1, help="processes for the IoU stage")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        metrics = evaluate(args.gt, args.results, workers=args.workers)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    print(f"\n(evaluated in {time.perf_counter() - start:.2f} s)")
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
