"""Small inline SVG charts, so reports are one self-contained file that works offline.

Every chart is a ``<figure>``: its title and legend are HTML (they wrap with the page,
so a long series name is never cut), the plot is an SVG with a ``viewBox`` and
``width: 100%``, so it takes the width of its container at any window size. Inside
the SVG there are only tick labels, spaced from their estimated widths so that they
never overlap, and nothing is drawn outside the plot area: the value range always
includes the data and the thresholds, and events are vertical rules explained by the
legend (their details in a tooltip) rather than labels that could collide.

Missing values are gaps on purpose: a line stops, the missing stretch is shaded, and the
legend says what the shading means. Colours are the Okabe-Ito palette, which holds for
the common kinds of colour blindness; dashes and markers tell series apart in grey too.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Okabe & Ito (2008): distinguishable with protanopia, deuteranopia and tritanopia.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKER_COLOURS = {
    "retrain": "#E69F00",
    "promotion": "#009E73",
    "rollback": "#D55E00",
    "rejected": "#7F7F7F",
    "failed": "#CC79A7",
    "drift": "#56B4E9",
}
MARKER_DASH = {
    "drift": "1,4",
    "retrain": "4,3",
    "promotion": "",
    "rollback": "1,2",
    "rejected": "6,2,1,2",
    "failed": "2,2",
}
THRESHOLD_COLOUR = "#D55E00"
GAP_FILL = "#f1f1f1"

FONT_SIZE = 12
CHAR_WIDTH = 0.62 * FONT_SIZE  # generous average advance of a sans-serif glyph
WIDTH, HEIGHT = 600, 220


@dataclass(frozen=True)
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    dashed: bool = False
    colour: str | None = None


@dataclass(frozen=True)
class Marker:
    x: float
    kind: str
    label: str


@dataclass(frozen=True)
class Threshold:
    y: float
    label: str


def text_width(text: str) -> float:
    """An upper estimate of ``text``'s width at the charts' font size."""
    return len(text) * CHAR_WIDTH


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    first = math.ceil(lo / step - 1e-9) * step
    count = int((hi - first) / step + 1e-9) + 1
    return [round(first + i * step, 12) for i in range(count)]


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


def _x_ticks(lo: float, hi: float, plot_w: float, fmt: Callable[[float], str]) -> list[float]:
    """As many x ticks as fit side by side with room between their labels; integers for integer axes."""
    integer = float(lo).is_integer() and float(hi).is_integer() and hi - lo >= 4  # e.g. cycle numbers
    for n in range(10, 0, -1):
        ticks = _ticks(lo, hi, n)
        if integer:
            ticks = [t for t in ticks if float(t).is_integer()]
        if len(ticks) <= 1:
            return ticks
        spacing = plot_w * (ticks[1] - ticks[0]) / (hi - lo)
        if spacing > max(text_width(fmt(t)) for t in ticks) + 12:
            return ticks
    return [lo]


def _legend(items: Sequence[tuple[str, str, str]]) -> str:
    """An HTML legend: (swatch kind, colour or dash, label); it wraps, so nothing is ever cut."""
    out = []
    for kind, style, label in items:
        out.append(f'<li><span class="sw {kind}" style="{style}"></span>{html.escape(label)}</li>')
    return f'<ul class="legend">{"".join(out)}</ul>'


def figure(title: str, svg: str, legend: str = "", note: str = "", cls: str = "") -> str:
    """A chart's figure: title, plot, legend and an optional note under it."""
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (
        f'<figure class="chart {cls}"><figcaption>{html.escape(title)}</figcaption>'
        f"{svg}{legend}{note_html}</figure>"
    )


def empty(title: str, why: str = "no data yet") -> str:
    return (
        f'<figure class="chart empty"><figcaption>{html.escape(title)}</figcaption>'
        f'<p class="note">{html.escape(why)}</p></figure>'
    )


def _open_svg(title: str, width: float = WIDTH, height: float = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:g}" '
        f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="{html.escape(title)}" '
        f'font-family="system-ui,sans-serif" font-size="{FONT_SIZE}">'
    )


@dataclass(frozen=True)
class _Frame:
    left: float
    top: float
    plot_w: float
    plot_h: float
    x0: float
    x1: float
    y0: float
    y1: float

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.plot_w

    def py(self, y: float) -> float:
        return self.top + (1 - (y - self.y0) / (self.y1 - self.y0)) * self.plot_h


def _axes(
    fr: _Frame,
    *,
    y_fmt: Callable[[float], str],
    x_fmt: Callable[[float], str],
    x_label: str,
    y_ticks: int = 5,
    x_ticks: Sequence[float] | None = None,
    width: float = WIDTH,
) -> list[str]:
    parts = [
        f'<rect x="{fr.left}" y="{fr.top}" width="{fr.plot_w}" height="{fr.plot_h}" fill="none" '
        'stroke="#bbb"/>'
    ]
    for tick in _ticks(fr.y0, fr.y1, y_ticks) if y_ticks else ():
        y = fr.py(tick)
        parts.append(
            f'<line x1="{fr.left}" x2="{fr.left + fr.plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(
            f'<text class="tick" x="{fr.left - 5}" y="{y + 4:.1f}" '
            f'text-anchor="end">{html.escape(y_fmt(tick))}</text>'
        )
    xt = list(x_ticks) if x_ticks is not None else _x_ticks(fr.x0, fr.x1, fr.plot_w, x_fmt)
    last_right = -math.inf
    for tick in xt:
        x = fr.px(tick)
        label = x_fmt(tick)
        half = text_width(label) / 2
        if x - half < max(last_right + 6, 1.0) or x + half > width - 1:
            continue  # would touch its neighbour or leave the picture: skip it
        last_right = x + half
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{fr.top + fr.plot_h + 18}" '
            f'text-anchor="middle">{html.escape(label)}</text>'
        )
    if x_label:
        parts.append(
            f'<text class="axis" x="{fr.left + fr.plot_w / 2:.1f}" y="{fr.top + fr.plot_h + 35}" '
            f'text-anchor="middle" fill="#555">{html.escape(x_label)}</text>'
        )
    return parts


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    markers: Sequence[Marker] = (),
    thresholds: Sequence[Threshold] = (),
    y_range: tuple[float, float] | None = None,
    x_label: str = "",
    y_fmt: Callable[[float], str] = _fmt_tick,
    x_fmt: Callable[[float], str] = _fmt_tick,
    note: str = "",
) -> str:
    """A line chart as a figure; ``None`` values are gaps (shaded); markers are vertical rules."""
    xs = [x for s in series for x in s.xs] + [m.x for m in markers]
    ys = [y for s in series for y in s.ys if y is not None and math.isfinite(y)]
    if not xs or not ys:
        return empty(title)
    ys += [t.y for t in thresholds]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    lo, hi = min(ys), max(ys)
    if y_range is not None:  # a preferred range, widened to hold every value
        lo, hi = min(lo, y_range[0]), max(hi, y_range[1])
    else:
        pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 0.5
        lo, hi = (0.0 if lo >= 0 and lo - pad < 0 else lo - pad), hi + pad
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    y_labels = [y_fmt(t) for t in _ticks(lo, hi)]
    left = 12 + max(text_width(t) for t in y_labels)
    right, top, bottom = 14, 10, 40 if x_label else 26
    fr = _Frame(left, top, WIDTH - left - right, HEIGHT - top - bottom, x0, x1, lo, hi)
    parts = [_open_svg(title)]
    # gaps first, under everything: where a series has no value between two points that do
    gap_spans = _gaps(series)
    for a, b in gap_spans:
        xa, xb = fr.px(a), fr.px(b)
        parts.append(
            f'<rect class="gap" x="{xa:.1f}" y="{top}" width="{max(xb - xa, 2):.1f}" '
            f'height="{fr.plot_h}" fill="{GAP_FILL}"/>'
        )
    parts += _axes(fr, y_fmt=y_fmt, x_fmt=x_fmt, x_label=x_label)
    for t in thresholds:
        y = fr.py(t.y)
        parts.append(
            f'<line class="threshold" x1="{left}" x2="{left + fr.plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{THRESHOLD_COLOUR}" stroke-width="1.2" stroke-dasharray="8,4">'
            f"<title>{html.escape(t.label)}</title></line>"
        )
    for m in markers:
        colour = MARKER_COLOURS.get(m.kind, "#555")
        x = fr.px(m.x)
        dash = MARKER_DASH.get(m.kind, "3,3")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line class="event {html.escape(m.kind)}" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
            f'y2="{top + fr.plot_h}" '
            f'stroke="{colour}" stroke-width="1.5"{dash_attr}><title>{html.escape(m.label)}</title></line>'
        )
        parts.append(
            f'<path d="M{x - 4:.1f},{top} L{x + 4:.1f},{top} L{x:.1f},{top + 6} Z" fill="{colour}">'
            f"<title>{html.escape(m.label)}</title></path>"
        )
    legend: list[tuple[str, str, str]] = []
    for i, s in enumerate(series):
        colour = s.colour or PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="6,3"' if s.dashed else ""
        segments: list[list[tuple[float, float]]] = [[]]
        for xv, yv in zip(s.xs, s.ys, strict=True):
            if yv is None or not math.isfinite(yv):
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append((fr.px(xv), fr.py(yv)))
        for seg in segments:
            if len(seg) > 1:
                points = " ".join(f"{a:.1f},{b:.1f}" for a, b in seg)
                parts.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}>'
                    f"<title>{html.escape(s.name)}</title></polyline>"
                )
            for a, b in seg if len(seg) <= 40 else ():
                parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.4" fill="{colour}"/>')
        legend.append(("line dashed" if s.dashed else "line", f"border-color:{colour}", s.name))
    for t in thresholds:
        legend.append(("line dashed", f"border-color:{THRESHOLD_COLOUR}", t.label))
    for kind in dict.fromkeys(m.kind for m in markers):
        legend.append(("rule", f"border-color:{MARKER_COLOURS.get(kind, '#555')}", kind))
    if gap_spans:
        legend.append(("box", f"background:{GAP_FILL}", "no value (gap)"))
    parts.append("</svg>")
    return figure(title, "".join(parts), _legend(legend), note)


def _gaps(series: Sequence[Series]) -> list[tuple[float, float]]:
    """Stretches where the first series (the main one) has no value between two that it has."""
    if not series:
        return []
    s = series[0]
    pts = list(zip(s.xs, s.ys, strict=True))
    out: list[tuple[float, float]] = []
    last_ok: float | None = None
    missing = False
    for x, y in pts:
        if y is None or not math.isfinite(y):
            missing = True
            continue
        if missing and last_ok is not None:
            out.append((last_ok, x))
        last_ok, missing = x, False
    return out


def step_chart(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    title: str,
    name: str,
    x_fmt: Callable[[float], str] = _fmt_tick,
    y_fmt: Callable[[float], str] = _fmt_tick,
    x_label: str = "",
    y_range: tuple[float, float] = (0.0, 1.0),
    markers: Sequence[Marker] = (),
    note: str = "",
) -> str:
    """A step line (a value that holds until it changes), e.g. a canary's traffic share."""
    if not xs:
        return empty(title)
    sx: list[float] = []
    sy: list[float | None] = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if i:
            sx.append(x)
            sy.append(sy[-1])
        sx.append(x)
        sy.append(y)
    return line_chart(
        [Series(name, sx, sy)],
        title=title,
        markers=markers,
        y_range=y_range,
        x_fmt=x_fmt,
        y_fmt=y_fmt,
        x_label=x_label,
        note=note,
    )


def histogram_pair(
    labels: Sequence[str],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    title: str,
    names: tuple[str, str] = ("reference", "current"),
    note: str = "",
) -> str:
    """Two distributions side by side as shares per bin or category (bars, reference then current)."""
    if not labels:
        return empty(title)
    ref_total = sum(reference) or 1.0
    cur_total = sum(current) or 1.0
    r = [v / ref_total for v in reference]
    c = [v / cur_total for v in current]
    top_v = max(r + c) or 1.0
    left = 12 + text_width(_pct(top_v))
    fr = _Frame(left, 10, WIDTH - left - 14, HEIGHT - 10 - 26, 0, len(labels), 0, top_v * 1.08)
    parts = [_open_svg(title)]
    parts += _axes(fr, y_fmt=_pct, x_fmt=lambda _: "", x_label="", x_ticks=[])
    slot = fr.plot_w / len(labels)
    bar = slot * 0.4
    for i, (a, b) in enumerate(zip(r, c, strict=True)):
        x = fr.left + i * slot + slot * 0.1
        for j, (v, colour) in enumerate(((a, PALETTE[0]), (b, PALETTE[1]))):
            y = fr.py(v)
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{fr.top + fr.plot_h - y:.1f}" '
                f'fill="{colour}"><title>{html.escape(labels[i])}: {names[j]} {_pct(v)}</title></rect>'
            )
    # category labels under the bars, only where they fit in their slot
    for i, label in enumerate(labels):
        if text_width(label) + 4 <= slot:
            parts.append(
                f'<text class="tick" x="{fr.left + (i + 0.5) * slot:.1f}" y="{fr.top + fr.plot_h + 18}" '
                f'text-anchor="middle">{html.escape(label)}</text>'
            )
    parts.append("</svg>")
    legend = _legend(
        [("box", f"background:{PALETTE[0]}", names[0]), ("box", f"background:{PALETTE[1]}", names[1])]
    )
    return figure(title, "".join(parts), legend, note)


def _pct(v: float) -> str:
    return f"{v:.0%}" if v >= 0.1 or v == 0 else f"{v:.1%}"


@dataclass(frozen=True)
class Interval:
    name: str
    value: float | None
    low: float | None
    high: float | None
    colour: str | None = None


def interval_chart(items: Sequence[Interval], *, title: str, x_label: str = "", note: str = "") -> str:
    """Each item's value with its interval as a dot and whiskers, one row per item."""
    known = [i for i in items if i.value is not None]
    if not known:
        return empty(title, "no labelled rows yet")
    vals = [v for i in known for v in (i.value, i.low, i.high) if v is not None]
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.1 or 0.05
    lo, hi = lo - pad, hi + pad
    row_h = 34
    height = 10 + row_h * len(items) + (40 if x_label else 26)
    left = 12 + max(text_width(i.name) for i in items)
    fr = _Frame(left, 10, WIDTH - left - 14, row_h * len(items), lo, hi, 0, len(items))
    parts = [_open_svg(title, height=height)]
    parts += _axes(fr, y_fmt=lambda _: "", x_fmt=_fmt_tick, x_label=x_label, y_ticks=0)
    # the y grid above drew one blank label at y0; the rows are labelled here
    for k, item in enumerate(items):
        colour = item.colour or PALETTE[k % len(PALETTE)]
        y = fr.top + (k + 0.5) * row_h
        parts.append(
            f'<text class="tick" x="{left - 6:.1f}" y="{y + 4:.1f}" '
            f'text-anchor="end">{html.escape(item.name)}</text>'
        )
        if item.value is None:
            continue
        if item.low is not None and item.high is not None:
            xa, xb = fr.px(item.low), fr.px(item.high)
            parts.append(
                f'<line x1="{xa:.1f}" x2="{xb:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
                'stroke-width="2"/>'
            )
            for xe in (xa, xb):
                parts.append(
                    f'<line x1="{xe:.1f}" x2="{xe:.1f}" y1="{y - 6:.1f}" y2="{y + 6:.1f}" '
                    f'stroke="{colour}" stroke-width="2"/>'
                )
        tip = f"{item.name}: {item.value:.4g}"
        if item.low is not None and item.high is not None:
            tip += f" [{item.low:.4g}, {item.high:.4g}]"
        parts.append(
            f'<circle cx="{fr.px(item.value):.1f}" cy="{y:.1f}" r="5" '
            f'fill="{colour}"><title>{html.escape(tip)}</title></circle>'
        )
    parts.append("</svg>")
    return figure(title, "".join(parts), "", note)


def reliability_chart(bins: Sequence[tuple[float, float, int]], *, title: str, note: str = "") -> str:
    """Calibration: mean predicted probability against the observed rate per bin, and the diagonal."""
    if not bins:
        return empty(title, "no labelled rows with scores yet")
    left = 12 + text_width("100%")
    # the right margin holds half of the last x label ("100%")
    fr = _Frame(left, 10, WIDTH - left - 8 - text_width("100%") / 2, HEIGHT - 10 - 40, 0.0, 1.0, 0.0, 1.0)
    parts = [_open_svg(title)]
    parts += _axes(fr, y_fmt=_pct, x_fmt=_pct, x_label="mean predicted probability")
    parts.append(
        f'<line x1="{fr.px(0):.1f}" y1="{fr.py(0):.1f}" x2="{fr.px(1):.1f}" y2="{fr.py(1):.1f}" '
        'stroke="#999" stroke-dasharray="4,4"/>'
    )
    pts = " ".join(f"{fr.px(p):.1f},{fr.py(o):.1f}" for p, o, _ in bins)
    parts.append(f'<polyline points="{pts}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
    biggest = max(n for _, _, n in bins) or 1
    for p, o, n in bins:
        r = 2.5 + 4.5 * math.sqrt(n / biggest)
        parts.append(
            f'<circle cx="{fr.px(p):.1f}" cy="{fr.py(o):.1f}" r="{r:.1f}" fill="{PALETTE[0]}">'
            f"<title>predicted {p:.2f}, observed {o:.2f} ({n} rows)</title></circle>"
        )
    parts.append("</svg>")
    legend = _legend(
        [
            ("line", f"border-color:{PALETTE[0]}", "observed rate (dot size: rows)"),
            ("line dashed", "border-color:#999", "perfect calibration"),
        ]
    )
    return figure(title, "".join(parts), legend, note)


def bar_chart(
    edges: Sequence[float], counts: Sequence[float], *, title: str, x_label: str = "", note: str = ""
) -> str:
    """A histogram over ``edges`` (one more than ``counts``), e.g. of residuals."""
    if not counts or len(edges) != len(counts) + 1:
        return empty(title)
    top_v = max(counts) or 1
    left = 12 + text_width(_fmt_tick(top_v))
    fr = _Frame(left, 10, WIDTH - left - 14, HEIGHT - 10 - 40, edges[0], edges[-1], 0, top_v * 1.08)
    parts = [_open_svg(title)]
    parts += _axes(fr, y_fmt=_fmt_tick, x_fmt=_fmt_tick, x_label=x_label)
    for a, b, n in zip(edges[:-1], edges[1:], counts, strict=True):
        xa, xb, y = fr.px(a), fr.px(b), fr.py(n)
        parts.append(
            f'<rect x="{xa:.1f}" y="{y:.1f}" width="{max(xb - xa - 1, 1):.1f}" '
            f'height="{fr.top + fr.plot_h - y:.1f}" '
            f'fill="{PALETTE[0]}"><title>[{a:.3g}, {b:.3g}): {n:g}</title></rect>'
        )
    if edges[0] < 0 < edges[-1]:
        x = fr.px(0)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{fr.top}" y2="{fr.top + fr.plot_h}" stroke="#555" '
            'stroke-dasharray="4,3"/>'
        )
    parts.append("</svg>")
    return figure(title, "".join(parts), "", note)
