"""``build_*`` factories: the one place in ``gmpvis.model`` that reads a :class:`Config`.

Every module of the package takes plain arguments; these functions read ``cfg.model`` /
``cfg.loss`` and wire the modules together (DETR's ``build(args)``). Parts are built in a
fixed order: with the same torch seed the same config gives the same initial weights.
"""

from __future__ import annotations

from torch import nn

from gmpvis.association import GraphMatchingHead, GraphSpec, MemorySpec
from gmpvis.config import Config, TrackerConfig
from gmpvis.model.association_loss import AssociationLoss
from gmpvis.model.backbone import ResNetBackbone, TinyCNN
from gmpvis.model.criterion import SetCriterion
from gmpvis.model.decoder import DeformableDecoder
from gmpvis.model.encoder import DeformableEncoder, InputProjection
from gmpvis.model.gmpvis_model import GMPVIS
from gmpvis.model.heads import MLP, box_head, class_head
from gmpvis.model.matcher import HungarianMatcher
from gmpvis.model.seg_head import PixelDecoder
from gmpvis.model.temporal import TemporalAggregator


def build_backbone(cfg: Config) -> nn.Module:
    """``cfg.model.backbone`` -> :class:`TinyCNN` or :class:`ResNetBackbone`."""
    m = cfg.model
    if m.backbone == "tiny_cnn":
        return TinyCNN(m.tiny_channels, train=m.train_backbone)
    if m.backbone in ("resnet50", "resnet101"):
        return ResNetBackbone(m.backbone, m.frozen_bn, m.pretrained_weights, m.train_backbone)
    raise ValueError(f"model.backbone: unknown backbone {m.backbone!r}")


def build_gm_head(cfg: Config) -> GraphMatchingHead:
    """The graph matching association head of ``cfg.model`` (``gm_*``, ``sinkhorn_*``)."""
    m = cfg.model
    return GraphMatchingHead(
        embed_dim=m.embed_dim,
        hidden=m.gm_hidden,
        edge_dim=m.gm_edge_dim,
        iters=m.gm_iters,
        lam=m.gm_lambda,
        sinkhorn_iters=m.sinkhorn_iters,
        tau=m.sinkhorn_tau,
    )


def build_model(cfg: Config) -> GMPVIS:
    """The network of ``cfg.model`` (see :class:`GMPVIS`)."""
    m = cfg.model
    D, L = m.hidden_dim, m.num_feature_levels
    attn = dict(d_model=D, n_heads=m.nheads, d_ff=m.dim_feedforward, dropout=m.dropout)
    backbone = build_backbone(cfg)
    input_proj = InputProjection(backbone.channels, D, L)
    encoder = DeformableEncoder(
        num_layers=m.enc_layers,
        n_levels=L,
        n_points=m.enc_n_points,
        fused=m.fused_attention,
        **attn,
    )
    temporal = TemporalAggregator(
        num_tokens=m.num_memory_tokens,
        num_layers=m.temporal_layers,
        window=m.memory_frames,
        **attn,
    )
    cls_head = class_head(D, m.num_classes)
    bbox_head = box_head(D)
    mask_head = MLP(D, D, m.mask_dim, 3)
    embed_head = MLP(D, D, m.embed_dim, 2)
    decoder = DeformableDecoder(
        bbox_head,
        num_queries=m.num_queries,
        num_layers=m.dec_layers,
        n_levels=L,
        n_points=m.dec_n_points,
        fused=m.fused_attention,
        **attn,
    )
    pixel_decoder = PixelDecoder(
        D, m.mask_dim, input_proj.level_strides, backbone.channels, m.mask_stride
    )
    return GMPVIS(
        backbone=backbone,
        input_proj=input_proj,
        encoder=encoder,
        temporal=temporal,
        class_head=cls_head,
        mask_head=mask_head,
        embed_head=embed_head,
        decoder=decoder,
        pixel_decoder=pixel_decoder,
        gm_head=build_gm_head(cfg),
        aux_loss=m.aux_loss,
    )


def build_matcher(cfg: Config) -> HungarianMatcher:
    """The per-frame Hungarian matcher with the costs of ``cfg.loss``."""
    lc = cfg.loss
    return HungarianMatcher(
        cost_class=lc.cost_class,
        cost_bbox=lc.cost_bbox,
        cost_giou=lc.cost_giou,
        cost_mask=lc.cost_mask,
        cost_dice=lc.cost_dice,
        focal_alpha=lc.focal_alpha,
        focal_gamma=lc.focal_gamma,
    )


def build_memory_spec(tracker: TrackerConfig) -> MemorySpec:
    """How tracks keep their memory (``tracker.embed_history``, ``motion_*``): the tracker and
    the training graphs read this one spec."""
    return MemorySpec(tracker.embed_history, tracker.motion_pos_std, tracker.motion_vel_std)


def build_graph_spec(cfg: Config) -> GraphSpec:
    """How ``L_match``'s graphs are sampled (``loss.match_*``, ``tracker.max_missing``)."""
    lc = cfg.loss
    return GraphSpec(
        window=lc.match_window,
        max_gap=lc.match_max_gap,
        drop=lc.match_drop,
        spurious=lc.match_spurious,
        max_missed=cfg.tracker.max_missing,
    )


def build_association_loss(cfg: Config, gm_head: nn.Module | None) -> AssociationLoss:
    """``L_match`` and the contrastive term, on the graphs ``cfg.tracker`` would build."""
    lc, k = cfg.loss, cfg.tracker
    return AssociationLoss(
        gm_head if lc.match_weight > 0 else None,
        select=dict(threshold=k.det_threshold, nms_iou=k.nms_iou, limit=k.max_proposals),
        memory=build_memory_spec(k),
        graphs=build_graph_spec(cfg),
        contrastive_tau=lc.contrastive_tau,
    )


def build_criterion(cfg: Config, gm_head: nn.Module | None) -> SetCriterion:
    """Losses of ``cfg.loss``; ``gm_head`` is the model's (``model.gm_head``), trained by
    L_match, and may be None only with ``loss.match_weight=0``."""
    lc = cfg.loss
    weights = {
        "loss_ce": lc.cls_weight,
        "loss_bbox": lc.bbox_weight,
        "loss_giou": lc.giou_weight,
        "loss_mask": lc.mask_weight,
        "loss_dice": lc.dice_weight,
        "loss_match": lc.match_weight,
        "loss_contrastive": lc.contrastive_weight,
    }
    if lc.match_weight > 0 and gm_head is None:
        raise ValueError(
            "build_criterion: loss.match_weight > 0 needs the model's gm_head "
            "(build_criterion(cfg, model.gm_head), or set loss.match_weight=0)"
        )
    uses_association = lc.match_weight > 0 or lc.contrastive_weight > 0
    return SetCriterion(
        build_matcher(cfg),
        build_association_loss(cfg, gm_head) if uses_association else None,
        weights=weights,
        mask_stride=cfg.model.mask_stride,
        focal_alpha=lc.focal_alpha,
        focal_gamma=lc.focal_gamma,
    )
