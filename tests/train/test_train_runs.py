"""train.py end to end on a very small synthetic dataset: SIGKILL + resume and SIGTERM +
resume are exact, and DDP over 2 gloo processes keeps the ranks' parameters identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gmpvis.checkpoint import load_checkpoint, temp_files

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6


def free_port() -> int:
    """A TCP port free now (a fixed one collides with concurrent runs)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), GMPVIS_KERNELS="torch")
    env.pop("TRITON_INTERPRET", None)
    return env


def _train_cmd(out: Path, data: Path, small: list[str], steps: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "--output-dir",
        str(out),
        "--max-steps",
        str(steps),
        f"data.root={data}",
        *small,
        *extra,
    ]


def _final_model(out: Path) -> tuple[dict[str, torch.Tensor], int]:
    # load_checkpoint reads with weights_only=True: the trainer writes nothing else
    state = load_checkpoint(out / "checkpoint_latest.pth")
    return state["model"], state["step"]


def _train_steps(out: Path) -> list[int]:
    lines = (out / "log.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["kind"] == "train"]


def _assert_same_model(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(got[name], value), f"{name} differs after resume"


@pytest.fixture(scope="module")
def straight(tmp_path_factory, dataset, small) -> dict[str, torch.Tensor]:
    """The uninterrupted run's final weights."""
    out = tmp_path_factory.mktemp("straight")
    subprocess.run(
        _train_cmd(out, dataset, small, STEPS), env=_env(), check=True, timeout=600,
        capture_output=True,
    )  # fmt: skip
    model, step = _final_model(out)
    assert step == STEPS and _train_steps(out) == list(range(1, STEPS + 1))
    return model


def _wait_until(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if ready():
                return
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # a file not there yet, or half written
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"training ended (rc {proc.returncode}) before {what}")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, dataset, small, straight):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(killed, dataset, small, STEPS),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = killed / "checkpoint_latest.pth"
    _wait_until(proc, lambda: load_checkpoint(ckpt)["step"] >= 2, "it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert 2 <= killed_at < STEPS

    resumed = subprocess.run(
        _train_cmd(killed, dataset, small, STEPS, "--resume", "auto"),
        env=_env(),
        check=True,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert f"at step {killed_at}" in resumed.stdout
    got, step = _final_model(killed)
    assert step == STEPS
    _assert_same_model(got, straight)
    # the steps logged after the checkpoint (before the kill) are not repeated
    assert _train_steps(killed) == list(range(1, STEPS + 1))
    assert temp_files(ckpt) == []


def test_sigterm_saves_then_resume_matches_uninterrupted_run(tmp_path, dataset, small, straight):
    """SIGTERM mid-run: one line, exit 143, a checkpoint of the last completed step (the
    regular ones are off), and resuming from it gives the uninterrupted run's weights."""
    out = tmp_path / "term"
    cmd = _train_cmd(out, dataset, small, STEPS, "train.ckpt_every=1000")
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_until(proc, lambda: max(_train_steps(out)) >= 2, "the signal")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    stopped_at = load_checkpoint(out / "checkpoint_latest.pth")["step"]
    assert 2 <= stopped_at < STEPS
    assert last == (
        f"train.py: stopped by SIGTERM after step {stopped_at}; checkpoint saved to "
        f"{out / 'checkpoint_latest.pth'} (continue with --resume auto)"
    )
    assert _train_steps(out) == list(range(1, stopped_at + 1))

    resumed = subprocess.run(
        cmd + ["--resume", "auto"], env=_env(), timeout=600, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {stopped_at}" in resumed.stdout
    got, step = _final_model(out)
    assert step == STEPS
    _assert_same_model(got, straight)
    assert _train_steps(out) == list(range(1, STEPS + 1))


WORKER = """
import sys, torch, torch.distributed as dist
sys.argv = sys.argv[:1]
import train
trainer = train.main({argv!r})
rank = int(__import__("os").environ["RANK"])
torch.save(trainer.model.state_dict(), {out!r} + f"/rank{{rank}}.pt")
"""


def test_ddp_two_cpu_processes_keep_identical_parameters(tmp_path, dataset, small):
    out = tmp_path / "ddp"
    argv = _train_cmd(out, dataset, small, 3)[2:]
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(argv=argv, out=str(tmp_path)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        str(script),
    ]
    subprocess.run(cmd, env=_env(), check=True, timeout=600, cwd=ROOT)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    init = load_checkpoint(out / "checkpoint_latest.pth")
    assert init["step"] == 3
    moved = 0
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"{name} differs between ranks"
    # the ranks trained (parameters differ from a fresh model with the same seed)
    from gmpvis.config import get_config
    from gmpvis.model import build_model

    cfg = get_config("tiny", small + [f"data.root={dataset}", "model.num_classes=5"])
    torch.manual_seed(cfg.train.seed)
    fresh = build_model(cfg).state_dict()
    moved = sum(not torch.equal(fresh[k], r0[k]) for k in r0 if r0[k].is_floating_point())
    assert moved > 10
