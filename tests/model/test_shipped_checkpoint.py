"""The shipped checkpoint builds from its own config and loads strictly into build_model."""

from pathlib import Path

import torch

from gmpvis.checkpoint import load_checkpoint
from gmpvis.config import config_from_dict
from gmpvis.model import build_criterion, build_model

CKPT = Path(__file__).resolve().parents[2] / "gmpvis" / "assets" / "gmpvis_tiny.pth"


def _load():
    state = load_checkpoint(CKPT)  # weights_only: the asset must load without unpickling code
    cfg = config_from_dict(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"], strict=True)
    return model.eval(), cfg, state["model"]


def test_shipped_checkpoint_loads_strictly_and_runs(batch_factory):
    model, cfg, weights = _load()
    fresh = build_model(cfg).state_dict()
    assert list(fresh) == list(weights)  # same keys in the same (parameter) order
    assert all(fresh[k].shape == v.shape for k, v in weights.items())
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())
    m = cfg.model
    frames, pad, targets = batch_factory(B=2, T=3, H=72, W=88, num_classes=m.num_classes)
    with torch.no_grad():
        out = model(frames, pad)
        step, state = model.step(frames[:, 0], pad, None)
    assert out["pred_logits"].shape == (2, 3, m.num_queries, m.num_classes)
    assert all(torch.isfinite(out[k]).all() for k in ("pred_logits", "pred_boxes", "pred_masks"))
    # the first online step sees no memory, as frame 0 of the clip (causal aggregation)
    torch.testing.assert_close(step["pred_boxes"], out["pred_boxes"][:, 0], rtol=1e-4, atol=1e-5)
    # trained: the losses of the loaded model are below those of a fresh one on the same clip
    crit = build_criterion(cfg, model.gm_head)
    fresh_model = build_model(cfg).eval()
    with torch.no_grad():
        trained = crit(out, targets)
        untrained = build_criterion(cfg, fresh_model.gm_head)(fresh_model(frames, pad), targets)
    assert trained["loss_bbox"] < untrained["loss_bbox"]
    assert trained["loss"] < untrained["loss"]
