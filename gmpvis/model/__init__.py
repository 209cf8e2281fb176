"""GMP-VIS model. Modules take plain arguments; the ``build_*`` factories read the config:

``model = build_model(cfg)``; ``criterion = build_criterion(cfg, model.gm_head)``.
"""

from __future__ import annotations

from gmpvis.association import GraphMatchingHead
from gmpvis.model.build import (
    build_backbone,
    build_criterion,
    build_gm_head,
    build_matcher,
    build_model,
)
from gmpvis.model.criterion import SetCriterion
from gmpvis.model.gmpvis_model import GMPVIS
from gmpvis.model.matcher import HungarianMatcher

__all__ = [
    "GMPVIS",
    "GraphMatchingHead",
    "HungarianMatcher",
    "SetCriterion",
    "build_backbone",
    "build_criterion",
    "build_gm_head",
    "build_matcher",
    "build_model",
]
