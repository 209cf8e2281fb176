"""Line charts drawn with Pillow's ImageDraw (no matplotlib dependency).

``line_chart(panels, path)`` stacks panels vertically, all sharing one x axis (steps). Each
panel has a title, a y label, optional y limits and a list of series; every series is drawn
as a polyline (``markers=True`` adds dots, for sparse series such as evaluations) and named
in the panel's legend.

    Series("train loss", xs, ys, color=(31, 119, 180))
    Panel("loss", "loss", [series, ...], ylim=None)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]


@dataclass
class Series:
    name: str
    xs: list[float]
    ys: list[float]
    color: tuple[int, int, int] = PALETTE[0]
    width: int = 2
    markers: bool = False


@dataclass
class Panel:
    title: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    ylim: tuple[float, float] | None = None
    legend: str = "upper right"  # or "lower right"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: step = 1, 2 or 5 x 10^k."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, v = [], first
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.2g}" if abs(v) < 0.1 else f"{v:.2f}".rstrip("0").rstrip(".")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # FreeType build of Pillow >= 10.1
    except (TypeError, OSError):
        return ImageFont.load_default()


def line_chart(
    panels: list[Panel],
    path: str | Path,
    *,
    xlabel: str = "step",
    title: str = "",
    size: tuple[int, int] = (900, 0),
) -> Path:
    """Draw ``panels`` (top to bottom) into a PNG at ``path``; returns the path.
    ``size``: (width, height), height 0 -> 330 px per panel plus the title."""
    if not panels:
        raise ValueError("line_chart: no panels")
    W = size[0]
    panel_h = 330
    top = 40 if title else 10
    H = size[1] or top + panel_h * len(panels) + 40
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    f_title, f_text, f_small = _font(18), _font(14), _font(12)
    if title:
        draw.text((W // 2, 12), title, fill="black", font=f_title, anchor="mt")
    all_x = [x for p in panels for s in p.series for x in s.xs]
    x_lo, x_hi = (min(all_x), max(all_x)) if all_x else (0.0, 1.0)
    x_ticks = nice_ticks(0.0 if x_lo >= 0 else x_lo, x_hi, 8)
    x_lo, x_hi = x_ticks[0], max(x_ticks[-1], x_hi)
    left, right = 80, W - 30
    for i, panel in enumerate(panels):
        y0 = top + i * panel_h + 30  # plot area top
        y1 = y0 + panel_h - 85  # plot area bottom
        all_y = [y for s in panel.series for y in s.ys if math.isfinite(y)]
        if panel.ylim is not None:
            lo, hi = panel.ylim
        else:
            lo, hi = (min(all_y), max(all_y)) if all_y else (0.0, 1.0)
            pad = 0.05 * (hi - lo or 1.0)
            lo, hi = lo - pad, hi + pad
        y_ticks = [t for t in nice_ticks(lo, hi, 5) if lo - 1e-9 <= t <= hi + 1e-9]

        def px(x: float, _l=left, _r=right) -> float:
            return _l + (x - x_lo) / (x_hi - x_lo or 1.0) * (_r - _l)

        def py(y: float, _lo=lo, _hi=hi, _y0=y0, _y1=y1) -> float:
            return _y1 - (y - _lo) / (_hi - _lo or 1.0) * (_y1 - _y0)

        draw.text(
            ((left + right) // 2, y0 - 22), panel.title, fill="black", font=f_text, anchor="mt"
        )
        for t in y_ticks:  # grid + y tick labels
            y = py(t)
            draw.line([(left, y), (right, y)], fill=(225, 225, 225))
            draw.line([(left - 5, y), (left, y)], fill="black")
            draw.text((left - 8, y), _fmt(t), fill="black", font=f_small, anchor="rm")
        for t in x_ticks:
            x = px(t)
            draw.line([(x, y1), (x, y1 + 5)], fill="black")
            draw.text((x, y1 + 8), _fmt(t), fill="black", font=f_small, anchor="mt")
        draw.rectangle([left, y0, right, y1], outline="black")
        draw.text(
            (left + (right - left) // 2, y1 + 26), xlabel, fill="black", font=f_text, anchor="mt"
        )
        # rotated y label
        label = Image.new("RGBA", (int(draw.textlength(panel.ylabel, font=f_text)) + 4, 20))
        ImageDraw.Draw(label).text((2, 2), panel.ylabel, fill="black", font=f_text)
        label = label.rotate(90, expand=True)
        img.paste(label, (8, int((y0 + y1) / 2 - label.height / 2)), label)
        for s in panel.series:
            pts = [
                (px(x), py(min(max(y, lo), hi)))
                for x, y in zip(s.xs, s.ys, strict=True)
                if math.isfinite(y)
            ]
            if len(pts) > 1:
                draw.line(pts, fill=s.color, width=s.width, joint="curve")
            if s.markers or len(pts) == 1:
                for x, y in pts:
                    draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=s.color)
        # legend box in the upper right corner of the plot area
        if panel.series:
            rows = [s.name for s in panel.series]
            lw = max(int(draw.textlength(r, font=f_small)) for r in rows) + 40
            lh = 18 * len(rows) + 6
            lx, ly = right - lw - 8, (y0 + 8 if panel.legend == "upper right" else y1 - lh - 8)
            draw.rectangle([lx, ly, lx + lw, ly + lh], fill="white", outline="gray")
            for k, s in enumerate(panel.series):
                yy = ly + 12 + 18 * k
                draw.line([(lx + 6, yy), (lx + 28, yy)], fill=s.color, width=3)
                draw.text((lx + 34, yy), s.name, fill="black", font=f_small, anchor="lm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
