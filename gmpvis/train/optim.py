"""AdamW with a lower backbone learning rate, and a warmup + step-decay schedule."""

from __future__ import annotations

import torch
from torch import nn


def build_optimizer(
    model: nn.Module, *, lr: float, lr_backbone: float, weight_decay: float
) -> torch.optim.AdamW:
    """Two parameter groups: ``backbone.*`` at ``lr_backbone`` (skipped when 0: frozen), the
    rest at ``lr``. Norm weights and biases take no weight decay (DETR practice)."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_backbone = name.startswith("backbone.") or ".backbone." in name
        if is_backbone and lr_backbone <= 0:
            param.requires_grad_(False)
            continue
        group_lr = lr_backbone if is_backbone else lr
        decay = 0.0 if param.ndim <= 1 else weight_decay
        groups.setdefault((group_lr, decay), []).append(param)
    param_groups = [
        {"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()
    ]
    return torch.optim.AdamW(param_groups, lr=lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, lr_drop_steps: list[int]
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_steps``, then x0.1 at each step in ``lr_drop_steps``."""
    drops = sorted(lr_drop_steps)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        return warm * 0.1 ** sum(step >= d for d in drops)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
