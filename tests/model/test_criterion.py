"""Hungarian matcher, set losses and the association terms (L_match, contrastive)."""

import math

import pytest
import torch
from torch import nn

from gmpvis.config import set_field
from gmpvis.model import build_criterion, build_matcher, build_model
from gmpvis.model.matcher import resize_target_masks

QUERY_OF = (7, 2)  # query that predicts instance 0 / instance 1 in the "perfect" outputs


def test_resize_target_masks_pads_and_averages():
    masks = torch.zeros(2, 1, 13, 10, dtype=torch.bool)
    masks[0, 0, 4:8, 0:4] = True  # exactly cell (1, 0) at stride 4
    masks[1, 0, 0:2, 0:4] = True  # half of cell (0, 0)
    out = resize_target_masks(masks, (4, 3), 4)
    assert out.shape == (2, 1, 4, 3) and out.dtype == torch.float32
    expected0 = torch.zeros(4, 3)
    expected0[1, 0] = 1
    torch.testing.assert_close(out[0, 0], expected0)
    assert out[1, 0, 0, 0] == 0.5 and out[1, 0].sum() == 0.5


def perfect_outputs(targets, cfg, stride, hw, noise=0.0):
    """Outputs whose query QUERY_OF[n] predicts instance n exactly in every frame."""
    B, T = len(targets), targets[0]["boxes"].shape[0]
    Q, C, E = cfg.model.num_queries, cfg.model.num_classes, cfg.model.embed_dim
    logits = torch.full((B, T, Q, C), -8.0)
    boxes = torch.rand(B, T, Q, 4) * 0.3 + 0.2
    masks = torch.full((B, T, Q, *hw), -8.0) + noise * torch.randn(B, T, Q, *hw)
    embeds = torch.zeros(B, T, Q, E)
    for b, tgt in enumerate(targets):
        soft = resize_target_masks(tgt["masks"], hw, stride)
        for t in range(T):
            for n in range(tgt["labels"].numel()):
                if not tgt["valid"][t, n]:
                    continue
                q = QUERY_OF[n]
                logits[b, t, q, tgt["labels"][n]] = 8.0
                boxes[b, t, q] = tgt["boxes"][t, n]
                masks[b, t, q] = torch.where(soft[t, n] > 0.5, 8.0, -8.0)
                embeds[b, t, q, n] = 1.0  # one-hot identity (read by the dummy GM head)
    return {
        "pred_logits": logits,
        "pred_boxes": boxes,
        "pred_masks": masks,
        "pred_embeds": embeds,
    }


def test_matcher_finds_the_perfect_queries(tiny_cfg, batch_factory):
    frames, pad, targets = batch_factory(B=2, T=3, H=72, W=88)
    out = perfect_outputs(targets, tiny_cfg, 8, (9, 11))
    indices = build_matcher(tiny_cfg)(
        out, targets, [resize_target_masks(t["masks"], (9, 11), 8) for t in targets]
    )
    for b in range(2):
        for t in range(3):
            q, g = indices[b][t]
            visible = targets[b]["valid"][t].nonzero().flatten().tolist()
            assert sorted(g.tolist()) == visible  # the invisible instance is not matched
            assert all(QUERY_OF[gi] == qi for qi, gi in zip(q.tolist(), g.tolist(), strict=True))


def test_perfect_predictions_have_small_losses_and_total_is_weighted_sum(tiny_cfg, batch_factory):
    set_field(tiny_cfg, "loss.match_weight", 0.0)
    _, _, targets = batch_factory(B=2, T=3, H=72, W=88)
    crit = build_criterion(tiny_cfg, None)  # no L_match: no head needed
    perfect = perfect_outputs(targets, tiny_cfg, 8, (9, 11))
    losses = crit(perfect, targets)
    assert losses["loss_bbox"] < 1e-5 and losses["loss_giou"] < 1e-4
    # dice stays > 0: binary predictions vs soft (area-averaged) boundary cells
    assert losses["loss_dice"] < 0.35 and losses["loss_ce"] < 0.01
    # a random prediction is much worse
    rand = {
        k: torch.randn_like(v) if k != "pred_boxes" else torch.rand_like(v) * 0.5 + 0.2
        for k, v in perfect.items()
    }
    worse = crit(rand, targets)
    for k in ("loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_ce"):
        assert worse[k] > 3 * losses[k] + 1e-3, k
    w = tiny_cfg.loss
    expected = (
        w.cls_weight * worse["loss_ce"]
        + w.bbox_weight * worse["loss_bbox"]
        + w.giou_weight * worse["loss_giou"]
        + w.mask_weight * worse["loss_mask"]
        + w.dice_weight * worse["loss_dice"]
        + w.contrastive_weight * worse["loss_contrastive"]
    )
    torch.testing.assert_close(worse["loss"], expected)
    assert "loss_match" not in worse


class OneHotHead(nn.Module):
    """Dummy GM head: 0.9 where the one-hot identities of a track and a proposal agree, 0.1
    elsewhere; dustbin column 0.7 for tracks without a partner, dustbin row 0.6 for such
    proposals, 0.05 otherwise."""

    def forward(self, tracks, props):
        valid = tracks.mask[:, :, None] & props.mask[:, None, :]
        sim = (tracks.embeds @ props.embeds.transpose(1, 2) > 0.5) & valid
        S = 0.1 + 0.8 * sim.float()
        col = torch.where(sim.any(2, keepdim=True), 0.05, 0.7)
        row = torch.where(sim.any(1, keepdim=True), 0.05, 0.6)
        S = torch.cat([S, col], 2)
        return torch.cat([S, torch.cat([row, torch.ones_like(row[:, :, :1])], 2)], 1)


def _contrastive_by_formula(anchors: list[tuple[torch.Tensor, int]], tau: float) -> float:
    """Multi-positive InfoNCE, written out over (embedding, identity) anchors."""
    z = [e.double() / e.double().norm() for e, _ in anchors]
    total, count = 0.0, 0
    for i, (_, k) in enumerate(anchors):
        pos = [p for p, (_, kp) in enumerate(anchors) if kp == k and p != i]
        if not pos:
            continue
        denom = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(len(z)) if j != i)
        total -= sum(float(z[i] @ z[p]) / tau - math.log(denom) for p in pos) / len(pos)
        count += 1
    return total / count


def test_association_losses_on_the_trackers_graphs(tiny_cfg, batch_factory):
    """Perfect outputs, one-hot identity embeddings. With gap 1, no drops and no spurious
    tracks the graphs are fixed: at t = 1 both objects' tracks meet their proposals (2
    positives), at t = 2 object 1 has left (1 positive, its track to the dustbin), per clip.
    L_match = mean over positives + mean over dustbin entries (balanced)."""
    for key, value in [("match_max_gap", 1), ("match_drop", 0.0), ("match_spurious", 0)]:
        set_field(tiny_cfg, f"loss.{key}", value)
    _, _, targets = batch_factory(B=2, T=3, H=72, W=88)
    out = perfect_outputs(targets, tiny_cfg, 8, (9, 11))
    losses = build_criterion(tiny_cfg, OneHotHead())(out, targets)
    assert losses["loss_match"].item() == pytest.approx(-math.log(0.9) - math.log(0.7), rel=1e-5)
    anchors = [
        (out["pred_embeds"][b, t, QUERY_OF[n]], 100 * b + n)
        for b, tgt in enumerate(targets)
        for t in range(3)
        for n in range(2)
        if tgt["valid"][t, n]
    ]
    expected = _contrastive_by_formula(anchors, tiny_cfg.loss.contrastive_tau)
    assert losses["loss_contrastive"].item() == pytest.approx(expected, rel=1e-5)
    w = tiny_cfg.loss
    assert losses["loss"].item() == pytest.approx(
        sum(
            getattr(w, name) * losses[term].item()
            for name, term in [
                ("cls_weight", "loss_ce"),
                ("bbox_weight", "loss_bbox"),
                ("giou_weight", "loss_giou"),
                ("mask_weight", "loss_mask"),
                ("dice_weight", "loss_dice"),
                ("match_weight", "loss_match"),
                ("contrastive_weight", "loss_contrastive"),
            ]
        ),
        rel=1e-5,
    )


def test_match_loss_requires_gm_head(tiny_cfg):
    with pytest.raises(ValueError, match=r"gm_head.*loss\.match_weight=0"):
        build_criterion(tiny_cfg, None)
    set_field(tiny_cfg, "loss.match_weight", 0.0)
    crit = build_criterion(tiny_cfg, None)
    assert crit.association.gm_head is None  # the contrastive term only
    set_field(tiny_cfg, "loss.contrastive_weight", 0.0)
    assert build_criterion(tiny_cfg, None).association is None


def _keep_every_proposal(cfg):
    """Random weights give low scores: keep every proposal (the tracker's NMS still runs).
    Gap 1: in clips this short a longer sampled gap leaves the object without a track."""
    set_field(cfg, "tracker.det_threshold", 0.0)
    set_field(cfg, "loss.match_max_gap", 1)
    return cfg


def test_criterion_shares_the_model_head(tiny_cfg, batch_factory):
    """The head handed to the criterion is the model's: one set of parameters (as DDP sees
    a module wrapping both), trained by L_match, saved only with the model."""
    _keep_every_proposal(tiny_cfg)
    frames, pad, targets = batch_factory(B=1, T=2, H=48, W=56)
    model = build_model(tiny_cfg)
    crit = build_criterion(tiny_cfg, model.gm_head)
    assert crit.association.gm_head is model.gm_head
    both = nn.ModuleDict({"model": model, "criterion": crit})
    assert [id(p) for p in both.parameters()] == [id(p) for p in model.parameters()]
    before = model.gm_head.pair_linear.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    crit(model(frames, pad), targets)["loss_match"].backward()
    opt.step()
    assert not torch.equal(crit.association.gm_head.pair_linear.weight, before)
    with pytest.raises(ValueError, match="weights must name"):
        type(crit)(crit.matcher, None, weights={"loss_ce": 1.0}, mask_stride=8)


def test_association_losses_train_the_head_and_the_embeddings(tiny_cfg, batch_factory):
    _keep_every_proposal(tiny_cfg)
    frames, pad, targets = batch_factory(B=2, T=3, H=72, W=88)
    model = build_model(tiny_cfg)
    losses = build_criterion(tiny_cfg, model.gm_head)(model(frames, pad), targets)
    assert losses["loss_match"] > 0.05 and torch.isfinite(losses["loss_match"])
    assert losses["loss_contrastive"] > 0.05 and torch.isfinite(losses["loss_contrastive"])
    losses["loss_match"].backward(retain_graph=True)
    head = model.gm_head
    assert model.embed_head.layers[0].weight.grad.abs().sum() > 0
    assert head.pair_linear.weight.grad.abs().sum() > 0 and head.dustbin.grad.abs() > 0
    assert head.edge_geo.weight.grad.abs().sum() > 0  # the quadratic term is used
    assert head.log_lambda.grad.abs() > 0
    # boxes and scores only choose the graph: no gradient into the class head from L_match
    assert model.class_head.weight.grad is None or model.class_head.weight.grad.abs().sum() == 0
    model.zero_grad()
    losses["loss_contrastive"].backward()
    assert model.embed_head.layers[0].weight.grad.abs().sum() > 0
    assert head.pair_linear.weight.grad is None or head.pair_linear.weight.grad.abs().sum() == 0


def test_match_loss_is_zero_when_no_proposal_is_kept(tiny_cfg, batch_factory):
    set_field(tiny_cfg, "tracker.det_threshold", 1.0)  # no score reaches 1: nothing kept
    frames, pad, targets = batch_factory(B=2, T=3, H=48, W=56)
    model = build_model(tiny_cfg)
    losses = build_criterion(tiny_cfg, model.gm_head)(model(frames, pad), targets)
    assert losses["loss_match"].item() == 0.0 and torch.isfinite(losses["loss"])
    assert losses["loss_contrastive"] > 0  # matched queries are anchors, kept or not
    losses["loss"].backward()
    assert torch.isfinite(model.embed_head.layers[0].weight.grad).all()


@pytest.mark.parametrize("det_threshold", [None, 0.0])
def test_clip_without_instances(tiny_cfg, batch_factory, det_threshold):
    if det_threshold is not None:
        set_field(tiny_cfg, "tracker.det_threshold", det_threshold)
    frames, pad, targets = batch_factory(B=2, T=2, H=64, W=64)
    t = targets[1]
    targets[1] = dict(
        t,
        labels=t["labels"][:0],
        instance_ids=t["instance_ids"][:0],
        boxes=t["boxes"][:, :0],
        masks=t["masks"][:, :0],
        valid=t["valid"][:, :0],
    )
    model = build_model(tiny_cfg)
    losses = build_criterion(tiny_cfg, model.gm_head)(model(frames, pad), targets)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()


def test_target_count_mismatch(tiny_cfg, batch_factory):
    _, _, targets = batch_factory(B=2, T=2)
    out = perfect_outputs(targets, tiny_cfg, 8, (9, 11))
    with pytest.raises(ValueError, match="targets"):
        build_criterion(tiny_cfg, OneHotHead())(out, targets[:1])
