"""The training loop: DDP, AMP, torch.compile, gradient clipping, checkpoints and resume.

One ``Trainer`` per process. Steps, not epochs, drive the run: the resumable sampler makes
batch ``s`` a pure function of (seed, s), and checkpoints hold model, optimizer,
scheduler, grad scaler, RNG states, step and config, so a run killed at any time and
resumed from its last checkpoint continues exactly as the uninterrupted run would.

SIGINT (Ctrl-C) and SIGTERM (a scheduler's pre-emption) end the step in progress, save a
checkpoint and raise :class:`TrainingInterrupted`; a second signal stops at once, keeping the
last saved checkpoint (writes are atomic).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from gmpvis.checkpoint import (
    LATEST,
    RESUME_KEYS,
    CheckpointError,
    capture_rng_state,
    find_resume_path,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    sweep_temp_files,
)
from gmpvis.config import Config, config_from_dict, config_to_dict
from gmpvis.data import collate_clips
from gmpvis.infer.predict import evaluate_videos
from gmpvis.model import build_criterion, build_model
from gmpvis.runtime import autocast
from gmpvis.train.distributed import DistInfo, all_reduce_mean, barrier
from gmpvis.train.logger import RunLogger
from gmpvis.train.optim import build_optimizer, build_scheduler
from gmpvis.train.sampler import ResumableBatchSampler, SeededDataset


def to_device(obj, device: torch.device):
    """Move tensors inside nested dicts / lists / tuples to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def to_float32(obj):
    """Half-precision tensors in nested outputs -> float32 (losses are computed in fp32)."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: to_float32(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_float32(v) for v in obj)
    return obj


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by ``signum`` after ``step`` (None: before the loop started);
    ``checkpoint``: the file saved then, None when nothing was saved (a second signal)."""

    def __init__(self, signum: int, step: int | None, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(signal.Signals(signum).name)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# data.size_divisibility=-1 under train.compile: at the tiny preset's 128 px every batch pads
# to 128 x 128 (one graph); at r50's scales a few buckets per scale
COMPILE_SIZE_DIVISIBILITY = 32
COMPILE_GRAPHS_PER_SCALE = 4  # padded long sides per short side allowed before eager fallback


def _worker_ignores_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT / SIGTERM to the main process: Ctrl-C and a
    scheduler signal the whole process group, and a worker dying of it would abort the main
    process (torch's SIGCHLD check) before it can save. Workers still end with the loader or
    when the main process is gone (torch's parent watchdog)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def model_config_diff(saved, now) -> list[str]:
    """``field: checkpoint value, now value`` for each ``model.*`` field that differs."""
    return [
        f"model.{name}: checkpoint {getattr(saved, name)!r}, now {getattr(now, name)!r}"
        for name in (f.name for f in dataclasses.fields(now))
        if getattr(saved, name) != getattr(now, name)
    ]


class ModelWithLoss(nn.Module):
    """``(frames, pad_mask, targets) -> losses``: forward under autocast, losses in fp32."""

    def __init__(self, model: nn.Module, criterion: nn.Module, autocast) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.autocast = autocast

    def forward(self, frames: torch.Tensor, pad_mask: torch.Tensor, targets: list[dict]):
        with self.autocast():
            outputs = self.model(frames, pad_mask)
        return self.criterion(to_float32(outputs), targets)


class Trainer:
    """Builds model, criterion, optimizer and data from ``cfg`` and runs ``cfg.train``."""

    def __init__(
        self,
        cfg: Config,
        dist_info: DistInfo,
        train_set,
        holdout=None,
        *,
        trust_checkpoint: bool = False,
    ) -> None:
        """``trust_checkpoint``: resume from a checkpoint that only full unpickling reads
        (written by an older gmpvis); a crafted file can run code then."""
        self.cfg = cfg
        self.dist = dist_info
        self.device = dist_info.device
        self.train_set = train_set
        self.holdout = holdout  # (annotation dict, video ids, frames root) for evaluation
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.model: nn.Module = build_model(cfg).to(self.device)
        self.criterion: nn.Module = build_criterion(cfg, self.model.gm_head).to(self.device)
        self.optimizer = build_optimizer(
            self.model,
            lr=cfg.train.lr,
            lr_backbone=cfg.train.lr_backbone,
            weight_decay=cfg.train.weight_decay,
        )
        self.scheduler = build_scheduler(
            self.optimizer,
            warmup_steps=cfg.train.warmup_steps,
            lr_drop_steps=list(cfg.train.lr_drop_steps),
        )
        amp = cfg.train.amp
        if amp == "fp16" and self.device.type != "cuda":
            raise ValueError("train.amp=fp16 needs a CUDA device (use bf16 or off on CPU)")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.step = 0
        self.output_dir = Path(cfg.train.output_dir)
        self.resumed = False
        self._saved_step: int | None = None
        self._signal: int | None = None
        if dist_info.is_main:
            removed = sweep_temp_files(self.output_dir / LATEST)
            if removed:
                names = ", ".join(p.name for p in removed)
                print(
                    f"removed orphaned temporary checkpoint file(s) in {self.output_dir}: {names}"
                )
        self._resume(trust_checkpoint)
        if cfg.train.compile:
            # in place: state_dict keys and DDP's parameters unchanged. Static shapes: batches
            # come in a few padded sizes (see collate), each gets its own graph; automatic
            # dynamic shapes failed inside Inductor on the second size (a symbolic stride order)
            self.model.compile(dynamic=False)
            # room for every size bucket: a graph per (scale, padded long side) and a margin
            limit = COMPILE_GRAPHS_PER_SCALE * len(cfg.data.scales)
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        # DDP wraps model + criterion: the criterion runs the graph matching head (L_match),
        # so every parameter use must happen inside the DDP module's forward.
        self.train_module: nn.Module = ModelWithLoss(self.model, self.criterion, self._autocast)
        if dist_info.distributed:
            self.train_module = DistributedDataParallel(
                self.train_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # e.g. aux heads without matched targets
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "step": self.step,
            "config": config_to_dict(self.cfg),
            "category_ids": list(getattr(self.train_set, "category_ids", [])),
        }

    def save(self) -> Path | None:
        """Rank 0 writes ``<output_dir>/checkpoint_latest.pth`` atomically."""
        if not self.dist.is_main:
            return None
        state = self.state_dict()
        path = save_checkpoint(self.output_dir / LATEST, state)
        self._saved_step = self.step
        return path

    def _resume(self, trust: bool) -> None:
        path = find_resume_path(self.cfg.train.resume, self.output_dir)
        if path is None:
            return
        state = load_checkpoint(path, map_location=self.device, trust=trust)
        missing = [k for k in RESUME_KEYS if k not in state]
        if missing:
            raise CheckpointError(
                f"checkpoint {path} is an inference-only checkpoint (no {', '.join(missing)}): "
                "it cannot resume a run. Use it with infer.py --checkpoint, or start a fresh "
                "run (without --resume / train.resume)"
            )
        try:
            saved = config_from_dict(state["config"])
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"checkpoint {path}: invalid config: {err}") from err
        diff = model_config_diff(saved.model, self.cfg.model)
        if diff:
            raise ValueError(
                f"checkpoint {path} was trained with a different model config ("
                + "; ".join(diff)
                + "): resume with the same preset and model overrides"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint {path} does not fit this run: {err}") from err
        try:
            restore_rng_state(state["rng"])
        except CheckpointError as err:
            raise CheckpointError(f"checkpoint {path}: {err}") from err
        self.step = self._saved_step = int(state["step"])
        self.resumed = True
        if self.dist.is_main:
            print(f"resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------ loop
    def _loader(self) -> DataLoader:
        t = self.cfg.train
        sampler = ResumableBatchSampler(
            len(self.train_set),
            t.batch_size,
            t.max_steps,
            seed=t.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start_step=self.step,
        )
        workers = self.cfg.data.num_workers
        return DataLoader(
            SeededDataset(self.train_set),
            batch_sampler=sampler,
            collate_fn=self.collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_ignores_stop_signals if workers > 0 else None,
        )

    def collate(self, samples: list) -> dict:
        """The training loader's batching: :func:`collate_clips` with ``data.size_divisibility``
        (-1: 32 under ``train.compile``, else 0)."""
        d = self.cfg.data.size_divisibility
        if d < 0:
            d = COMPILE_SIZE_DIVISIBILITY if self.cfg.train.compile else 0
        return collate_clips(samples, size_divisibility=d)

    def _autocast(self):
        return autocast(self.device, self.cfg.train.amp)

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimisation step; returns the (local) loss terms as floats."""
        self.model.train()
        batch = to_device(batch, self.device)
        losses = self.train_module(batch["frames"], batch["pad_mask"], batch["targets"])
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"step {self.step}: non-finite loss {loss.item()} "
                f"({ {k: float(v) for k, v in losses.items()} })"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(),
            self.cfg.train.clip_max_norm if self.cfg.train.clip_max_norm > 0 else math.inf,
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        logs = {k: float(v.detach()) for k, v in losses.items()}
        logs["grad_norm"] = float(grad_norm)
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        return logs

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame) -> None:
        if self._signal is not None:  # the second one: stop now, keep the last checkpoint
            raise TrainingInterrupted(signum, self.step, None)
        self._signal = signum

    def _install_signal_handlers(self) -> dict[int, object]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal.signal works only there; callers in threads keep the defaults
        return {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}

    def _stop_requested(self) -> int | None:
        """The pending stop signal; under DDP the ranks agree (max over ranks), so that every
        rank stops after the same step."""
        if not self.dist.distributed:
            return self._signal
        flag = torch.tensor([self._signal or 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def _stop(self, signum: int) -> None:
        """Save the completed step (unless it is saved already) and raise."""
        if self._saved_step != self.step:
            self.save()
            barrier()
        path = self.output_dir / LATEST if self._saved_step is not None else None
        raise TrainingInterrupted(signum, self.step, path)

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, float]:
        """Run to ``train.max_steps``; returns the last logged values. A stop signal raises
        :class:`TrainingInterrupted` after saving (see the module docstring)."""
        t = self.cfg.train
        logger = RunLogger(
            self.output_dir,
            enabled=self.dist.is_main,
            tensorboard=t.tensorboard,
            total_steps=t.max_steps,
            initial_step=self.step,
            drop_after=self.step if self.resumed else None,
        )
        last: dict[str, float] = {}
        window_start, window_samples = time.perf_counter(), 0
        previous = self._install_signal_handlers()
        try:
            batches = iter(self._loader())
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except Exception:
                    if self._signal is not None:  # a worker that did get the signal died
                        self._stop(self._signal)
                    raise
                logs = self.train_step(batch)
                window_samples += batch["frames"].shape[0] * self.dist.world_size
                if self.step % t.log_every == 0 or self.step == t.max_steps:
                    logs = all_reduce_mean(logs, self.device)
                    elapsed = time.perf_counter() - window_start
                    logs["clips_per_s"] = window_samples / max(elapsed, 1e-9)
                    window_start, window_samples = time.perf_counter(), 0
                    logger.log(self.step, "train", logs)
                    last = logs
                logger.progress(self.step, {"loss": logs["loss"]})
                # a signal after the last step changes nothing: the run ends and saves anyway
                if self.step < t.max_steps and (signum := self._stop_requested()) is not None:
                    self._stop(signum)
                if self.step % t.ckpt_every == 0 or self.step == t.max_steps:
                    self.save()
                    barrier()
                if self.holdout is not None and (
                    self.step % t.eval_every == 0 or self.step == t.max_steps
                ):
                    metrics = self.evaluate()
                    if metrics is not None:
                        logger.log(self.step, "eval", metrics)
                        logger.write(f"step {self.step}: holdout AP {metrics['AP']:.3f}")
                    barrier()
                    if self.step < t.max_steps and (signum := self._stop_requested()):
                        self._stop(signum)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._signal = None
            logger.close()
        return last

    def evaluate(self) -> dict[str, float] | None:
        """Video AP on the holdout split (rank 0; the others wait at a barrier)."""
        if not self.dist.is_main or self.holdout is None:
            return None
        gt, video_ids, frames_root = self.holdout
        metrics = evaluate_videos(self.model, self.cfg, gt, video_ids, frames_root)
        return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def default_num_threads() -> None:
    """Leave one thread per process when several share a CPU (torchrun on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
