"""Line charts as SVG text, with no plotting library: axes, ticks, labels, a legend.

    svg = line_chart([Series("train loss", steps, losses, "#1f77b4")],
                     x_label="step", left=Axis("loss", log=True), title="loss")

The picture, in pixels (y grows downwards in SVG)::

    +-------------------------------------------------------------+
    |                           title                             |
    |  tick  +------------------------------------+ tick   legend |
    |  labels|  the plot area (id="plot-area"):   | labels  ---- a|
    |  left  |  one <g class="series"> per series | right   ---- b|
    |  axis  |  (a polyline, and circle markers)  | axis          |
    |        +------------------------------------+               |
    |                 x tick labels, x label                      |
    +-------------------------------------------------------------+

A value v on an axis [lo, hi] lands at  p = p0 + (f(v) - f(lo)) / (f(hi) - f(lo)) * length,
with f = log10 on a log axis and the identity otherwise; the y axes run upwards.
Points that are not finite (or not positive on a log axis) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

# matplotlib's "tab10" colours: one per series, in order
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")
WIDTH, HEIGHT = 820, 420
LEFT, TOP, BOTTOM = 70, 40, 60  # margins around the plot area
AXIS2, LEGEND = 60, 170  # widths of the right axis' labels and of the legend, right of the plot


@dataclass(frozen=True)
class Axis:
    """A y axis: its label, log or linear, and fixed bounds (None: from the data)."""

    label: str
    log: bool = False
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Series:
    """One line: (x, y) points on the ``left`` or right axis, dashed or solid, with or without markers."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: str
    right: bool = False
    dashed: bool = False
    markers: bool = False
    width: float = 1.5


def kept(s: Series, log: bool) -> list[tuple[float, float]]:
    """The points of ``s`` that can be drawn: finite, and positive on a log axis."""
    return [(float(x), float(y)) for x, y in zip(s.x, s.y, strict=True)
            if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log)]


def linear_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values in [lo, hi]: multiples of 1, 2 or 5 times a power of ten."""
    raw = (hi - lo) / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten in [lo, hi]; with 2 and 5 times them when that gives fewer than three."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    inside = lambda v: lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)
    for mults in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
        ticks = [m * 10.0**k for k in decades for m in mults if inside(m * 10.0**k)]
        if len(ticks) >= 3:
            break
    return ticks


def round_down(v: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is <= v (v > 0)."""
    mag = 10.0 ** math.floor(math.log10(v))
    return next(m * mag for m in (5, 2, 1) if m * mag <= v * (1 + 1e-9))


def round_up(v: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= v (v > 0)."""
    mag = 10.0 ** math.floor(math.log10(v))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= v * (1 - 1e-9))


def bounds(values: list[float], axis: Axis) -> tuple[float, float]:
    """[lo, hi] of an axis: its fixed bounds, else the data's (a log axis widened to 1, 2, 5 x 10^k)."""
    lo = axis.lo if axis.lo is not None else min(values, default=1.0)
    hi = axis.hi if axis.hi is not None else max(values, default=1.0)
    if axis.log:
        lo = round_down(lo) if axis.lo is None else lo
        hi = round_up(hi) if axis.hi is None else hi
        return (lo, hi * 10) if hi <= lo else (lo, hi)
    return (lo - 0.5, hi + 0.5) if hi <= lo else (lo, hi)


class Scale:
    """value -> pixel on one axis: p0 + (f(v) - f(lo)) / (f(hi) - f(lo)) * length (f = log10 or id)."""

    def __init__(self, lo: float, hi: float, p0: float, length: float, log: bool = False):
        self.f = math.log10 if log else (lambda v: v)
        self.lo, self.hi, self.p0, self.length = lo, hi, p0, length

    def __call__(self, v: float) -> float:
        f = self.f
        return self.p0 + (f(v) - f(self.lo)) / (f(self.hi) - f(self.lo)) * self.length


def text(x: float, y: float, s: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(s)}</text>'


def line(x1: float, y1: float, x2: float, y2: float, style: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" {style}/>'


def y_axis(scale: Scale, axis: Axis, x: float, outward: int, grid_to: float | None) -> list[str]:
    """Ticks, tick labels and the label of a y axis at pixel ``x`` (``outward`` -1: left, +1: right)."""
    ticks = log_ticks(scale.lo, scale.hi) if axis.log else linear_ticks(scale.lo, scale.hi)
    out = []
    for t in ticks:
        py = scale(t)
        if grid_to is not None:
            out.append(line(x, py, grid_to, py, 'stroke="#e0e0e0"'))
        out.append(line(x, py, x + 5 * outward, py, 'stroke="#333"'))
        out.append(text(x + 8 * outward, py + 4, f"{t:g}", "end" if outward < 0 else "start"))
    lx, ly = x + (LEFT - 18) * outward, scale.p0 + scale.length / 2
    out.append(text(lx, ly, axis.label, extra=f' transform="rotate(-90 {lx:.1f} {ly:.1f})"'))
    return out


def polyline(s: Series, points: list[tuple[float, float]], sx: Scale, sy: Scale) -> str:
    """One series: a <g class="series"> with its polyline (and markers) in pixels."""
    xy = [(sx(x), sy(y)) for x, y in points]
    dash = ' stroke-dasharray="6 3"' if s.dashed else ""
    parts = [f'<g class="series" data-label={quoteattr(s.label)}><title>{escape(s.label)}</title>',
             f'<polyline points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in xy)}" fill="none" '
             f'stroke="{s.color}" stroke-width="{s.width}"{dash}/>']
    if s.markers:
        parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{s.color}"/>' for px, py in xy]
    return "".join(parts) + "</g>"


def line_chart(series: Sequence[Series], x_label: str, left: Axis, right: Axis | None = None,
               title: str = "", note: str = "") -> str:
    """The SVG document of ``series`` against x (linear, from 0), on ``left`` and ``right`` y axes.

    ``title`` above the plot area, ``note`` (smaller) under the x label.
    """
    width = WIDTH + (AXIS2 if right else 0)
    x0, x1 = LEFT, width - LEGEND - (AXIS2 if right else 20)  # the plot area's pixel bounds
    y0, y1 = TOP, HEIGHT - BOTTOM
    axes = {False: left, True: right or left}
    pts = {id(s): kept(s, axes[s.right].log) for s in series}
    xs = [x for p in pts.values() for x, _ in p]
    sx = Scale(0.0, max(xs, default=1.0) or 1.0, x0, x1 - x0)
    scales = {}
    for side, axis in axes.items():
        lo, hi = bounds([y for s in series if s.right == side for _, y in pts[id(s)]], axis)
        scales[side] = Scale(lo, hi, y1, y0 - y1, axis.log)  # upwards: from the bottom edge
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" '
           f'viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{HEIGHT}" fill="white"/>',
           text((x0 + x1) / 2, 22, title, extra=' font-size="14"')]
    out += y_axis(scales[False], left, x0, -1, x1)
    if right:
        out += y_axis(scales[True], right, x1, +1, None)
    for t in linear_ticks(sx.lo, sx.hi):
        out += [line(sx(t), y1, sx(t), y1 + 5, 'stroke="#333"'), text(sx(t), y1 + 18, f"{t:g}")]
    out.append(text((x0 + x1) / 2, HEIGHT - 22, x_label))
    if note:
        out.append(text((x0 + x1) / 2, HEIGHT - 6, note, extra=' font-size="10" fill="#555"'))
    out.append(f'<rect id="plot-area" x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" '
               'fill="none" stroke="#333"/>')
    out += [polyline(s, pts[id(s)], sx, scales[s.right]) for s in series]
    lx = width - LEGEND + 10  # the legend: a short line of each series' style, then its label
    for i, s in enumerate(series):
        ly = y0 + 10 + 18 * i
        dash = ' stroke-dasharray="6 3"' if s.dashed else ""
        out.append(line(lx, ly, lx + 24, ly, f'stroke="{s.color}" stroke-width="{s.width}"{dash}'))
        out.append(text(lx + 30, ly + 4, s.label, "start"))
    return "\n".join([*out, "</svg>"]) + "\n"
