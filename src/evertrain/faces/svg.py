"""Small inline SVG charts, so reports are one self-contained file that works offline.

Only what the reports need: line charts with event markers, and step charts.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
MARKER_COLOURS = {"retrain": "#ff7f0e", "promotion": "#2ca02c", "rollback": "#d62728", "rejected": "#7f7f7f"}


@dataclass(frozen=True)
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    dashed: bool = False


@dataclass(frozen=True)
class Marker:
    x: float
    kind: str
    label: str


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    markers: Sequence[Marker] = (),
    y_range: tuple[float, float] | None = None,
    x_label: str = "",
    width: int = 760,
    height: int = 260,
) -> str:
    """An SVG line chart; ``None`` values break a line; markers are labelled vertical rules."""
    left, right, top, bottom = 48, 130, 28, 36
    xs = [x for s in series for x in s.xs] + [m.x for m in markers]
    ys = [y for s in series for y in s.ys if y is not None and math.isfinite(y)]
    if not xs or not ys:
        return f'<p class="empty">{html.escape(title)}: no data yet</p>'
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1
    y0, y1 = y_range if y_range else (min(ys), max(ys))
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}" font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
    ]
    for tick in _ticks(y0, y1):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{left - 4}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for tick in _ticks(x0, x1, 8):
        parts.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{tick:g}</text>')
    if x_label:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">'
            f"{html.escape(x_label)}</text>"
        )
    for i, m in enumerate(markers):
        colour = MARKER_COLOURS.get(m.kind, "#555")
        x = px(m.x)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="{colour}" '
            f'stroke-dasharray="3,3"><title>{html.escape(m.label)}</title></line>'
        )
        parts.append(
            f'<text x="{x + 2:.1f}" y="{top + 10 + (i % 4) * 11}" fill="{colour}">'
            f"{html.escape(m.kind)}</text>"
        )
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for x, y in zip(s.xs, s.ys, strict=True):
            if y is None or not math.isfinite(y):
                segments.append([])
                continue
            segments[-1].append(f"{px(x):.1f},{py(y):.1f}")
        dash = ' stroke-dasharray="5,3"' if s.dashed else ""
        for seg in segments:
            if len(seg) > 1:
                parts.append(
                    f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}" '
                    f'stroke-width="1.6"{dash}/>'
                )
            elif seg:
                cx, cy = seg[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
        ly = top + 12 + i * 14
        parts.append(
            f'<line x1="{left + plot_w + 8}" x2="{left + plot_w + 24}" y1="{ly}" y2="{ly}" '
            f'stroke="{colour}"{dash}/>'
        )
        parts.append(f'<text x="{left + plot_w + 28}" y="{ly + 4}">{html.escape(s.name[:16])}</text>')
    parts.append("</svg>")
    return "".join(parts)
