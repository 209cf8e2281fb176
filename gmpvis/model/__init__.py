"""GMP-VIS model: ``build_model(cfg)`` and ``build_criterion(cfg)``."""

from __future__ import annotations

from torch import nn

from gmpvis.model.criterion import SetCriterion
from gmpvis.model.gmpvis_model import GMPVIS
from gmpvis.model.matcher import HungarianMatcher


def build_model(cfg) -> GMPVIS:
    """The network of ``cfg.model`` (see :class:`GMPVIS`)."""
    return GMPVIS(cfg)


def build_criterion(cfg) -> nn.Module:
    """Losses of ``cfg.loss`` (see :class:`SetCriterion`)."""
    return SetCriterion(cfg)


__all__ = ["GMPVIS", "HungarianMatcher", "SetCriterion", "build_criterion", "build_model"]
