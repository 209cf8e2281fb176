"""Config presets, typed overrides, round trip through dicts and clear errors."""

import json

import pytest

from gmpvis.config import (
    PRESETS,
    Config,
    config_from_dict,
    config_to_dict,
    get_config,
)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build_and_differ(preset):
    cfg = get_config(preset)
    assert isinstance(cfg, Config)
    expected_backbone = {"tiny": "tiny_cnn", "r50": "resnet50", "r101": "resnet101"}[preset]
    assert cfg.model.backbone == expected_backbone


def test_tiny_preset_is_small():
    m = get_config("tiny").model
    assert m.hidden_dim <= 64 and 10 <= m.num_queries <= 16 and m.dec_layers <= 2
    assert get_config("tiny").data.synthetic_size == (128, 128)


def test_overrides_are_typed():
    cfg = get_config(
        "tiny",
        [
            "train.lr=3e-4",
            "train.max_steps=1e3",
            "train.compile=yes",
            "train.lr_drop_steps=[10, 20]",
            "data.scales=96,112",
            "data.synthetic_size=72,88",
            "model.backbone=resnet50",
            "loss.match_weight=0.25",
            "train.resume=",
        ],
    )
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 1000 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.compile is True
    assert cfg.train.lr_drop_steps == [10, 20]
    assert cfg.data.scales == [96, 112]
    assert cfg.data.synthetic_size == (72, 88)
    assert cfg.model.backbone == "resnet50"
    assert cfg.loss.match_weight == 0.25
    assert cfg.train.resume == ""


def test_later_override_wins_and_presets_not_mutated():
    cfg = get_config("tiny", ["train.batch_size=3", "train.batch_size=5"])
    assert cfg.train.batch_size == 5
    assert get_config("tiny").train.batch_size == PRESETS["tiny"]["train.batch_size"]


def test_round_trip_through_json():
    cfg = get_config("r101", ["data.scales=320,352", "train.amp=bf16"])
    data = json.loads(json.dumps(config_to_dict(cfg)))
    back = config_from_dict(data)
    assert back == cfg
    assert isinstance(back.data.synthetic_size, tuple)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.nope=1", "nope"),
        ("trainer.lr=1", "trainer"),
        ("lr=1", "section.field"),
        ("train.lr", "section.field=value"),
        ("train.lr=fast", "train.lr"),
        ("train.batch_size=2.5", "train.batch_size"),
        ("train.compile=maybe", "train.compile"),
        ("data.synthetic_size=1,2,3", "data.synthetic_size"),
        ("model.backbone=vgg16", "model.backbone"),
        ("train.amp=fp8", "train.amp"),
        ("model.mask_stride=2", "model.mask_stride"),
        ("model.hidden_dim=63", "model.hidden_dim"),
    ],
)
def test_bad_overrides_raise_naming_the_field(override, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        get_config("tiny", [override])


def test_unknown_preset_and_dict_keys():
    with pytest.raises(ValueError, match="huge"):
        get_config("huge")
    with pytest.raises(ValueError, match="bogus"):
        config_from_dict({"model": {"bogus": 1}})
    with pytest.raises(ValueError, match="extra"):
        config_from_dict({"extra": {}})


def test_every_field_is_overridable_from_its_string_form():
    """Each field of each section parses back from a command-line string of its value."""
    import dataclasses

    base = get_config("r50")
    overrides = []
    for section in ("model", "loss", "data", "train"):
        for f in dataclasses.fields(getattr(base, section)):
            value = getattr(getattr(base, section), f.name)
            if isinstance(value, list | tuple):
                text = ",".join(str(v) for v in value)
            else:
                text = str(value)
            overrides.append(f"{section}.{f.name}={text}")
    assert len(overrides) > 60
    assert get_config("r50", overrides) == base
    # and a changed value of every kind lands with the right type
    cfg = get_config(
        "r50",
        [
            "model.gm_lambda=0.75",
            "data.synthetic_difficulty=hard",
            "model.frozen_bn=off",
            "data.max_gap=5",
        ],
    )
    assert (cfg.model.gm_lambda, cfg.data.synthetic_difficulty) == (0.75, "hard")
    assert cfg.model.frozen_bn is False and cfg.data.max_gap == 5


def test_tracker_and_inference_knobs_are_config_fields():
    cfg = get_config("tiny", ["tracker.max_missing=8", "infer.mode=offline", "runtime.device=cpu"])
    assert cfg.tracker.max_missing == 8 and cfg.infer.mode == "offline"
    assert cfg.runtime.device == "cpu"
    for bad, field in [
        ("tracker.det_threshold=2", "tracker.det_threshold"),
        ("tracker.max_missing=-3", "tracker.max_missing"),
        ("infer.mode=batch", "infer.mode"),
        ("infer.offline_overlap=8", "infer.offline_overlap"),
        ("infer.overlay=avi", "infer.overlay"),
        ("runtime.kernels=cuda", "runtime.kernels"),
        ("train.log_every=0", "train.log_every"),
        ("train.lr=-1", "train.lr"),
        ("model.nheads=0", "model.nheads"),
        ("data.num_workers=-1", "data.num_workers"),
    ]:
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            get_config("tiny", [bad])


def test_stored_config_loads_old_field_names_and_resets_machine_sections():
    from gmpvis.config import config_from_dict, config_to_dict, with_machine_defaults

    stored = config_to_dict(get_config("tiny", ["runtime.device=cuda", "tracker.nms_iou=0.7"]))
    stored["tracker"]["memory"] = stored["tracker"].pop("embed_history") + 2  # older name
    cfg = with_machine_defaults(config_from_dict(stored))
    assert cfg.tracker.embed_history == 7 and cfg.tracker.nms_iou == 0.7
    assert cfg.runtime.device == "auto"  # a GPU-trained model still runs on a CPU


def test_both_scripts_take_the_same_override_syntax():
    import infer
    import train

    args = infer.parse_args(
        ["--frames", "x", "--checkpoint", "c.pth", "--max-missing", "4", "tracker.max_missing=9"]
    )
    overrides = infer.flag_overrides(args)
    assert overrides[-1] == "tracker.max_missing=9"  # positional overrides win
    assert get_config("tiny", overrides).tracker.max_missing == 9
    cfg = train.build_config(train.parse_args(["--max-steps", "5", "train.max_steps=7"]))
    assert cfg.train.max_steps == 7
    cfg = train.build_config(train.parse_args(["tracker.max_missing=3", "--device", "cpu"]))
    assert cfg.tracker.max_missing == 3 and cfg.runtime.device == "cpu"
