"""Rank-0 logging: a JSON-lines file, optional TensorBoard, and a tqdm progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm


class RunLogger:
    """Appends one JSON object per record to ``<output_dir>/log.jsonl``.

    Only rank 0 writes; other ranks get a silent logger. The file is opened in append mode
    so that a resumed run continues the same log.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        enabled: bool = True,
        tensorboard: bool = False,
        total_steps: int = 0,
        initial_step: int = 0,
    ) -> None:
        self.enabled = enabled
        self.output_dir = Path(output_dir)
        self._file = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._file = (self.output_dir / "log.jsonl").open("a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is an optional extra
                raise RuntimeError(
                    "--tensorboard needs the optional extra: pip install 'gmpvis[tensorboard]'"
                ) from exc
            self._tb = SummaryWriter(self.output_dir / "tensorboard")
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
