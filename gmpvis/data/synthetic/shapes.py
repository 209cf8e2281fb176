"""Categories, instance appearance and numpy rasterisation of one textured shape.

A shape lives in its own unit frame (u, v): radius 1 is its nominal size. Its outline is a
polar radius function ``R(theta)`` (so disc, square, triangle, star and ring share one code
path), modulated by a small wobble ``1 + a * sin(k * theta + psi)`` that deforms it over time.
The texture is a function of (u, v), so it moves, rotates and scales with the object, which
is what makes appearance a usable association cue.

Class is learnable from shape + texture type + hue family (each category owns a hue band);
look-alike instances of one category copy one appearance with a tiny jitter.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Category:
    """One object class: JSON id, name, hue band centre and texture type."""

    id: int
    name: str
    hue: float  # centre of the category's hue band in [0, 1)
    texture: str  # dots | checker | stripes | spiral | bands


# Hue centres are >= 0.13 apart; instance hue jitter is at most +-0.03, so bands never meet.
CATEGORIES: tuple[Category, ...] = (
    Category(1, "disc", 0.02, "dots"),
    Category(2, "square", 0.33, "checker"),
    Category(3, "triangle", 0.60, "stripes"),
    Category(4, "star", 0.15, "spiral"),
    Category(5, "ring", 0.85, "bands"),
)
SUPERCATEGORY = "shape"

# Largest R(theta) of any outline (square corners reach 0.8 * sqrt(2)).
_MAX_OUTLINE = 1.14
_RING_INNER = 0.55  # ring hole radius, relative to the outer outline
_TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class Appearance:
    """Colours and texture parameters of one instance (colours RGB floats in [0, 255])."""

    color1: tuple[float, float, float]
    color2: tuple[float, float, float]
    freq: float  # texture cycles per unit radius
    phase: float  # texture phase (radians)
    angle: float  # stripe direction (radians)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (r * 255.0, g * 255.0, b * 255.0)


def sample_appearance(rng: np.random.Generator, category: Category) -> Appearance:
    """A fresh instance look inside the category's family (hue band, texture type)."""
    hue = category.hue + rng.uniform(-0.03, 0.03)
    sat = rng.uniform(0.65, 0.95)
    val = rng.uniform(0.75, 0.98)
    # Second texture colour: same hue, darker or paler, so the pattern stays in the family.
    if rng.random() < 0.5:
        color2 = _hsv(hue + rng.uniform(-0.02, 0.02), sat, val * rng.uniform(0.35, 0.55))
    else:
        color2 = _hsv(hue + rng.uniform(-0.02, 0.02), sat * rng.uniform(0.25, 0.45), 1.0)
    return Appearance(
        color1=_hsv(hue, sat, val),
        color2=color2,
        freq=float(rng.uniform(1.5, 3.0)),
        phase=float(rng.uniform(0.0, _TWO_PI)),
        angle=float(rng.uniform(0.0, np.pi)),
    )


def lookalike_of(rng: np.random.Generator, app: Appearance) -> Appearance:
    """A near-copy of ``app``: colours within +-3 levels, same texture up to a phase shift."""

    def jitter(c):
        return tuple(float(np.clip(x + rng.uniform(-3.0, 3.0), 0, 255)) for x in c)

    return replace(
        app,
        color1=jitter(app.color1),
        color2=jitter(app.color2),
        phase=float(app.phase + rng.uniform(-0.3, 0.3)),
    )


def outline_radius(name: str, theta: np.ndarray) -> np.ndarray:
    """Polar outline ``R(theta)`` of a category's shape in unit coordinates."""
    if name in ("disc", "ring"):
        return np.ones_like(theta)
    if name == "square":  # half side 0.8: R = 0.8 / max(|cos|, |sin|)
        return 0.8 / np.maximum(np.abs(np.cos(theta)), np.abs(np.sin(theta)))
    if name == "triangle":  # inradius 0.5, edge normals every 120 deg -> vertices at radius 1
        normals = -0.5 * np.pi + _TWO_PI * np.arange(3) / 3.0
        support = np.cos(theta[..., None] - normals).max(axis=-1)
        return 0.5 / support
    if name == "star":  # 5 points at radius 1, valleys at 0.45, linear in theta in between
        period = _TWO_PI / 5.0
        x = np.mod(theta - 0.5 * np.pi, period) / period  # 0 at a point, 0.5 at a valley
        return 0.45 + 0.55 * np.abs(1.0 - 2.0 * x)
    raise ValueError(f"outline_radius: unknown shape {name!r}")


def texture_pattern(
    kind: str, u: np.ndarray, v: np.ndarray, r: np.ndarray, theta: np.ndarray, app: Appearance
) -> np.ndarray:
    """Mixing weight in [0, 1] between the two colours at unit coordinates (u, v)."""
    f = app.freq
    if kind == "dots":
        fu = np.mod(u * f * 1.5 + app.phase / _TWO_PI, 1.0) - 0.5
        fv = np.mod(v * f * 1.5, 1.0) - 0.5
        return (fu * fu + fv * fv < 0.08).astype(np.float32)
    if kind == "checker":
        k = np.floor(u * f * 1.2 + app.phase) + np.floor(v * f * 1.2)
        return np.mod(k, 2.0).astype(np.float32)
    if kind == "stripes":
        s = u * np.cos(app.angle) + v * np.sin(app.angle)
        return (np.sin(_TWO_PI * f * s + app.phase) > 0).astype(np.float32)
    if kind == "spiral":
        return 0.5 + 0.5 * np.sin(_TWO_PI * f * r + 3.0 * theta + app.phase)
    if kind == "bands":
        return 0.5 + 0.5 * np.sin(_TWO_PI * 2.0 * f * r + app.phase)
    raise ValueError(f"texture_pattern: unknown texture {kind!r}")


def bounding_radius(radius_px: float, aniso: float, wobble: float) -> float:
    """Pixel radius that contains the whole shape for the given deformation amplitudes."""
    return radius_px * _MAX_OUTLINE * (1.0 + abs(aniso)) * (1.0 + abs(wobble)) + 1.0


def rasterize(
    category: Category,
    app: Appearance,
    height: int,
    width: int,
    center: tuple[float, float],
    radius_px: float,
    angle: float,
    aniso: float,
    wobble: float,
    wobble_k: int,
    wobble_phase: float,
) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
    """Render one shape inside its bounding window.

    The pixel (x, y) centre maps to unit coordinates by translating to ``center``, rotating
    by ``-angle``, dividing by ``radius_px`` and squashing: ``u /= 1 + aniso``,
    ``v *= 1 + aniso`` (area-preserving). The outline is ``R(theta) * (1 + wobble *
    sin(wobble_k * theta + wobble_phase))``; coverage is a one-pixel linear ramp across it.

    Returns:
        ``(y0, y1, x0, x1)`` window, coverage float32 ``[h, w]`` in [0, 1], colour float32
        ``[h, w, 3]``; or None when the window is outside the image.
    """
    cx, cy = center
    rb = bounding_radius(radius_px, aniso, wobble)
    x0, x1 = max(int(np.floor(cx - rb)), 0), min(int(np.ceil(cx + rb)) + 1, width)
    y0, y1 = max(int(np.floor(cy - rb)), 0), min(int(np.ceil(cy + rb)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    c, s = np.cos(angle), np.sin(angle)
    u = (dx * c + dy * s) / (radius_px * (1.0 + aniso))
    v = (-dx * s + dy * c) * (1.0 + aniso) / radius_px
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    outer = outline_radius(category.name, theta)
    outer = outer * (1.0 + wobble * np.sin(wobble_k * theta + wobble_phase))
    # (R - r) in pixels approximates the signed distance to the outline.
    cover = np.clip((outer - r) * radius_px + 0.5, 0.0, 1.0)
    if category.name == "ring":
        cover = np.minimum(cover, np.clip((r - _RING_INNER * outer) * radius_px + 0.5, 0, 1))
    if not np.any(cover > 0):
        return None
    p = texture_pattern(category.texture, u, v, r, theta, app)[..., None]
    color = (1.0 - p) * np.asarray(app.color1, np.float32) + p * np.asarray(app.color2, np.float32)
    # Soft dome shading: brighter centre, a cue of a solid object rather than a flat sticker.
    color = color * (0.8 + 0.25 * np.clip(1.0 - r, 0.0, 1.0))[..., None]
    return (y0, y1, x0, x1), cover.astype(np.float32), color.astype(np.float32)
