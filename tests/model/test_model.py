"""The full network: contract output shapes, padding, online mode, association, errors."""

import pytest
import torch

from gmpvis.association import ProposalNodes, TrackNodes
from gmpvis.config import get_config, set_field
from gmpvis.model import build_criterion, build_model

KEYS = ("pred_logits", "pred_boxes", "pred_masks", "pred_embeds")


@pytest.mark.parametrize("mask_stride, levels", [(8, 3), (4, 4)])
def test_forward_contract_shapes_odd_size(tiny_cfg, mask_stride, levels):
    set_field(tiny_cfg, "model.mask_stride", mask_stride)
    set_field(tiny_cfg, "model.num_feature_levels", levels)
    model = build_model(tiny_cfg)
    B, T, H, W = 2, 3, 53, 71
    frames = torch.randn(B, T, 3, H, W)
    pad = torch.zeros(B, H, W, dtype=torch.bool)
    pad[1, 40:] = True
    out = model(frames, pad)
    m = tiny_cfg.model
    hm, wm = -(-H // mask_stride), -(-W // mask_stride)
    assert out["pred_logits"].shape == (B, T, m.num_queries, m.num_classes)
    assert out["pred_boxes"].shape == (B, T, m.num_queries, 4)
    assert out["pred_masks"].shape == (B, T, m.num_queries, hm, wm)
    assert out["pred_embeds"].shape == (B, T, m.num_queries, m.embed_dim)
    assert out["pred_queries"].shape == (B, T, m.num_queries, m.hidden_dim)  # decoder states
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    assert len(out["aux_outputs"]) == m.dec_layers - 1
    assert all(out["aux_outputs"][0][k].shape == out[k].shape for k in KEYS)
    # tensors only: no module in the outputs
    assert set(out) == set(KEYS) | {"pred_queries", "aux_outputs"}
    sum(out[k].float().mean() for k in KEYS).backward()
    assert model.embed_head.layers[-1].weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_frames_interact_through_time(tiny_cfg):
    """Temporal aggregation: frame t's outputs depend on earlier frames of the clip only."""
    model = build_model(tiny_cfg).eval()
    frames = torch.randn(1, 3, 3, 48, 48)
    with torch.no_grad():
        base = model(frames)["pred_logits"]
        changed = frames.clone()
        changed[0, 1] += torch.randn(3, 48, 48)
        out = model(changed)["pred_logits"]
    torch.testing.assert_close(out[:, 0], base[:, 0])
    assert (out[:, 2] - base[:, 2]).abs().max() > 1e-5


def test_online_step_matches_clip_forward(tiny_cfg):
    """Frame-by-frame with the rolling memory == the clip forward (eval mode)."""
    set_field(tiny_cfg, "model.memory_frames", 2)
    model = build_model(tiny_cfg).eval()
    B, T, H, W = 2, 4, 40, 56
    frames = torch.randn(B, T, 3, H, W)
    pad = torch.zeros(B, H, W, dtype=torch.bool)
    pad[0, :, 48:] = True
    with torch.no_grad():
        clip = model(frames, pad)
        state = None
        for t in range(T):
            out, state = model.step(frames[:, t], pad, state)
            for k in KEYS:
                torch.testing.assert_close(out[k], clip[k][:, t], rtol=1e-4, atol=1e-4)
            # constant memory: at most K - 1 frames of tokens per temporal layer
            assert all(s.shape[1] <= 1 for s in state)


def test_associate_contract(tiny_cfg):
    """``model.associate(TrackNodes, ProposalNodes)`` is the model's own head: a soft
    assignment ``[B, n + 1, m + 1]`` (dustbin last), padding excluded, gradients to the head."""
    model = build_model(tiny_cfg)
    E = tiny_cfg.model.embed_dim
    B, n, m = 3, 4, 6

    def boxes(k):
        return torch.cat([torch.rand(B, k, 2) * 0.6 + 0.2, torch.rand(B, k, 2) * 0.2 + 0.05], -1)

    t_mask = torch.ones(B, n, dtype=torch.bool)
    p_mask = torch.ones(B, m, dtype=torch.bool)
    t_mask[2, 1:] = False
    p_mask[1, 4:] = False
    tracks = TrackNodes(torch.randn(B, n, E), boxes(n), torch.randint(0, 4, (B, n)).float(), t_mask)
    props = ProposalNodes(torch.randn(B, m, E), boxes(m), torch.rand(B, m), p_mask)
    S = model.associate(tracks, props)
    assert S.shape == (B, n + 1, m + 1) and torch.isfinite(S).all() and (S >= 0).all()
    assert (S[2, 1:n] == 0).all() and (S[1, :, 4:m] == 0).all()
    torch.testing.assert_close(S, model.gm_head(tracks, props), rtol=0, atol=0)
    real_rows = torch.cat([S[0, :n, :m], S[0, :n, m:]], 1).sum(1)
    # within the default iteration count's residual (tests/association/test_head.py)
    torch.testing.assert_close(real_rows, torch.ones(n), rtol=0, atol=2e-2)
    S[:, :n, :m].sum().backward()
    assert model.gm_head.pair_linear.weight.grad.abs().sum() > 0
    assert model.gm_head.edge_geo.weight.grad.abs().sum() > 0


def test_bad_inputs_raise(tiny_cfg):
    model = build_model(tiny_cfg)
    with pytest.raises(ValueError, match=r"frames must be \[B, T, 3, H, W\]"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="pad_mask"):
        model(torch.randn(1, 2, 3, 32, 32), torch.zeros(1, 32, 31, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.step(torch.randn(1, 1, 3, 32, 32), None, None)
    state = model.step(torch.randn(2, 3, 32, 32), None, None)[1]
    with pytest.raises(ValueError, match="memory state"):
        model.step(torch.randn(1, 3, 32, 32), None, state)


@pytest.mark.parametrize("preset", ["r50", "r101"])
def test_resnet_presets_build(preset):
    cfg = get_config(preset, ["model.num_queries=4", "model.dec_layers=1", "model.enc_layers=1"])
    model = build_model(cfg)
    n = sum(p.numel() for p in model.backbone.parameters())
    assert n > (40e6 if preset == "r101" else 20e6)
    assert build_criterion(cfg, model.gm_head).weights["loss_match"] == cfg.loss.match_weight


def test_r50_forward_small_input():
    cfg = get_config(
        "r50",
        [
            "model.num_queries=3",
            "model.dec_layers=1",
            "model.enc_layers=1",
            "model.hidden_dim=32",
            "model.dim_feedforward=32",
            "model.mask_dim=8",
            "model.embed_dim=8",
            "model.nheads=4",
        ],
    )
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, 3, 64, 64))
    assert out["pred_masks"].shape == (1, 2, 3, 16, 16)
    assert torch.isfinite(out["pred_logits"]).all()


def test_bf16_autocast_forward_and_loss(tiny_cfg, batch_factory):
    frames, pad, targets = batch_factory(B=1, T=2, H=48, W=56)
    model = build_model(tiny_cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(frames, pad)
        losses = build_criterion(tiny_cfg, model.gm_head)(out, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert torch.isfinite(model.embed_head.layers[0].weight.grad).all()


@pytest.mark.parametrize("override", ["model.num_memory_tokens=0", "model.temporal_layers=0"])
def test_temporal_aggregation_can_be_disabled(tiny_cfg, override):
    from gmpvis.config import apply_overrides

    apply_overrides(tiny_cfg, [override])
    model = build_model(tiny_cfg).eval()
    frames = torch.randn(1, 2, 3, 40, 40)
    with torch.no_grad():
        clip = model(frames)
        out, state = model.step(frames[:, 1], None, model.step(frames[:, 0], None, None)[1])
    torch.testing.assert_close(out["pred_logits"], clip["pred_logits"][:, 1], rtol=1e-4, atol=1e-4)
