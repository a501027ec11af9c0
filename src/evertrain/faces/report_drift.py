"""The drift report as one self-contained HTML file.

No scripts, fonts or images from the network: each column's plot is inline SVG
(reference vs current shares; numeric columns as histograms on reference quantile
bins, categorical columns as paired bars). Columns come sorted by effect size
relative to their threshold, so what moved most is on top.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from evertrain.monitor.verdicts import ColumnDrift, DriftReport

_W, _H, _PAD = 420, 150, 24
_REF_COLOR = "#4C78A8"
_CUR_COLOR = "#F58518"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1100px}
h1{font-size:20px;margin:0 0 4px} .sub{color:#555;margin:0 0 16px;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 12px}
.card.drift{border-color:#c0392b;box-shadow:0 0 0 1px #c0392b inset}
.card h2{font-size:15px;margin:0 0 4px;display:flex;justify-content:space-between}
.badge{font-size:12px;padding:1px 7px;border-radius:9px;background:#e8f5e9;color:#1b5e20}
.drift .badge{background:#fdecea;color:#b71c1c}
.meta{font-size:12px;color:#555;margin:0 0 6px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px} td,th{padding:2px 10px;text-align:left}
"""


def _fmt(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.1e}"
    return f"{x:.3f}"


def _numeric_svg(plot: dict[str, Any]) -> str:
    bounds = np.asarray(plot["bounds"], dtype=float)
    ref = np.asarray(plot["reference"], dtype=float)
    cur = np.asarray(plot["current"], dtype=float)
    widths = np.diff(bounds)
    widths[widths <= 0] = np.nan
    dens_r, dens_c = ref / widths, cur / widths
    top = float(np.nanmax(np.concatenate((dens_r, dens_c)))) or 1.0
    x0, x1 = bounds[0], bounds[-1]
    span = (x1 - x0) or 1.0

    def sx(v: float) -> float:
        return _PAD + (v - x0) / span * (_W - 2 * _PAD)

    def sy(v: float) -> float:
        return _H - _PAD - (0.0 if not np.isfinite(v) else v / top) * (_H - 2 * _PAD)

    parts = []
    for i in range(len(ref)):
        if not np.isfinite(dens_r[i]):
            continue
        a, b = sx(bounds[i]), sx(bounds[i + 1])
        parts.append(
            f'<rect x="{a:.1f}" y="{sy(dens_r[i]):.1f}" width="{max(b - a, 0.5):.1f}" '
            f'height="{_H - _PAD - sy(dens_r[i]):.1f}" fill="{_REF_COLOR}" fill-opacity="0.45"/>'
        )
    path: list[str] = []  # one connected step line for the current side
    for i in range(len(cur)):
        if not np.isfinite(dens_c[i]):
            continue
        a, b, y = sx(bounds[i]), sx(bounds[i + 1]), sy(dens_c[i])
        path.append(f"{'L' if path else 'M'}{a:.1f},{y:.1f}H{b:.1f}")
    parts.append(f'<path d="{" ".join(path)}" stroke="{_CUR_COLOR}" stroke-width="2" fill="none"/>')
    axis = (
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#999"/>'
        f'<text x="{_PAD}" y="{_H - 6}" font-size="10" fill="#555">{x0:.4g}</text>'
        f'<text x="{_W - _PAD}" y="{_H - 6}" font-size="10" fill="#555" text-anchor="end">{x1:.4g}</text>'
    )
    return _svg("".join(parts) + axis)


def _categorical_svg(plot: dict[str, Any]) -> str:
    cats = list(plot["categories"])
    ref = np.asarray(plot["reference"], dtype=float)
    cur = np.asarray(plot["current"], dtype=float)
    n = max(len(cats), 1)
    top = float(max(ref.max(initial=0), cur.max(initial=0))) or 1.0
    slot = (_W - 2 * _PAD) / n
    bar = slot * 0.4
    parts = []
    for i, cat in enumerate(cats):
        x = _PAD + i * slot + slot * 0.1
        for j, (v, color) in enumerate(((ref[i], _REF_COLOR), (cur[i], _CUR_COLOR))):
            h = v / top * (_H - 2 * _PAD)
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{_H - _PAD - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{html.escape(str(cat))}: {v:.3%}</title></rect>'
            )
        label = html.escape(str(cat)[:10])
        parts.append(
            f'<text x="{x + bar:.1f}" y="{_H - 8}" font-size="9" fill="#555" '
            f'text-anchor="middle">{label}</text>'
        )
    parts.append(f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#999"/>')
    return _svg("".join(parts))


def _svg(body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img">{body}</svg>'
    )


def _card(c: ColumnDrift, *, target: bool = False) -> str:
    plot = dict(c.plot)
    if "bounds" in plot:
        svg = _numeric_svg(plot)
    elif "categories" in plot:
        svg = _categorical_svg(plot)
    else:
        svg = "<p class=meta>(no plot: too few distinct values)</p>"
    missing = ""
    if c.missing.reference or c.missing.current:
        missing = f" · missing {c.missing.reference_share:.1%} → {c.missing.current_share:.1%}"
    name = html.escape(c.name) + (" (target)" if target else "")
    return (
        f'<div class="card{" drift" if c.drifted else ""}">'
        f'<h2><span>{name}</span><span class="badge">{"drift" if c.drifted else "stable"}</span></h2>'
        f'<p class="meta">{c.kind} · {html.escape(c.significance_test)} '
        f"p (adj.) {_fmt(c.p_value_adjusted)} · "
        f"{html.escape(c.effect_test)} {_fmt(c.effect_size)} (threshold {_fmt(c.threshold)}){missing}</p>"
        f"{svg}</div>"
    )


def render_drift_html(report: DriftReport, *, title: str = "drift report") -> str:
    """The whole report as one HTML document (a string)."""
    cards = [_card(c) for c in report.sorted_columns()]
    if report.target is not None:
        cards.insert(0, _card(report.target, target=True))
    verdict = "dataset drift" if report.dataset_drift else "no dataset drift"
    summary = (
        f"{verdict}: {len(report.drifted_columns)} of {len(report.columns)} columns drifted "
        f"({report.share_drifted:.0%}); {report.correction} at alpha {report.alpha:g} over "
        f"{report.hypotheses} hypotheses; {report.n_reference:,} reference rows, "
        f"{report.n_current:,} current rows; "
        f"{'exact' if report.exact else 'from profiles'}."
    )
    rows = "".join(
        f"<tr><td>{html.escape(m.method)}</td><td>{_fmt(m.statistic)}</td><td>{_fmt(m.threshold)}</td>"
        f"<td>{'drift' if m.drifted else 'stable'}</td></tr>"
        for m in report.multivariate
    )
    multi = (
        "<table><tr><th>multivariate test</th><th>statistic</th><th>threshold</th><th>verdict</th></tr>"
        f"{rows}</table>"
        if rows
        else ""
    )
    legend = (
        f'<p class="meta legend"><span style="background:{_REF_COLOR};opacity:.6"></span>reference'
        f'<span style="background:{_CUR_COLOR}"></span>current · sorted by effect size / threshold</p>'
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class=sub>{html.escape(summary)}</p>{multi}{legend}"
        f'<div class="grid">{"".join(cards)}</div></body></html>\n'
    )


__all__ = ["render_drift_html"]
