"""Online frame loop, latency statistics, preprocessing and offline clip stitching.

A random-weight tiny model at a small input size keeps every test fast on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gmpvis.association import MemorySpec
from gmpvis.config import TrackerConfig, get_config
from gmpvis.data.inputs import VideoSource, to_tensor
from gmpvis.data.transforms import resize_clip
from gmpvis.infer import (
    ClipStitcher,
    FramePreprocessor,
    FrameProposals,
    FrameReadError,
    LatencyStats,
    OnlineTracker,
    Stepper,
    Track,
    VideoPrediction,
    build_preprocessor,
    checked_frames,
    eval_mode,
    mask_decoder,
    predict_videos,
    track_offline,
    track_online,
)
from gmpvis.infer.offline import clip_starts
from gmpvis.infer.tracker import Observation
from gmpvis.kernels import sinkhorn
from gmpvis.model import build_model

CPU = torch.device("cpu")

# Every proposal is kept and may start a track: random weights score about 0.01.
OPEN = TrackerConfig(det_threshold=0.0, birth_threshold=0.0, match_threshold=0.0, confirm_hits=1)


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config("tiny", ["data.scales=48", "data.max_size=80"])
    torch.manual_seed(0)
    return build_model(cfg).eval(), cfg


def random_frames(n: int, h: int = 37, w: int = 53, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


class ListSource(VideoSource):
    def __init__(self, frames, bad_at: int | None = None, h: int = 37, w: int = 53):
        super().__init__(7, "listed", len(frames), h, w)
        self.list, self.bad_at = frames, bad_at

    def frames(self):
        for t, f in enumerate(self.list):
            if t == self.bad_at:
                raise OSError("truncated JPEG")
            yield f


def test_latency_percentiles_and_fps():
    stats = LatencyStats(model_ms=[float(v) for v in range(1, 11)], total_ms=[20.0] * 10)
    s = stats.summary()
    assert s["frames"] == 10
    assert s["model_p50_ms"] == pytest.approx(5.5)
    assert s["model_p90_ms"] == pytest.approx(9.1)  # inclusive: 1 + 0.9 * 9
    assert s["model_fps"] == pytest.approx(1000 * 10 / 55)
    assert s["fps"] == pytest.approx(50.0)
    warm = stats.summary(skip=5)  # frames 6..10
    assert warm["model_p50_ms"] == pytest.approx(8.0) and warm["frames"] == 10


def test_preprocess_matches_eval_transform():
    cfg = get_config("tiny", ["data.scales=24", "data.max_size=40"])
    frame = random_frames(1, 37, 53, seed=3)[0]
    got = build_preprocessor(cfg, CPU)(frame)
    ref, _ = resize_clip(
        to_tensor(frame)[None], torch.zeros(1, 0, 37, 53, dtype=torch.bool), got.shape[-2:]
    )
    assert tuple(got.shape) == (1, 3, 24, 34)  # short side 24, long 24 * 53 / 37 rounded
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)  # float32, op order differs


def test_loop_equals_hand_rolled_step_and_tracker(tiny):
    model, cfg = tiny
    frames = random_frames(5)
    tracker = OnlineTracker(model.associate, OPEN)
    stats, n = track_online(
        Stepper(model, CPU), iter(frames), (37, 53), build_preprocessor(cfg, CPU), tracker
    )
    assert n == 5 and len(stats.model_ms) == len(stats.total_ms) == 5
    assert all(t >= m > 0 for m, t in zip(stats.model_ms, stats.total_ms, strict=True))

    ref = OnlineTracker(model.associate, OPEN)
    pre = FramePreprocessor(max(cfg.data.scales), cfg.data.max_size, CPU)
    state = None
    with torch.no_grad():
        for f in frames:
            x = pre(f)
            out, state = model.step(x, None, state)
            # memory stays at K - 1 frames however many have been seen
            assert state[0].shape[1] <= cfg.model.memory_frames - 1
            masks = mask_decoder(out["pred_masks"][0], tuple(x.shape[-2:]), (37, 53))
            ref.step(
                FrameProposals(
                    out["pred_logits"][0], out["pred_boxes"][0], out["pred_embeds"][0], masks
                )
            )
    got, want = tracker.results(7, 5, [1, 2, 3, 4]), ref.results(7, 5, [1, 2, 3, 4])
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert a["segmentations"] == b["segmentations"] and a["category_id"] == b["category_id"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
        assert len(a["segmentations"]) == 5


def test_channels_last_and_bf16_step_agree_with_fp32(tiny):
    model, cfg = tiny
    x = build_preprocessor(cfg, CPU)(random_frames(1, seed=5)[0])
    with torch.no_grad():
        ref, _ = Stepper(model, CPU)(x, None)
        bf, _ = Stepper(model, CPU, amp="bf16")(x, None)
        model.to(memory_format=torch.channels_last)
        cl, _ = Stepper(model, CPU)(x.contiguous(memory_format=torch.channels_last), None)
    model.to(memory_format=torch.contiguous_format)
    for k in ("pred_logits", "pred_boxes", "pred_embeds", "pred_masks"):
        torch.testing.assert_close(cl[k], ref[k], atol=1e-4, rtol=1e-4)  # float32
        # bfloat16 keeps 8 bits of mantissa: a few 1e-2 after a dozen layers
        torch.testing.assert_close(bf[k].float(), ref[k], atol=0.15, rtol=0.1)


def test_stepper_options_validation(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="amp"):
        Stepper(model, CPU, amp="int8")
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        Stepper(model, CPU, cuda_graphs=True)
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            Stepper(model, CPU)  # the stepper never switches the caller's model
    finally:
        model.eval()


def test_unreadable_and_missized_frames_name_their_index():
    frames = random_frames(4)
    with pytest.raises(FrameReadError, match=r"frame 2 cannot be read.*truncated JPEG"):
        list(checked_frames(ListSource(frames, bad_at=2)))
    frames[3] = random_frames(1, 30, 53)[0]
    with pytest.raises(FrameReadError, match=r"'listed'.*frame 3 is 30x53, expected 37x53"):
        list(checked_frames(ListSource(frames)))


@pytest.mark.gpu
def test_cuda_graph_step_matches_eager(tiny):
    model, cfg = tiny
    frames = random_frames(6)
    cuda = torch.device("cuda", torch.cuda.current_device())
    model.to(cuda)
    eager = Stepper(model, cuda)
    graphed = Stepper(model, cuda, cuda_graphs=True)
    pre = build_preprocessor(cfg, cuda)
    s1 = s2 = None
    with torch.no_grad():
        for f in frames:
            x = pre(f)
            a, s1 = eager(x, s1)
            b, s2 = graphed(x, s2)
            torch.testing.assert_close(b["pred_logits"], a["pred_logits"], atol=1e-4, rtol=1e-4)
    assert graphed.graph_step.graphs, "steady-state frames should replay a captured graph"
    model.cpu()


@pytest.mark.gpu
def test_frame_step_does_not_synchronise(tiny):
    """Preprocessing + model.step queue work only: results leave the GPU in the tracker."""
    model, cfg = tiny
    cuda = torch.device("cuda", torch.cuda.current_device())
    model.to(cuda)
    stepper = Stepper(model, cuda, amp="bf16")
    pre = build_preprocessor(cfg, cuda)
    frames = random_frames(5)
    state = None
    with torch.no_grad():
        for f in frames[:2]:  # first frames: lazy initialisation may synchronise
            _, state = stepper(pre(f), state)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for f in frames[2:]:
                _, state = stepper(pre(f), state)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    model.cpu()


# ----------------------------------------------------------------------------- offline
def cosine_associate(tracks, props):
    e1, e2 = tracks.embeds, props.embeds
    sim = torch.nn.functional.normalize(e1, dim=-1) @ torch.nn.functional.normalize(e2, dim=-1).mT
    return sinkhorn(sim, 20, tau=0.05, dustbin=0.5)[:, : tracks.size, : props.size]


def clip_track(frames: range, embed: torch.Tensor, label: int, tag: str) -> Track:
    prob = torch.full((3,), 0.05)
    prob[label] = 0.9
    box = torch.tensor([0.5, 0.5, 0.1, 0.1])
    rle = {"size": [4, 4], "counts": tag}
    track = None
    for t in frames:
        obs = Observation(embed + 0.01 * torch.randn_like(embed), box, prob, 0.9)
        if track is None:
            track = Track.start(0, t, obs, rle, MemorySpec(), observations={})
        else:
            track.add(t, obs, rle)
    return track


def test_stitcher_graphs_respect_the_live_track_cap():
    sizes = []

    def spy(tracks, props):
        sizes.append((tracks.size, props.size))
        return cosine_associate(tracks, props)

    a, b, c = torch.randn(3, 16)
    cfg = TrackerConfig(match_threshold=0.3, categories_per_track=1, max_live_tracks=1)
    st = ClipStitcher(spy, cfg)
    st.add_clip([clip_track(range(0, 6), a, 0, "a0"), clip_track(range(0, 6), b, 1, "b0")], 0, 6, 2)
    st.add_clip(
        [clip_track(range(4, 10), a, 0, "a1"), clip_track(range(4, 10), c, 2, "c1")], 4, 10, 2
    )
    assert sizes == [(1, 1)]
    assert len(st.results(1, 10, [10, 20, 30])) == 3  # a joined, b ended, c new


def test_clip_starts_cover_the_video():
    assert clip_starts(20, 8, 2) == [0, 6, 12]
    assert clip_starts(5, 8, 2) == [0]
    with pytest.raises(ValueError, match="overlap"):
        clip_starts(10, 4, 4)


def test_stitcher_joins_by_embedding_and_skips_overlap_only_tracks():
    a, b, c = torch.randn(3, 16)
    st = ClipStitcher(cosine_associate, TrackerConfig(match_threshold=0.3, categories_per_track=1))
    st.add_clip([clip_track(range(0, 6), a, 0, "a0"), clip_track(range(2, 6), b, 1, "b0")], 0, 6, 2)
    # second clip [4, 10): identities listed in the other order, plus a new one (c) and a
    # duplicate-looking track of c living only in the overlap frames
    st.add_clip(
        [
            clip_track(range(4, 10), b, 1, "b1"),
            clip_track(range(4, 9), a, 0, "a1"),
            clip_track(range(7, 10), c, 2, "c1"),
            clip_track(range(4, 6), -c, 2, "x1"),
        ],
        4,
        10,
        2,
    )
    res = st.results(3, 10, [10, 20, 30])
    assert [r["category_id"] for r in res] == [10, 20, 30]
    tags = [[s["counts"] if s else None for s in r["segmentations"]] for r in res]
    # overlap frames 4, 5 keep the first clip's masks; later frames come from the second
    assert tags[0] == ["a0"] * 6 + ["a1"] * 3 + [None]
    assert tags[1] == [None, None] + ["b0"] * 4 + ["b1"] * 4
    assert tags[2] == [None] * 7 + ["c1"] * 3
    assert res[0]["score"] == pytest.approx(0.9)


def test_offline_tracking_covers_every_frame(tiny):
    model, cfg = tiny
    frames = random_frames(7, seed=9)
    st = ClipStitcher(model.associate, OPEN)
    stats, n = track_offline(
        Stepper(model, CPU),
        iter(frames),
        (37, 53),
        build_preprocessor(cfg, CPU),
        st,
        clip_len=4,
        overlap=1,
    )
    res = st.results(1, n, [1, 2, 3, 4])
    assert n == 7 and len(stats.total_ms) == 7 and res
    covered = set()
    for r in res:
        assert len(r["segmentations"]) == 7
        covered |= {t for t, s in enumerate(r["segmentations"]) if s is not None}
    assert covered == set(range(7))  # every frame has a proposal above a zero threshold


def test_predict_videos_matches_the_loop_online_and_offline(tiny):
    model, cfg = tiny
    frames = random_frames(4, seed=11)
    loop = OnlineTracker(model.associate, OPEN)
    track_online(Stepper(model, CPU), iter(frames), (37, 53), build_preprocessor(cfg, CPU), loop)
    ids = [1, 2, 3, 4]
    src = ListSource(frames)
    model.train()
    with eval_mode(model):
        [online] = predict_videos(model, with_tracker(cfg, OPEN), [src], ids, CPU)
    assert model.training  # the trainer evaluates mid-training
    model.eval()
    assert isinstance(online, VideoPrediction) and online.num_frames == 4
    assert online.results == loop.results(7, 4, ids)
    offline_cfg = get_config("tiny", ["data.scales=48", "data.max_size=80", "infer.mode=offline"])
    offline_cfg.infer.offline_clip_len, offline_cfg.infer.offline_overlap = 2, 0
    [clips] = predict_videos(model, with_tracker(offline_cfg, OPEN), [src], ids, CPU)
    assert clips.results and all(len(r["segmentations"]) == 4 for r in clips.results)
    with pytest.raises(FrameReadError, match="frame 1 cannot be read"):
        list(predict_videos(model, cfg, [ListSource(frames, bad_at=1)], ids, CPU))


def with_tracker(cfg, tracker_cfg):
    cfg.tracker = tracker_cfg
    return cfg
