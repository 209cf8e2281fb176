"""End-to-end: the tiny model overfits one synthetic batch on CPU; torch.compile runs."""

import pytest
import torch

from gmpvis.config import set_field
from gmpvis.model import build_criterion, build_model


def test_overfits_one_batch(tiny_cfg, batch_factory):
    set_field(tiny_cfg, "model.num_classes", 3)
    # association terms from the first step: every proposal kept (random weights score low),
    # gap 1 (a longer one leaves 3-frame clips without tracks)
    set_field(tiny_cfg, "tracker.det_threshold", 0.0)
    set_field(tiny_cfg, "loss.match_max_gap", 1)
    frames, pad, targets = batch_factory(B=2, T=3, H=64, W=72, num_classes=3)
    model = build_model(tiny_cfg)
    criterion = build_criterion(tiny_cfg, model.gm_head)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    history = []
    for _ in range(30):
        losses = criterion(model(frames, pad), targets)
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    expected_terms = {
        "loss",
        "loss_ce",
        "loss_bbox",
        "loss_giou",
        "loss_mask",
        "loss_dice",
        "loss_match",
        "loss_contrastive",
        "loss_ce_0",
        "loss_dice_0",
    }
    assert expected_terms <= set(history[0])
    first = sum(h["loss"] for h in history[:3]) / 3
    last = sum(h["loss"] for h in history[-3:]) / 3
    assert last < 0.6 * first, (first, last)
    for term in ("loss_bbox", "loss_giou", "loss_match", "loss_contrastive"):
        assert history[-1][term] < history[0][term], term


@pytest.mark.slow
def test_torch_compile_cpu(tiny_cfg, batch_factory):
    """One compilation (train mode, dropout 0 in the tiny preset): same outputs as eager and
    gradients through the compiled graph."""
    set_field(tiny_cfg, "model.dec_layers", 1)
    frames, pad, targets = batch_factory(B=1, T=2, H=48, W=48)
    model = build_model(tiny_cfg)
    compiled = torch.compile(model)
    eager = model(frames, pad)
    out = compiled(frames, pad)
    for k in ("pred_logits", "pred_boxes", "pred_masks", "pred_embeds"):
        torch.testing.assert_close(out[k], eager[k], rtol=1e-3, atol=1e-3)
    losses = build_criterion(tiny_cfg, model.gm_head)(out, targets)
    losses["loss"].backward()
    assert model.embed_head.layers[0].weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0
