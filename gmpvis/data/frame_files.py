"""Frame image files: read one (naming the file at fault), or check every header up front.

A corrupt or wrongly sized frame would otherwise be found only when a clip first reads it,
possibly hours into a run. :func:`frame_header_problem` opens a file's header only (PIL
reads the size without decoding the pixels), so checking every frame of a dataset costs a
small fraction of reading it; :func:`verify_wanted` decides whether a dataset gets that check.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from PIL import Image

# "auto" checks the headers of datasets up to this many frames (about a second or two)
VERIFY_AUTO_MAX_FRAMES = 20_000
# what PIL raises on a damaged file besides OSError
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError)


def read_frame(
    path: str,
    expect_hw: tuple[int, int] | None = None,
    video: str = "",
    expect_from: str = "the annotation",
) -> np.ndarray:
    """One frame as uint8 ``[H, W, 3]``; a missing/unreadable/mis-sized file raises naming it
    (and ``video``, a label such as "id 7"). ``expect_from`` says where ``expect_hw`` comes
    from, for the message ("the annotation", "its first frame ...")."""
    where = f" (video {video})" if video else ""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"frame {path}{where} does not exist")
    try:
        with Image.open(path) as img:
            arr = np.array(img.convert("RGB"))  # writable, for torch.from_numpy
    except _DECODE_ERRORS as e:
        raise ValueError(f"frame {path}{where} cannot be read as an image: {e}") from None
    if expect_hw is not None and arr.shape[:2] != tuple(expect_hw):
        raise ValueError(
            f"frame {path}{where} is {arr.shape[0]}x{arr.shape[1]} (HxW) but {expect_from} "
            f"says {expect_hw[0]}x{expect_hw[1]}"
        )
    return arr


def frame_size(path: str) -> tuple[int, int]:
    """``(height, width)`` from the image header; raises naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"frame {path} does not exist")
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
    except _DECODE_ERRORS as e:
        raise ValueError(f"frame {path} cannot be read as an image: {e}") from None
    return height, width


def frame_header_problem(path: str, expect_hw: tuple[int, int]) -> str | None:
    """Why the header of frame ``path`` does not fit ``expect_hw`` (H, W), or None."""
    try:
        hw = frame_size(path)
    except (FileNotFoundError, ValueError) as e:
        return str(e)
    if hw != tuple(expect_hw):
        return f"frame {path} is {hw[0]}x{hw[1]} (HxW) but the annotation says " + "x".join(
            map(str, expect_hw)
        )
    return None


def verify_wanted(setting, num_frames: int) -> bool:
    """``data.verify_frames``: "auto" (datasets of at most VERIFY_AUTO_MAX_FRAMES frames),
    or a boolean ("true" / "false" and the like)."""
    text = str(setting).strip().lower()
    if text == "auto":
        return num_frames <= VERIFY_AUTO_MAX_FRAMES
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"data.verify_frames: expected auto, true or false, got {setting!r}")
