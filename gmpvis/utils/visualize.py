"""Draw video instance segmentations: masks, boxes, category and track id on frames.

Every track gets one colour, a pure function of its id (golden-ratio hue walk), so the same
object keeps its colour through a video and across runs. Frames are uint8 ``[H, W, 3]`` RGB.

Writers: PNG frames and animated GIF (Pillow); MP4 only when the optional ``av`` package is
installed (``pip install 'gmpvis[video]'``), otherwise a clear ``RuntimeError``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# 1/phi: successive ids land far apart on the hue circle and never repeat exactly.
_GOLDEN = 0.6180339887498949


def track_color(track_id: int) -> tuple[int, int, int]:
    """Deterministic, saturated RGB colour of a track id (any int, negatives included)."""
    hue = (0.13 + int(track_id) * _GOLDEN) % 1.0
    # Alternate value a little so neighbouring hues still differ in brightness.
    value = 0.95 if int(track_id) % 2 == 0 else 0.8
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _check_frame(frame: np.ndarray, where: str = "frame") -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(
            f"{where}: expected uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}"
        )
    return frame


def _inner_contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` [H, W] with at least one 4-neighbour outside it (or on the border)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return mask & ~interior


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def overlay_frame(
    frame: np.ndarray,
    masks: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    track_ids: Sequence[int] | None = None,
    *,
    alpha: float = 0.5,
    contour: bool = True,
) -> np.ndarray:
    """Overlay N instances on one frame.

    Args:
        frame: uint8 ``[H, W, 3]``.
        masks: bool ``[N, H, W]`` or None. Each mask is alpha-blended with its track colour:
            ``out = round((1 - alpha) * frame + alpha * colour)``, in order (later on top).
        boxes: float ``[N, 4]`` absolute xyxy (rows with NaN are skipped) or None.
        labels: N strings (e.g. category names) or None.
        track_ids: N ints giving the colours; default ``0..N-1``.
        alpha: mask opacity in [0, 1].
        contour: darken the inner boundary of each mask (stays inside the mask).

    Returns:
        uint8 ``[H, W, 3]``, a new array. Without boxes and labels only masked pixels change.
    """
    frame = _check_frame(frame)
    h, w = frame.shape[:2]
    n = None
    if masks is not None:
        masks = np.asarray(masks).astype(bool, copy=False)
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise ValueError(f"masks: expected bool [N, {h}, {w}], got {list(masks.shape)}")
        n = masks.shape[0]
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or (n is not None and boxes.shape[0] != n):
            raise ValueError(f"boxes: expected [N, 4] xyxy with N={n}, got {list(boxes.shape)}")
        n = boxes.shape[0]
    if n is None:
        n = len(labels) if labels is not None else 0
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: expected {n} strings, got {len(labels)}")
    if track_ids is None:
        track_ids = list(range(n))
    if len(track_ids) != n:
        raise ValueError(f"track_ids: expected {n} ids, got {len(track_ids)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")

    out = frame.astype(np.float32)
    colors = [np.array(track_color(t), dtype=np.float32) for t in track_ids]
    if masks is not None:
        for i in range(n):
            m = masks[i]
            out[m] = (1.0 - alpha) * out[m] + alpha * colors[i]
            if contour:
                out[_inner_contour(m)] = 0.45 * colors[i]
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if boxes is None and labels is None:
        return out

    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i in range(n):
        color = tuple(int(c) for c in colors[i])
        box = None
        if boxes is not None and np.all(np.isfinite(boxes[i])):
            box = tuple(boxes[i].tolist())
            draw.rectangle(box, outline=color, width=1)
        elif masks is not None:
            box = _mask_box(masks[i])
        if labels is None or box is None:
            continue
        text = f"{labels[i]} #{track_ids[i]}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        x = min(max(box[0], 0), max(w - tw - 2, 0))
        # Above the box when there is room, else inside its top edge.
        y = box[1] - th - 3 if box[1] - th - 3 >= 0 else max(box[1], 0)
        draw.rectangle((x, y, x + tw + 2, y + th + 2), fill=color)
        draw.text((x + 1 - left, y + 1 - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(img, dtype=np.uint8).copy()


def render_video(
    frames: Sequence[np.ndarray] | np.ndarray,
    instances: Sequence[dict],
    *,
    alpha: float = 0.5,
    contour: bool = True,
    draw_boxes: bool = True,
    draw_labels: bool = True,
) -> list[np.ndarray]:
    """Overlay tracks on every frame of a video.

    Args:
        frames: T frames, uint8 ``[H, W, 3]`` each (or an array ``[T, H, W, 3]``).
        instances: one dict per track with
            ``masks``: bool ``[T, H, W]`` or a length-T list of ``[H, W]`` / None (absent);
            ``track_id`` (int, default its index); ``label`` (str, optional);
            ``score`` (float, optional, appended to the label);
            ``boxes`` (optional ``[T, 4]`` xyxy, NaN rows where absent; default: mask extent).
        draw_boxes: draw a rectangle per visible instance (from ``boxes`` or the mask).
        draw_labels: write "label #track_id" at each visible instance.

    Returns:
        T uint8 ``[H, W, 3]`` frames.
    """
    frames = [_check_frame(f, f"frames[{t}]") for t, f in enumerate(frames)]
    num_frames = len(frames)
    for k, inst in enumerate(instances):
        if "masks" not in inst or len(inst["masks"]) != num_frames:
            got = len(inst["masks"]) if "masks" in inst else "none"
            raise ValueError(f"instances[{k}]['masks']: expected {num_frames} frames, got {got}")
    out = []
    for t, frame in enumerate(frames):
        h, w = frame.shape[:2]
        masks, boxes, labels, ids = [], [], [], []
        for k, inst in enumerate(instances):
            m = inst["masks"][t]
            if m is None:
                continue
            m = np.asarray(m, dtype=bool)
            if m.shape != (h, w):
                raise ValueError(
                    f"instances[{k}]['masks'][{t}]: expected [{h}, {w}], got {list(m.shape)}"
                )
            if not m.any():
                continue
            masks.append(m)
            ids.append(int(inst.get("track_id", k)))
            label = str(inst.get("label", ""))
            if inst.get("score") is not None:
                label = f"{label} {float(inst['score']):.2f}".strip()
            labels.append(label)
            box = inst["boxes"][t] if inst.get("boxes") is not None else None
            if box is None or not np.all(np.isfinite(np.asarray(box, dtype=np.float64))):
                box = _mask_box(m)
            boxes.append(box)
        if not masks:
            out.append(frame.copy())
            continue
        out.append(
            overlay_frame(
                frame,
                np.stack(masks),
                np.asarray(boxes, dtype=np.float64) if draw_boxes else None,
                labels if draw_labels else None,
                ids,
                alpha=alpha,
                contour=contour,
            )
        )
    return out


def instances_from_annotations(
    annotations: Sequence[dict],
    height: int,
    width: int,
    category_names: dict[int, str] | None = None,
) -> list[dict]:
    """Decode YouTube-VIS annotations or results of one video into ``render_video`` instances.

    ``annotations``: dicts with ``segmentations`` (one RLE or None per frame), ``category_id``,
    and ``id`` (ground truth; used as track id) or ``score`` (results; the index is the id).
    RLEs may be compressed (str counts) or uncompressed (list counts).
    """
    from pycocotools import mask as mask_utils

    out = []
    for k, ann in enumerate(annotations):
        masks = []
        for t, seg in enumerate(ann["segmentations"]):
            if seg is None:
                masks.append(None)
                continue
            rle = seg
            if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, height, width)
            elif isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
            m = mask_utils.decode(rle).astype(bool)
            if m.shape != (height, width):
                raise ValueError(
                    f"annotations[{k}].segmentations[{t}]: decodes to {list(m.shape)}, "
                    f"expected [{height}, {width}]"
                )
            masks.append(m)
        cat = ann.get("category_id")
        name = category_names.get(cat, str(cat)) if category_names else str(cat)
        out.append(
            {
                "masks": masks,
                "track_id": int(ann.get("id", k)),
                "label": name,
                "score": ann.get("score"),
            }
        )
    return out


def save_png_frames(frames: Sequence[np.ndarray], out_dir: str | Path) -> list[Path]:
    """Write frames as ``<out_dir>/00000.png, 00001.png, ...``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, frame in enumerate(frames):
        path = out_dir / f"{t:05d}.png"
        Image.fromarray(_check_frame(frame, f"frames[{t}]")).save(path)
        paths.append(path)
    return paths


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 5.0) -> Path:
    """Write an animated, looping GIF. Pillow merges consecutive identical frames."""
    if len(frames) == 0:
        raise ValueError("save_gif: frames is empty")
    if fps <= 0:
        raise ValueError(f"save_gif: fps must be > 0, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(_check_frame(f, f"frames[{t}]")) for t, f in enumerate(frames)]
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=int(round(1000.0 / fps)),
        loop=0,
    )
    return path


def save_mp4(frames: Sequence[np.ndarray], path: str | Path, fps: float = 5.0) -> Path:
    """Write an H.264 MP4 with PyAV. Raises RuntimeError when ``av`` is not installed."""
    try:
        import av
    except ImportError as err:
        raise RuntimeError(
            "save_mp4 needs the optional 'av' package (pip install av, or "
            "pip install 'gmpvis[video]'); use save_gif or save_png_frames instead"
        ) from err
    from fractions import Fraction

    if len(frames) == 0:
        raise ValueError("save_mp4: frames is empty")
    frames = [_check_frame(f, f"frames[{t}]") for t, f in enumerate(frames)]
    h, w = frames[0].shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        # yuv420p needs even sizes: pad by one pixel where odd.
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            if frame.shape[:2] != (h, w):
                raise ValueError(f"save_mp4: all frames must be {h}x{w}, got {frame.shape[:2]}")
            padded = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
