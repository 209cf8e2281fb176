"""infer.py end to end on tiny synthetic videos: inputs, outputs, and bad-input errors.

The model is a random-weight tiny model saved to a tmp checkpoint; tracker thresholds are
opened so it produces tracks. Scoring above a floor needs the shipped trained checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import infer
from gmpvis.checkpoint import CheckpointError, save_checkpoint
from gmpvis.config import config_to_dict, get_config
from gmpvis.data.synthetic import generate_dataset
from gmpvis.eval import evaluate, load_results
from gmpvis.infer import FrameReadError
from gmpvis.model import build_model

ROOT = Path(infer.__file__).resolve().parent
OPEN = ["--det-threshold", "0", "--birth-threshold", "0"]
H, W, T = 40, 56, 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("infer")
    cfg = get_config("tiny", ["data.scales=48", "data.max_size=80", "model.num_classes=5"])
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt = save_checkpoint(
        tmp / "tiny.pth",
        {
            "model": model.state_dict(),
            "config": config_to_dict(cfg),
            "step": 0,
            "category_ids": [1, 2, 3, 4, 5],
        },
    )
    ann = generate_dataset(tmp / "data", 2, num_frames=T, height=H, width=W, difficulty="hard")
    return {"tmp": tmp, "ckpt": str(ckpt), "ann": str(ann), "root": str(tmp / "data/JPEGImages")}


def run(setup, *args, out="out"):
    out_dir = setup["tmp"] / out
    summary = infer.main(
        ["--checkpoint", setup["ckpt"], "--output-dir", str(out_dir), *OPEN, *args]
    )
    return summary, out_dir


def check_results(path: Path, video_lengths: dict[int, int]) -> list[dict]:
    res = load_results(str(path))
    assert res, "open thresholds must give tracks"
    for r in res:
        assert len(r["segmentations"]) == video_lengths[r["video_id"]]
        assert 0.0 <= r["score"] <= 1.0 and r["category_id"] in {1, 2, 3, 4, 5}
        seg = next(s for s in r["segmentations"] if s is not None)
        assert seg["size"] == [H, W] and isinstance(seg["counts"], str)
    return res


def test_json_input_results_read_by_evaluator(setup):
    summary, out = run(
        setup,
        "--ytvis-json",
        setup["ann"],
        "--frames-root",
        setup["root"],
        "--eval",
        setup["ann"],
        "--overlay",
        "gif",
    )
    assert torch.is_grad_enabled()  # no global side effect on the caller
    res = check_results(out / "results.json", {1: T, 2: T})
    assert {r["video_id"] for r in res} == {1, 2}
    assert (out / "results.zip").is_file() and len(summary["overlays"]) == 2
    metrics = evaluate(setup["ann"], str(out / "results.zip"))
    assert metrics["AP"] == pytest.approx(summary["metrics"]["AP"])
    lat = json.loads((out / "latency.json").read_text())
    assert lat["frames"] == 2 * T and lat["model_p50_ms"] > 0 and lat["fps"] > 0
    assert lat["total_p50_ms"] >= lat["model_p50_ms"]


def test_frames_folder_and_offline(setup):
    summary, out = run(
        setup,
        "--frames",
        setup["root"] + "/vid0001",
        "--offline",
        "--clip-len",
        "3",
        "--clip-overlap",
        "1",
        "--overlay",
        "png",
        out="frames",
    )
    res = check_results(out / "results.json", {0: T})
    covered = {t for r in res for t, s in enumerate(r["segmentations"]) if s}
    assert covered == set(range(T))
    pngs = sorted(Path(summary["overlays"][0]).glob("*.png"))
    assert len(pngs) == T


def test_missing_eval_file_fails_before_inference(setup):
    with pytest.raises(FileNotFoundError, match="--eval .*gt_missing.json does not exist"):
        run(setup, "--frames", setup["root"] + "/vid0001", "--eval", "gt_missing.json", out="ev")
    assert not (setup["tmp"] / "ev" / "results.json").exists()


def test_video_file_input(setup):
    av = pytest.importorskip("av", reason="PyAV (the gmpvis[video] extra) is not installed")
    import numpy as np
    from PIL import Image

    from gmpvis.utils.visualize import save_mp4

    frames = [
        np.asarray(Image.open(p).convert("RGB"))
        for p in sorted(Path(setup["root"], "vid0000").glob("*.jpg"))
    ]
    video = save_mp4(frames, setup["tmp"] / "clip.mp4", fps=5)
    assert av.open(str(video)).streams.video[0].codec_context.height in (H, H + H % 2)
    _, out = run(setup, "--video", str(video), out="video")
    check_results(out / "results.json", {0: T})


def test_video_file_without_pyav_names_the_extra(setup, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(ImportError, match=r"gmpvis\[video\]"):
        run(setup, "--video", str(setup["tmp"] / "any.mp4"), out="noav")


def test_bad_checkpoints_name_the_file(setup, tmp_path):
    missing = tmp_path / "nope.pth"
    args = ["--frames", setup["root"] + "/vid0000", "--output-dir", str(tmp_path / "o")]
    with pytest.raises(CheckpointError, match=f"{missing}.*does not exist"):
        infer.main(["--checkpoint", str(missing), *args])
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(CheckpointError, match=f"{corrupt}.*corrupt"):
        infer.main(["--checkpoint", str(corrupt), *args])
    with pytest.raises(CheckpointError, match=r"not a 'r50' model: backbone='tiny_cnn'"):
        infer.main(["--checkpoint", setup["ckpt"], "--preset", "r50", *args])
    # weights of another architecture under this config
    state = torch.load(setup["ckpt"], weights_only=False)
    state["config"]["model"]["hidden_dim"] = 32
    save_checkpoint(tmp_path / "mismatch.pth", state)
    with pytest.raises(CheckpointError, match="mismatch.pth does not fit its configured model"):
        infer.main(["--checkpoint", str(tmp_path / "mismatch.pth"), *args])


def test_missing_frames_and_unreadable_frame(setup, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run(setup, "--frames", str(tmp_path / "nowhere"), out="missing")
    folder = tmp_path / "broken"
    folder.mkdir()
    for p in sorted(Path(setup["root"], "vid0000").glob("*.jpg")):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "00003.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(FrameReadError, match=r"frame 3 cannot be read.*00003.jpg"):
        run(setup, "--frames", str(folder), out="broken")


def test_demo_without_shipped_checkpoint_fails_clearly(monkeypatch, tmp_path):
    missing = tmp_path / "assets" / "gmpvis_tiny.pth"
    monkeypatch.setattr(infer, "DEMO_CHECKPOINT", missing)
    with pytest.raises(CheckpointError, match=f"demo checkpoint {missing} not found"):
        infer.main(["--demo", "--output-dir", str(tmp_path / "demo")])
    assert not (tmp_path / "demo").exists()  # nothing generated, no random weights used


def test_cli_prints_error_and_exit_code(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "infer.py"),
            "--checkpoint",
            str(tmp_path / "x.pth"),
            "--frames",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"infer.py: error: checkpoint {tmp_path / 'x.pth'} does not exist" in proc.stderr


@pytest.mark.skipif(
    not infer.DEMO_CHECKPOINT.is_file(),
    reason=f"the trained demo checkpoint {infer.DEMO_CHECKPOINT} is not committed yet",
)
def test_demo_with_shipped_checkpoint_scores(tmp_path):
    summary = infer.main(["--demo", "--output-dir", str(tmp_path / "demo")])
    assert (tmp_path / "demo" / "results.json").is_file()
    assert (tmp_path / "demo" / "overlay.gif").is_file()
    # the medium demo video: measured 0.350 with the committed checkpoint; random weights ~0
    assert summary["metrics"]["AP"] > 0.3


@pytest.mark.gpu
@pytest.mark.parametrize("flags", [["--cuda-graphs"], ["--compile", "--cuda-graphs"]])
def test_gpu_bf16_graphs_write_valid_results(setup, flags):
    _, out = run(
        setup,
        "--ytvis-json",
        setup["ann"],
        "--frames-root",
        setup["root"],
        "--device",
        "cuda",
        "--amp",
        "bf16",
        *flags,
        out="gpu_" + "_".join(flags),
    )
    check_results(out / "results.json", {1: T, 2: T})
