"""Forward / backward shapes and behaviour of every model building block."""

import pytest
import torch
import torch.nn.functional as F

from gmpvis.association import ProposalNodes, TrackNodes
from gmpvis.config import get_config
from gmpvis.model import build_backbone, build_gm_head
from gmpvis.model.backbone import ResNetBackbone, TinyCNN
from gmpvis.model.decoder import DeformableDecoder
from gmpvis.model.deformable_attention import MSDeformAttn
from gmpvis.model.encoder import DeformableEncoder, InputProjection, encoder_reference_points
from gmpvis.model.position_encoding import PositionEmbeddingSine
from gmpvis.model.seg_head import ModulatedDeformConv, PixelDecoder
from gmpvis.model.temporal import TemporalAggregator


def _grads_ok(module: torch.nn.Module) -> None:
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


def test_tiny_cnn_strides_odd_size():
    net = TinyCNN(8)
    x = torch.randn(2, 3, 37, 51, requires_grad=True)
    out = net(x)
    for s, c in net.channels.items():
        assert out[s].shape == (2, c, -(-37 // s), -(-51 // s))
    sum(o.sum() for o in out.values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_resnet_backbone_frozen_bn_and_local_weights(tmp_path):
    import torchvision

    ref = torchvision.models.resnet50(weights=None)
    path = tmp_path / "r50.pth"
    torch.save(ref.state_dict(), path)
    net = ResNetBackbone("resnet50", frozen_bn=True, weights_path=str(path))
    assert isinstance(net.stem[1], torchvision.ops.FrozenBatchNorm2d)
    assert torch.equal(net.layers[3][0].conv1.weight, ref.layer4[0].conv1.weight)
    # DETR convention: stem and layer1 frozen, the rest trainable
    assert not net.stem[0].weight.requires_grad and not net.layers[0][0].conv1.weight.requires_grad
    assert net.layers[1][0].conv1.weight.requires_grad
    out = net(torch.randn(1, 3, 64, 96))
    assert {s: tuple(o.shape) for s, o in out.items()} == {
        4: (1, 256, 16, 24),
        8: (1, 512, 8, 12),
        16: (1, 1024, 4, 6),
        32: (1, 2048, 2, 3),
    }
    with pytest.raises(ValueError, match="pretrained_weights"):
        ResNetBackbone("resnet50", weights_path=str(tmp_path / "missing.pth"))


def test_build_backbone_train_flag():
    cfg = get_config("tiny", ["model.train_backbone=false"])
    assert not any(p.requires_grad for p in build_backbone(cfg).parameters())


def test_position_embedding_ignores_padding():
    pe = PositionEmbeddingSine(8)
    mask = torch.zeros(2, 5, 9, dtype=torch.bool)
    mask[1, :, 6:] = True
    pos = pe(mask)
    assert pos.shape == (2, 16, 5, 9)
    # the valid part of a padded map equals the encoding of an unpadded map of that size
    alone = pe(torch.zeros(1, 5, 6, dtype=torch.bool))
    torch.testing.assert_close(pos[1, :, :, :6], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_msdeform_attn_fused_matches_unfused(ref_dim):
    shapes = torch.tensor([[7, 9], [4, 5]])
    starts = torch.tensor([0, 63])
    S = 63 + 20
    attn = MSDeformAttn(16, n_levels=2, n_heads=4, n_points=3, fused=True)
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.5)  # non-uniform weights
    q = torch.randn(2, 11, 16, requires_grad=True)
    ref = torch.rand(2, 11, 2, ref_dim)
    src = torch.randn(2, S, 16)
    pad = torch.zeros(2, S, dtype=torch.bool)
    pad[1, 60:63] = True
    out = attn(q, ref, src, shapes, starts, pad)
    assert out.shape == (2, 11, 16)
    attn.fused = False
    torch.testing.assert_close(attn(q, ref, src, shapes, starts, pad), out, rtol=1e-5, atol=1e-5)
    out.pow(2).sum().backward()
    assert q.grad.abs().sum() > 0 and attn.sampling_offsets.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reference_points"):
        attn(q, torch.cat([ref, ref[..., :1]], -1), src, shapes, starts, pad)


def test_msdeform_attn_padding_values_are_ignored():
    shapes, starts = torch.tensor([[6, 6]]), torch.tensor([0])
    attn = MSDeformAttn(8, 1, 2, 4)
    q, ref = torch.randn(1, 5, 8), torch.rand(1, 5, 1, 2)
    src = torch.randn(1, 36, 8)
    pad = torch.zeros(1, 36, dtype=torch.bool)
    pad[0, ::5] = True
    changed = src.clone()
    changed[pad] = torch.randn(int(pad.sum()), 8) * 100
    torch.testing.assert_close(
        attn(q, ref, src, shapes, starts, pad), attn(q, ref, changed, shapes, starts, pad)
    )


def _levels(cfg, N=3, H=40, W=56):
    channels = TinyCNN(cfg.model.tiny_channels).channels
    feats = {s: torch.randn(N, c, -(-H // s), -(-W // s)) for s, c in channels.items()}
    pad = torch.zeros(N, H, W, dtype=torch.bool)
    pad[1, :, 40:] = True
    proj = InputProjection(channels, cfg.model.hidden_dim, cfg.model.num_feature_levels)
    return proj, feats, proj(feats, pad)


@pytest.mark.parametrize("levels", [3, 4])
def test_input_projection_and_encoder(tiny_cfg, levels):
    from gmpvis.config import set_field

    set_field(tiny_cfg, "model.num_feature_levels", levels)
    proj, feats, lv = _levels(tiny_cfg)
    sizes = [(5, 7), (3, 4), (2, 2), (1, 1)][:levels]
    assert lv.shapes == sizes
    S = sum(h * w for h, w in sizes)
    assert lv.src.shape == lv.pos.shape == (3, S, 32) and lv.mask.shape == (3, S)
    assert lv.level_start_index.tolist() == [
        sum(h * w for h, w in sizes[:i]) for i in range(levels)
    ]
    assert torch.all(lv.valid_ratios[0] == 1) and lv.valid_ratios[1, 0, 0] == pytest.approx(5 / 7)
    ref = encoder_reference_points(lv.shapes, lv.valid_ratios)
    assert ref.shape == (3, S, levels, 2)
    # unpadded frame: pixel centres in (0, 1); first token of level 0 at (0.5 / w, 0.5 / h)
    assert ref[0].min() > 0 and ref[0].max() < 1
    torch.testing.assert_close(ref[0, 0, 0], torch.tensor([0.5 / 7, 0.5 / 5]))
    # padded frame: the last valid column of level 0 maps to x = 1 - 0.5 / 5 of the valid part
    torch.testing.assert_close(ref[1, 4, 0, 0], torch.tensor(4.5 / 5 * 5 / 7))
    enc = DeformableEncoder(
        num_layers=1, d_model=32, n_heads=4, n_levels=levels, n_points=2, d_ff=64, dropout=0.0
    )
    out = enc(lv)
    assert out.shape == (3, S, 32) and torch.isfinite(out).all()
    out.sum().backward()
    _grads_ok(enc)


def test_temporal_clip_equals_online():
    """Causal windowed mixing: clip mode == frame by frame with the rolling state."""
    agg = TemporalAggregator(
        d_model=32, n_heads=4, d_ff=64, dropout=0.0, num_tokens=4, num_layers=2, window=2
    ).eval()
    B, T, S, D = 2, 4, 13, 32
    src, pos = torch.randn(B * T, S, D), torch.randn(B * T, S, D)
    mask = torch.zeros(B * T, S, dtype=torch.bool)
    mask[:, -2:] = True
    clip = agg.forward_clip(src, pos, mask, T).view(B, T, S, D)
    state = None
    s4, p4, m4 = (x.view(B, T, *x.shape[1:]) for x in (src, pos, mask))
    for t in range(T):
        out, state = agg.forward_frame(s4[:, t], p4[:, t], m4[:, t], state)
        torch.testing.assert_close(out, clip[:, t], rtol=1e-4, atol=1e-5)
        assert len(state) == 2 and state[0].shape[1] == min(t + 1, 1)  # K - 1 = 1 frame kept
    # frames really interact: changing frame 0 changes frame 1 (window 2) but not frame 3
    src2 = src.clone().view(B, T, S, D)
    src2[:, 0] += 1.0
    clip2 = agg.forward_clip(src2.view(B * T, S, D), pos, mask, T).view(B, T, S, D)
    assert (clip2[:, 1] - clip[:, 1]).abs().max() > 1e-4
    torch.testing.assert_close(clip2[:, 3], clip[:, 3])
    agg.train()
    agg.forward_clip(src, pos, mask, T).sum().backward()
    _grads_ok(agg)


def test_decoder_shapes_and_refinement(tiny_cfg):
    from gmpvis.model.heads import MLP

    _, _, lv = _levels(tiny_cfg)
    head = MLP(32, 32, 4, 3)
    dec = DeformableDecoder(
        head,
        num_queries=10,
        num_layers=2,
        d_model=32,
        n_heads=4,
        n_levels=3,
        n_points=2,
        d_ff=64,
        dropout=0.0,
    )
    hs, boxes = dec(lv.src, lv)
    assert len(hs) == len(boxes) == 2
    assert hs[-1].shape == (3, 10, 32) and boxes[-1].shape == (3, 10, 4)
    assert (boxes[-1] > 0).all() and (boxes[-1] < 1).all()
    (hs[-1].sum() + boxes[-1].sum() + boxes[0].sum()).backward()
    _grads_ok(head)


def test_modulated_deform_conv_starts_as_plain_conv():
    conv = ModulatedDeformConv(6, 5)
    x = torch.randn(2, 6, 9, 11)
    torch.testing.assert_close(
        conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-4, atol=1e-4
    )
    conv(x).pow(2).sum().backward()
    # offsets are zero at init but they do receive gradient
    assert conv.offset_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mask_stride", [4, 8])
def test_pixel_decoder_strides(mask_stride):
    channels = TinyCNN(8).channels
    H, W = 45, 61
    feats = {s: torch.randn(2, c, -(-H // s), -(-W // s)) for s, c in channels.items()}
    enc = [torch.randn(2, 16, -(-H // s), -(-W // s), requires_grad=True) for s in (32, 16, 8)]
    pd = PixelDecoder(16, 12, [8, 16, 32], channels, mask_stride)
    out = pd(enc, feats)
    assert out.shape == (2, 12, -(-H // mask_stride), -(-W // mask_stride))
    out.sum().backward()
    assert all(e.grad.abs().sum() > 0 for e in enc)
    with pytest.raises(ValueError, match="mask_stride"):
        PixelDecoder(16, 12, [16, 32], channels, 32)


def test_build_gm_head_reads_the_config():
    """The association head of ``cfg.model`` (``gm_*``, ``sinkhorn_*``) and the tracker's
    ``max_missing`` (the frames-missed feature is normalised by it)."""
    cfg = get_config(
        "tiny",
        [
            "model.embed_dim=12",
            "model.gm_hidden=7",
            "model.gm_edge_dim=5",
            "model.gm_iters=2",
            "model.gm_lambda=0.25",
            "model.sinkhorn_iters=17",
            "model.sinkhorn_tau=0.5",
            "tracker.max_missing=3",
        ],
    )
    head = build_gm_head(cfg)
    assert head.pair_mlp[0].out_features == 7 and head.edge_geo.out_features == 5
    assert head.edge_app.in_features == 12
    assert (head.iters, head.sinkhorn_iters, head.tau) == (2, 17, 0.5)
    # the frames-missed feature keeps its fixed scale whatever the tracker's max_missing
    assert head.max_missed == 10
    assert head.lam.item() == pytest.approx(0.25)
    linear = build_gm_head(get_config("tiny", ["model.gm_lambda=0"]))
    assert not linear.use_quadratic and not hasattr(linear, "edge_geo")


@pytest.mark.parametrize("lam", [0.0, 4.0])
def test_quadratic_term_resolves_identical_node_evidence(lam):
    """Every (track, proposal) pair has the same node evidence (one embedding, one size, the
    proposals far from every predicted box): only the edges (the objects' layout, moved as a
    whole) tell the pairs apart. lambda = 0 stays flat; lambda > 0 finds the permutation."""
    cfg = get_config("tiny", [f"model.gm_lambda={lam}", "model.gm_iters=5"])
    head = build_gm_head(cfg).eval()
    with torch.no_grad():  # flat node logits at the dustbin's level: mass left to move
        head.pair_linear.bias.add_(8.0)
    n, E = 5, cfg.model.embed_dim
    embeds = torch.randn(1, 1, E).expand(1, n, E)
    boxes = torch.cat([torch.rand(1, n, 2) * 0.2 + 0.1, torch.full((1, n, 2), 0.05)], -1)
    perm = torch.randperm(n)
    moved = boxes[:, perm].clone()
    moved[..., :2] += 0.5  # offsets >= 4 sizes for every pair: clamped, no IoU
    tracks = TrackNodes(embeds, boxes, torch.ones(1, n), torch.ones(1, n, dtype=torch.bool))
    props = ProposalNodes(
        embeds, moved, torch.full((1, n), 0.9), torch.ones(1, n, dtype=torch.bool)
    )
    with torch.no_grad():
        S = head(tracks, props)[0, :n, :n]
        flat = head.node_affinity(tracks, props)
    assert flat.max() - flat.min() < 1e-6  # the node term cannot tell the pairs apart
    if lam > 0:
        true = perm.argsort()
        assert torch.equal(S.argmax(-1), true)
        assert S[torch.arange(n), true].min() > 1.3 * S.median()
    else:
        assert S.max() - S.min() < 1e-6
