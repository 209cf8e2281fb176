"""One synthetic video in memory: trajectories, panning textured background, z-ordered objects.

Motion of every object is linear and folded (reflected) inside a box per axis, so it bounces:
``fold(p0 + v * t, lo, hi)``. A normal object's box keeps it mostly in view; an *exiting*
object's box reaches beyond one image side by its full size plus 1.5 steps, so it leaves the
frame completely for a few frames and comes back. Look-alike pairs are put on a crossing
course: both reach the same point at the same frame, at different depths, so one hides the
other exactly when telling them apart is hardest.

Masks are the visible parts: objects are painted back to front and each pixel belongs to the
front-most object covering it by at least half, so the masks of one frame never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from gmpvis.data.synthetic.shapes import (
    CATEGORIES,
    Appearance,
    Category,
    bounding_radius,
    lookalike_of,
    rasterize,
    sample_appearance,
)


@dataclass(frozen=True)
class Difficulty:
    """Knobs of the generator. Speeds and sizes are for a 128-pixel short side and scale with it.

    objects: (min, max) objects per video.
    speed: (min, max) object speed, pixels per frame.
    size: (min, max) object radius as a fraction of the short side.
    lookalike_prob: chance that a video holds one group of near-identical same-category objects.
    max_lookalikes: largest such group (>= 2).
    crossing_prob: chance that the first two look-alikes are sent across each other.
    exit_prob: per-object chance to leave the frame completely and re-enter.
    min_exits: at least this many exiting objects per video (when the video has >= 6 frames).
    rotation: max angular speed, radians per frame.
    scale_amp: relative amplitude of the slow size oscillation.
    deform: amplitude of outline wobble and area-preserving squash.
    camera_speed: background pan, pixels per frame.
    noise: std of the per-pixel Gaussian noise (0-255 scale).
    """

    objects: tuple[int, int]
    speed: tuple[float, float]
    size: tuple[float, float]
    lookalike_prob: float
    max_lookalikes: int
    crossing_prob: float
    exit_prob: float
    min_exits: int
    rotation: float
    scale_amp: float
    deform: float
    camera_speed: float
    noise: float


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(
        objects=(1, 3), speed=(0.5, 2.0), size=(0.12, 0.2), lookalike_prob=0.0,
        max_lookalikes=2, crossing_prob=0.0, exit_prob=0.0, min_exits=0, rotation=0.05,
        scale_amp=0.05, deform=0.03, camera_speed=0.0, noise=2.0,
    ),
    "medium": Difficulty(
        objects=(2, 4), speed=(1.5, 4.0), size=(0.1, 0.18), lookalike_prob=0.5,
        max_lookalikes=2, crossing_prob=0.5, exit_prob=0.15, min_exits=0, rotation=0.1,
        scale_amp=0.1, deform=0.06, camera_speed=0.5, noise=3.0,
    ),
    "hard": Difficulty(
        objects=(3, 6), speed=(2.5, 6.0), size=(0.08, 0.16), lookalike_prob=1.0,
        max_lookalikes=3, crossing_prob=1.0, exit_prob=0.25, min_exits=1, rotation=0.18,
        scale_amp=0.15, deform=0.1, camera_speed=1.0, noise=5.0,
    ),
}  # fmt: skip


def get_difficulty(difficulty: str | Difficulty) -> Difficulty:
    """A preset by name ("easy" | "medium" | "hard") or a custom Difficulty as is."""
    if isinstance(difficulty, Difficulty):
        return difficulty
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty: expected one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
    return DIFFICULTIES[difficulty]


@dataclass
class SyntheticVideo:
    """A generated video and its ground truth (T frames, N objects seen in at least one).

    frames: uint8 ``[T, H, W, 3]``; backgrounds: uint8 ``[T, H, W, 3]`` (the same frames
    without objects and noise); masks: bool ``[T, N, H, W]`` visible parts (empty when the
    object is out of view, fully hidden or below ``min_area`` pixels); category_ids: int64
    ``[N]`` (``CATEGORIES`` ids); centers: float32 ``[T, N, 2]`` object centre (x, y) in pixels;
    depth: int64 ``[N]`` (0 = back); lookalike_group: int64 ``[N]`` (-1 = none); exits: bool
    ``[N]`` scripted to leave and re-enter.
    """

    frames: np.ndarray
    backgrounds: np.ndarray
    masks: np.ndarray
    category_ids: np.ndarray
    centers: np.ndarray
    depth: np.ndarray
    lookalike_group: np.ndarray
    exits: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def visible(self) -> np.ndarray:
        """bool ``[T, N]``: the object has a non-empty mask in that frame."""
        return self.masks.any(axis=(2, 3))


def _fold(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect positions into [lo, hi] (a ball bouncing between two walls)."""
    span = hi - lo
    x = np.mod(p - lo, 2.0 * span)
    return lo + np.where(x > span, 2.0 * span - x, x)


def _background(rng: np.random.Generator, height: int, width: int, num_frames: int, pan: float):
    """Textured, desaturated background frames float32 ``[T, H, W, 3]`` with a camera pan."""
    margin = int(np.ceil(pan * max(num_frames - 1, 0))) + 1
    ch, cw = height + 2 * margin, width + 2 * margin
    # Low-frequency colour field: a few random colours bicubically upsampled.
    grid = rng.integers(40, 216, size=(rng.integers(3, 7), rng.integers(3, 7), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(grid).resize((cw, ch), Image.BICUBIC), np.float32)
    gray = base.mean(axis=2, keepdims=True)
    base = gray + 0.45 * (base - gray)  # desaturate: objects carry the strong colours
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    kind = rng.integers(0, 4)
    a = rng.uniform(0, np.pi)
    period = rng.uniform(6.0, 18.0)
    if kind == 0:  # stripes
        pat = np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period)
    elif kind == 1:  # checkerboard
        pat = np.where((np.floor(xx / period) + np.floor(yy / period)) % 2 == 0, 1.0, -1.0)
    elif kind == 2:  # thin grid lines
        pat = ((np.mod(xx, period) < 1.5) | (np.mod(yy, period) < 1.5)) * 2.0 - 1.0
    else:  # blotches: a mid-frequency noise field
        small = rng.uniform(-1, 1, size=(max(ch // 10, 2), max(cw // 10, 2))).astype(np.float32)
        pat = np.asarray(Image.fromarray(small).resize((cw, ch), Image.BICUBIC))
    base = base + rng.uniform(8.0, 20.0) * pat[..., None].astype(np.float32)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    out = np.empty((num_frames, height, width, 3), np.float32)
    for t in range(num_frames):
        ox = int(round(margin + direction[0] * pan * (t - (num_frames - 1) / 2)))
        oy = int(round(margin + direction[1] * pan * (t - (num_frames - 1) / 2)))
        out[t] = base[oy : oy + height, ox : ox + width]
    return out


def _choose_objects(rng: np.random.Generator, diff: Difficulty):
    """Categories, appearances and look-alike groups of one video."""
    n = int(rng.integers(diff.objects[0], diff.objects[1] + 1))
    cats: list[Category] = []
    apps: list[Appearance] = []
    group = []
    if n >= 2 and rng.random() < diff.lookalike_prob:
        k = int(rng.integers(2, min(diff.max_lookalikes, n) + 1))
        cat = CATEGORIES[rng.integers(len(CATEGORIES))]
        first = sample_appearance(rng, cat)
        for j in range(k):
            cats.append(cat)
            apps.append(first if j == 0 else lookalike_of(rng, first))
            group.append(0)
    while len(cats) < n:
        cat = CATEGORIES[rng.integers(len(CATEGORIES))]
        cats.append(cat)
        apps.append(sample_appearance(rng, cat))
        group.append(-1)
    return cats, apps, np.asarray(group, np.int64)


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(a), np.sin(a)])


def _trajectories(rng, diff, height, width, num_frames, radii, rbounds, group):
    """Centres float32 ``[T, N, 2]`` and the per-object exit flags."""
    n = len(radii)
    scale = min(height, width) / 128.0
    size = np.array([width, height], np.float64)
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    lo = 0.6 * radii[:, None] * np.ones((1, 2))  # [N, 2] walls per axis
    hi = size[None, :] - lo
    speed = rng.uniform(*diff.speed, size=n) * scale
    vel = np.stack([_random_unit(rng) * s for s in speed])
    pos0 = rng.uniform(lo, hi)

    crossing = np.zeros(n, bool)
    members = np.flatnonzero(group >= 0)
    if members.size >= 2 and num_frames >= 4 and rng.random() < diff.crossing_prob:
        a, b = members[:2]
        t_meet = rng.uniform(0.35, 0.6) * (num_frames - 1)
        meet = rng.uniform(0.3, 0.7, size=2) * size
        d = _random_unit(rng)
        rot = rng.uniform(-0.4, 0.4)  # not exactly head-on
        db = -np.array([d[0] * np.cos(rot) - d[1] * np.sin(rot),
                        d[0] * np.sin(rot) + d[1] * np.cos(rot)])  # fmt: skip
        for i, di in ((a, d), (b, db)):
            # Start on the way so that no wall is hit before the meeting point.
            room = np.where(di > 0, meet - lo[i], hi[i] - meet) / max(abs(t_meet), 1e-9)
            cap = np.min(np.where(np.abs(di) > 1e-6, room / np.maximum(np.abs(di), 1e-6), np.inf))
            s = min(speed[i], 0.98 * cap)
            vel[i] = di * s
            pos0[i] = meet - vel[i] * t_meet
        crossing[[a, b]] = True

    exits = np.zeros(n, bool)
    if num_frames >= 6:
        wants = rng.random(n) < diff.exit_prob
        free = np.flatnonzero(~crossing)
        if wants[free].sum() < diff.min_exits and free.size:
            wants[rng.choice(free, size=min(diff.min_exits, free.size), replace=False)] = True
        for i in np.flatnonzero(wants & ~crossing):
            axis, side = int(rng.integers(2)), int(rng.integers(2))
            t_b = float(np.clip(rng.uniform(0.45, 0.6) * (num_frames - 1), 2.0, num_frames - 4))
            # Along `axis` the object heads to a wall beyond the image edge, e = 1.5 steps past
            # the point where it is fully out (centre rbounds[i] past the edge): it is out
            # for 3 frames around the bounce time t_b. The speed is raised (up to 2x the
            # preset's max) so that it starts at least half visible: start >= radius / 2.
            need = (0.5 * radii[i] + rbounds[i]) / (t_b - 1.5)
            s = float(np.clip(need, speed[i], 2.0 * diff.speed[1] * scale))
            e = 1.5 * s
            if side == 0:
                wall = -(rbounds[i] + e)
                start = wall + s * t_b
                if start >= hi[i, axis]:
                    continue
                lo[i, axis] = wall
            else:
                wall = size[axis] + rbounds[i] + e
                start = wall - s * t_b
                if start <= lo[i, axis]:
                    continue
                hi[i, axis] = wall
            vel[i, axis] = -s if side == 0 else s
            pos0[i, axis] = start
            exits[i] = True

    pos = pos0[None] + vel[None] * t[..., None]  # [T, N, 2]
    out = np.empty_like(pos)
    for i in range(n):
        for ax in range(2):
            out[:, i, ax] = _fold(pos[:, i, ax], lo[i, ax], hi[i, ax])
    return out.astype(np.float32), exits


def generate_video(
    seed: int | np.random.Generator = 0,
    *,
    num_frames: int = 12,
    height: int = 128,
    width: int = 128,
    difficulty: str | Difficulty = "medium",
    min_area: int = 4,
) -> SyntheticVideo:
    """Generate one video in memory, deterministically from ``seed``.

    Args:
        seed: int or a numpy Generator (consumed).
        num_frames, height, width: video size (T >= 1, H and W >= 16).
        difficulty: preset name or a ``Difficulty``.
        min_area: visible parts smaller than this many pixels count as absent (mask emptied;
            the pixels stay in the frame, as an unlabelled sliver).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    if height < 16 or width < 16:
        raise ValueError(f"height/width: expected >= 16 pixels, got {height}x{width}")
    diff = get_difficulty(difficulty)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    short = min(height, width)

    cats, apps, group = _choose_objects(rng, diff)
    n = len(cats)
    radii = rng.uniform(*diff.size, size=n) * short
    if (group >= 0).any():  # look-alikes share a size within 5%
        radii[group >= 0] = radii[np.flatnonzero(group >= 0)[0]] * rng.uniform(
            0.95, 1.05, size=int((group >= 0).sum())
        )
    rbounds = np.array([bounding_radius(r, diff.deform, diff.deform) for r in radii])
    centers, exits = _trajectories(rng, diff, height, width, num_frames, radii, rbounds, group)
    depth = rng.permutation(n)
    angle0 = rng.uniform(0, 2 * np.pi, n)
    omega = rng.uniform(-diff.rotation, diff.rotation, n)
    scale_freq, scale_phase = rng.uniform(0.1, 0.4, n), rng.uniform(0, 2 * np.pi, n)
    wob_k, wob_phase = rng.integers(2, 4, n), rng.uniform(0, 2 * np.pi, n)
    wob_speed = rng.uniform(0.1, 0.5, n)
    squash_phase = rng.uniform(0, 2 * np.pi, n)

    backgrounds = _background(rng, height, width, num_frames, diff.camera_speed * short / 128)
    frames = backgrounds.copy()
    masks = np.zeros((num_frames, n, height, width), bool)
    order = np.argsort(depth)  # back to front
    for t in range(num_frames):
        owner = np.full((height, width), -1, np.int64)
        for i in order:
            out = rasterize(
                cats[i], apps[i], height, width,
                center=(float(centers[t, i, 0]), float(centers[t, i, 1])),
                radius_px=float(radii[i] * (1 + diff.scale_amp * np.sin(scale_freq[i] * t
                                                                      + scale_phase[i]))),
                angle=float(angle0[i] + omega[i] * t),
                aniso=float(diff.deform * np.sin(0.3 * t + squash_phase[i])),
                wobble=diff.deform,
                wobble_k=int(wob_k[i]),
                wobble_phase=float(wob_phase[i] + wob_speed[i] * t),
            )  # fmt: skip
            if out is None:
                continue
            (y0, y1, x0, x1), cover, color = out
            win = frames[t, y0:y1, x0:x1]
            win += cover[..., None] * (color - win)  # alpha compositing, in place
            owner[y0:y1, x0:x1][cover >= 0.5] = i
        for i in range(n):
            m = owner == i
            if m.sum() >= min_area:
                masks[t, i] = m
    # Per-frame exposure flicker and sensor noise, applied to the whole frame.
    gain = 1.0 + rng.normal(0, 0.02, size=(num_frames, 1, 1, 1))
    noisy = frames * gain + rng.normal(0, diff.noise, size=frames.shape)
    # An object hidden in every frame has no annotation to give: drop it (pixels stay).
    keep = masks.any(axis=(0, 2, 3))
    return SyntheticVideo(
        frames=np.clip(np.rint(noisy), 0, 255).astype(np.uint8),
        backgrounds=np.clip(np.rint(backgrounds), 0, 255).astype(np.uint8),
        masks=masks[:, keep],
        category_ids=np.array([c.id for c in cats], np.int64)[keep],
        centers=centers[:, keep],
        depth=depth.astype(np.int64)[keep],
        lookalike_group=group[keep],
        exits=exits[keep],
        info={"radii": radii.astype(np.float32)[keep]},
    )
