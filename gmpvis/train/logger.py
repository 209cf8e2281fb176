"""Rank-0 logging: a JSON-lines file, optional TensorBoard, and a tqdm progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from gmpvis.data.json_io import atomic_write


class RunLogger:
    """Appends one JSON object per record to ``<output_dir>/log.jsonl``.

    Only rank 0 writes; other ranks get a silent logger. The file is opened in append mode
    so that a resumed run continues the same log; ``drop_after=step`` (a resume from that
    step) first removes the records of later steps, which the resumed run logs again, and any
    line cut short by a kill.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        enabled: bool = True,
        tensorboard: bool = False,
        total_steps: int = 0,
        initial_step: int = 0,
        drop_after: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.output_dir = Path(output_dir)
        self._file = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / "log.jsonl"
        if drop_after is not None and path.is_file():
            drop_records_after(path, drop_after)
        self._file = path.open("a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is an optional extra
                raise RuntimeError(
                    "--tensorboard needs the optional extra: pip install 'gmpvis[tensorboard]'"
                ) from exc
            # purge_step: TensorBoard hides the events of the steps that are logged again
            purge = drop_after + 1 if drop_after is not None else None
            self._tb = SummaryWriter(self.output_dir / "tensorboard", purge_step=purge)
        self._bar = tqdm(total=total_steps, initial=initial_step, dynamic_ncols=True)
        self._t0 = time.perf_counter()

    def log(self, step: int, kind: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def progress(self, step: int, postfix: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)

    def write(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def drop_records_after(path: Path, step: int) -> int:
    """Rewrite ``path`` (atomically) without the records of steps after ``step`` and without
    lines that are not JSON objects (a write cut short); returns how many were dropped."""
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", 0)) <= step
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        atomic_write(path, "".join(kept))
    return dropped
