"""Optimizer groups (backbone LR, no decay on norms/biases) and the LR schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gmpvis.train.optim import build_optimizer, build_scheduler


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)


def _lrs(opt):
    return sorted(
        (g["lr"], g["weight_decay"], sum(p.numel() for p in g["params"])) for g in opt.param_groups
    )


def test_backbone_gets_its_own_lr_and_norms_no_decay():
    opt = build_optimizer(Net(), lr=1e-3, lr_backbone=1e-4, weight_decay=0.05)
    assert _lrs(opt) == [
        (1e-4, 0.0, 4 + 4 + 4),  # conv bias, bn weight, bn bias
        (1e-4, 0.05, 4 * 3 * 3 * 3),  # conv weight
        (1e-3, 0.0, 2),  # head bias
        (1e-3, 0.05, 8),  # head weight
    ]


def test_zero_backbone_lr_freezes_backbone():
    net = Net()
    opt = build_optimizer(net, lr=1e-3, lr_backbone=0.0, weight_decay=0.0)
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 10


def test_warmup_then_step_decay():
    opt = torch.optim.SGD([nn.Parameter(torch.randn(2))], lr=1.0)
    sched = build_scheduler(opt, warmup_steps=4, lr_drop_steps=[6, 8])
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[5] == pytest.approx(1.0) and lrs[6] == pytest.approx(0.1)
    assert lrs[8] == pytest.approx(0.01)
