"""train.py's guarantees, in process: one line and exit 2 on bad input (bad config, missing
data, directories, corrupt / crafted / inference-only checkpoints, a changed model config),
Ctrl-C saves and exits 130 (a second one stops at once), old checkpoints resume only with
--trust-checkpoint, and a resume drops the log records after its checkpoint and the
temporary files a kill left."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from gmpvis.checkpoint import load_checkpoint, temp_files
from gmpvis.train.trainer import Trainer

SHIPPED = Path(__file__).resolve().parents[2] / "gmpvis" / "assets" / "gmpvis_tiny.pth"
pytestmark = pytest.mark.usefixtures("one_thread")


def _argv(
    out: Path, dataset: Path, small: list[str], steps: int, *extra: str, flags: tuple = ()
) -> list[str]:
    """train.py's arguments: flags first, then the positional overrides."""
    head = ["--output-dir", str(out), "--max-steps", str(steps), *flags]
    return [*head, f"data.root={dataset}", *small, "data.num_workers=0", *extra]


def _error_line(capsys, prefix: str = "train.py: error: ") -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(prefix), err
    return last


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset, small) -> Path:
    """A 2-step run's output folder (checkpoint at step 2, log of steps 1-2)."""
    out = tmp_path_factory.mktemp("trained")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train.cli(_argv(out, dataset, small, 2)) == 0
    finally:
        torch.set_num_threads(before)
    return out


def _copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_bad_inputs_end_with_one_line_and_exit_2(tmp_path, dataset, small, capsys):
    def run(*extra: str, flags: tuple = ()) -> int:
        return train.cli(_argv(tmp_path / "out", dataset, small, 2, *extra, flags=flags))

    assert run("train.lr=-1") == 2
    assert "train.lr" in _error_line(capsys)
    assert run("data.synthetic=false", f"data.root={tmp_path / 'none'}") == 2
    assert "annotations.json not found" in _error_line(capsys)
    assert run(flags=("--resume", str(tmp_path))) == 2
    assert _error_line(capsys).endswith(f"{tmp_path} is a directory, not a checkpoint file")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(256))
    assert run(flags=("--resume", str(garbage))) == 2
    assert "garbage.pth is corrupt or not a torch file" in _error_line(capsys)
    marker = tmp_path / "marker"
    crafted = tmp_path / "crafted.pth"
    torch.save(
        {"model": {}, "step": 1, "config": _RunsShell(f"touch {shlex.quote(str(marker))}")}, crafted
    )
    assert run(flags=("--resume", str(crafted))) == 2
    line = _error_line(capsys)
    assert "crafted.pth" in line and "--trust-checkpoint" in line and not marker.exists()


def test_resume_from_inference_only_checkpoint_is_a_clear_error(tmp_path, dataset, small, capsys):
    assert train.cli(_argv(tmp_path, dataset, small, 2, flags=("--resume", str(SHIPPED)))) == 2
    line = _error_line(capsys)
    assert "gmpvis_tiny.pth is an inference-only checkpoint" in line
    assert "start a fresh run" in line


def test_changed_model_config_names_the_fields(tmp_path, dataset, small, trained, capsys):
    out = _copy_run(trained, tmp_path / "run")
    extra = ("model.num_queries=7", "model.dim_feedforward=40")
    assert train.cli(_argv(out, dataset, small, 3, *extra, flags=("--resume", "auto"))) == 2
    line = _error_line(capsys)
    assert "model.num_queries: checkpoint 6, now 7" in line
    assert "model.dim_feedforward: checkpoint 32, now 40" in line
    assert "hidden_dim" not in line  # only the fields that differ


def test_resume_drops_later_log_records_and_orphaned_temp_files(
    tmp_path, dataset, small, trained, capsys
):
    out = _copy_run(trained, tmp_path / "run")
    log = out / "log.jsonl"
    # what a kill after logging steps 3-4 (not checkpointed) and mid-write of a line leaves
    with log.open("a") as f:
        for step in (3, 4):
            f.write(json.dumps({"step": step, "kind": "train", "stale": True}) + "\n")
        f.write('{"step": 5, "kind": "tr')
    orphan = out / ".checkpoint_latest.pth.k1ll3d.tmp"
    orphan.write_bytes(os.urandom(1024))
    old = os.umask(0o027)
    try:
        assert train.cli(_argv(out, dataset, small, 3, flags=("--resume", "auto"))) == 0
    finally:
        os.umask(old)
    assert "resumed from" in capsys.readouterr().out
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert not any(r.get("stale") for r in records)
    assert temp_files(out / "checkpoint_latest.pth") == [] and not orphan.exists()
    ckpt = out / "checkpoint_latest.pth"
    assert load_checkpoint(ckpt)["step"] == 3
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o640  # the umask's, not mkstemp's 0600


def _signal_after(monkeypatch, step: int, times: int) -> None:
    """Send SIGINT to this process ``times`` times right after optimisation step ``step``."""
    original = Trainer.train_step

    def train_step(self, batch):
        logs = original(self, batch)
        if self.step == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)  # the handler runs before kill returns
        return logs

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_ctrl_c_saves_the_step_and_exits_130(tmp_path, dataset, small, monkeypatch, capsys):
    _signal_after(monkeypatch, step=2, times=1)
    sigterm = signal.getsignal(signal.SIGTERM)
    argv = _argv(tmp_path, dataset, small, 5, "train.ckpt_every=1000")
    assert train.cli(argv) == 130
    ckpt = tmp_path / "checkpoint_latest.pth"
    line = _error_line(capsys, "train.py: stopped by SIGINT after step 2; checkpoint saved to")
    assert str(ckpt) in line
    assert load_checkpoint(ckpt)["step"] == 2  # saved by the signal: ckpt_every is 1000
    # the process's handlers are back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is sigterm


def test_second_ctrl_c_stops_at_once_keeping_the_last_checkpoint(
    tmp_path, dataset, small, monkeypatch, capsys
):
    _signal_after(monkeypatch, step=2, times=2)
    assert train.cli(_argv(tmp_path, dataset, small, 5)) == 130
    line = _error_line(capsys, "train.py: stopped by SIGINT at step 2; nothing saved")
    assert "earlier checkpoints are intact" in line
    assert load_checkpoint(tmp_path / "checkpoint_latest.pth")["step"] == 1


def test_old_format_checkpoint_resumes_only_with_trust(tmp_path, dataset, small, trained, capsys):
    out = _copy_run(trained, tmp_path / "run")
    ckpt = out / "checkpoint_latest.pth"
    state = load_checkpoint(ckpt)
    rng = state["rng"]
    py, npy = rng["python"], rng["numpy"]
    keys = np.asarray(npy["keys"], dtype=np.uint32)
    rng["python"] = (py["version"], tuple(py["state"]), py["gauss_next"])
    rng["numpy"] = (npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    torch.save(state, ckpt)  # as an older gmpvis wrote it
    argv = _argv(out, dataset, small, 3, flags=("--resume", "auto"))
    assert train.cli(argv) == 2
    assert "--trust-checkpoint" in _error_line(capsys)
    assert train.cli(["--trust-checkpoint", *argv]) == 0
    assert load_checkpoint(ckpt)["step"] == 3  # and it is written in the safe format now
