"""Frames in, proposals out: reading checks, preprocessing, mask decoding, ``proposals``.

``checked_frames`` reads a :class:`~gmpvis.data.inputs.VideoSource` and names the frame at
fault; :class:`FramePreprocessor` turns a uint8 frame into the model's input on the device;
:func:`proposals` turns one frame's model outputs into the :class:`FrameProposals` the
tracker consumes, with masks decoded lazily at the video's original size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from gmpvis.data.inputs import VideoSource
from gmpvis.data.transforms import IMAGENET_MEAN, IMAGENET_STD, resized_hw


class FrameReadError(ValueError):
    """A frame of a video that cannot be read or decoded; the message names its index."""


def checked_frames(source: VideoSource) -> Iterator[np.ndarray]:
    """The source's frames; a frame that fails to read or has the wrong size raises
    :class:`FrameReadError` naming the video and the frame index."""
    it = iter(source.frames())
    t = 0
    while True:
        try:
            frame = next(it)
        except StopIteration:
            return
        except Exception as err:
            raise FrameReadError(
                f"video {source.name!r} (id {source.video_id}): frame {t} cannot be read: {err}"
            ) from err
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise FrameReadError(
                f"video {source.name!r} (id {source.video_id}): frame {t} is "
                f"{frame.dtype} {list(frame.shape)}, expected uint8 [H, W, 3]"
            )
        if frame.shape[:2] != (source.height, source.width):
            raise FrameReadError(
                f"video {source.name!r} (id {source.video_id}): frame {t} is "
                f"{frame.shape[0]}x{frame.shape[1]}, expected {source.height}x{source.width}"
            )
        yield frame
        t += 1


class FramePreprocessor:
    """uint8 ``[H, W, 3]`` -> normalised ``[1, 3, h, w]`` on ``device`` at the evaluation
    size (short side ``short_side``, long side at most ``max_size``).

    Normalising before or after the bilinear resize is the same map (both are affine per
    channel and the bilinear weights sum to 1), so this matches the evaluation transforms.
    """

    def __init__(
        self, short_side: int, max_size: int, device: torch.device, channels_last: bool = False
    ) -> None:
        self.short, self.max_size = short_side, max_size
        self.device, self.channels_last = device, channels_last
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frame))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1)[None].float()
        x = (x - self.mean) / self.std
        h, w = frame.shape[:2]
        hw = resized_hw(h, w, self.short, self.max_size)
        if hw != (h, w):
            # antialiased, as the training / evaluation transforms resize
            x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()


@dataclass
class FrameProposals:
    """One frame's proposals, as the tracker sees them.

    logits ``[Nq, C]``, boxes ``[Nq, 4]`` (cxcywh in [0, 1]), embeds ``[Nq, E]``;
    ``mask_fn(indices [n]) -> [n, H, W]`` bool masks at the video's original size, decoded
    only for the proposals the tracker keeps (or ``rle_fn(indices) -> [RLE]`` when the
    masks are already encoded, as in the experiments' caches).
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    embeds: torch.Tensor
    mask_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    rle_fn: Callable[[torch.Tensor], list[dict]] | None = None

    def rles(self, indices: torch.Tensor) -> list[dict]:
        """Compressed RLEs (``counts`` as str) of the proposals ``indices``."""
        if self.rle_fn is not None:
            return self.rle_fn(indices)
        return [encode_mask(m) for m in self.mask_fn(indices)]


def encode_mask(mask: torch.Tensor) -> dict:
    """``[H, W]`` bool -> compressed RLE with ``counts`` as str (results format)."""
    rle = mask_utils.encode(np.asfortranarray(mask.cpu().numpy().astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_decoder(mask_logits: torch.Tensor, input_hw: tuple[int, int], orig_hw: tuple[int, int]):
    """``mask_logits [Nq, h_m, w_m]`` at the model's mask stride of an input of size
    ``input_hw`` -> ``fn(indices) -> [n, H, W] bool`` at the original size ``orig_hw``.

    The logits are upsampled to the (unpadded) input size first, then to the original size,
    as the evaluation transforms resized the frame the other way."""

    def decode(indices: torch.Tensor) -> torch.Tensor:
        logits = mask_logits[indices].float()[None]  # [1, n, h_m, w_m]
        stride_h = input_hw[0] / logits.shape[-2]
        stride_w = input_hw[1] / logits.shape[-1]
        full = F.interpolate(
            logits,
            size=(round(logits.shape[-2] * stride_h), round(logits.shape[-1] * stride_w)),
            mode="bilinear",
            align_corners=False,
        )[..., : input_hw[0], : input_hw[1]]
        full = F.interpolate(full, size=orig_hw, mode="bilinear", align_corners=False)
        return (full[0] > 0).cpu()

    return decode


@dataclass
class FrameOutput:
    """The model's outputs for one frame: ``OUTPUT_KEYS`` tensors ``[Nq, ...]`` (no batch
    dimension) and the size ``input_hw`` of the frame the model saw."""

    outputs: dict[str, torch.Tensor]
    input_hw: tuple[int, int]


def proposals(frame: FrameOutput, orig_hw: tuple[int, int]) -> FrameProposals:
    """One frame's model outputs -> the tracker's :class:`FrameProposals` (masks at
    ``orig_hw``)."""
    out = frame.outputs
    return FrameProposals(
        logits=out["pred_logits"],
        boxes=out["pred_boxes"],
        embeds=out["pred_embeds"],
        mask_fn=mask_decoder(out["pred_masks"], frame.input_hw, orig_hw),
    )
