"""Inference: frames -> model step -> proposals -> tracker, online and offline.

Modules, in the order data flows through them:

* ``frames``: reading checks, preprocessing, mask decoding, ``proposals(...)``;
* ``stepper``: the per-frame model step (autocast, torch.compile, CUDA graphs), ``timing``;
* ``tracker``: the one track type, the shared match rule, the online tracker;
* ``online`` (the one frame loop, ``track_outputs``) and ``offline`` (clips, stitched);
* ``predict``: ``load_model`` and ``predict_videos``, used by ``infer.py``, the trainer's
  evaluation and the experiments; ``run``: the whole ``infer.py`` job; ``demo``.
"""

from gmpvis.infer.demo import SHIPPED_CHECKPOINT, check_demo_checkpoint, make_demo_video
from gmpvis.infer.frames import (
    FrameOutput,
    FramePreprocessor,
    FrameProposals,
    FrameReadError,
    checked_frames,
    mask_decoder,
    proposals,
)
from gmpvis.infer.offline import ClipStitcher, clip_outputs, clip_starts, track_offline
from gmpvis.infer.online import frame_outputs, track_online, track_outputs
from gmpvis.infer.predict import (
    VideoPrediction,
    annotated_sources,
    build_preprocessor,
    build_stepper,
    eval_mode,
    evaluate_videos,
    load_model,
    predict_videos,
    subset_ground_truth,
)
from gmpvis.infer.run import Inputs, run_inference
from gmpvis.infer.stepper import Stepper, prepare_model
from gmpvis.infer.timing import LatencyStats, ModelTimer
from gmpvis.infer.tracker import OnlineTracker, Track, accept_matches, encode_mask

__all__ = [
    "SHIPPED_CHECKPOINT",
    "ClipStitcher",
    "FrameOutput",
    "FramePreprocessor",
    "FrameProposals",
    "FrameReadError",
    "Inputs",
    "LatencyStats",
    "ModelTimer",
    "OnlineTracker",
    "Stepper",
    "Track",
    "VideoPrediction",
    "accept_matches",
    "annotated_sources",
    "build_preprocessor",
    "build_stepper",
    "check_demo_checkpoint",
    "checked_frames",
    "clip_outputs",
    "clip_starts",
    "encode_mask",
    "eval_mode",
    "evaluate_videos",
    "frame_outputs",
    "load_model",
    "make_demo_video",
    "mask_decoder",
    "predict_videos",
    "prepare_model",
    "proposals",
    "run_inference",
    "subset_ground_truth",
    "track_offline",
    "track_online",
    "track_outputs",
]
