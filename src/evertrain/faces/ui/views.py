"""The views of one model, as HTML sections: the dashboard and the report both show these.

:func:`collect` reads what they need (bounded reads, see :mod:`evertrain.faces.status_reads`; log-based
evidence, see :mod:`.evidence`); :func:`sections` turns it into one HTML fragment per
section, keyed by the section's id. The dashboard swaps fragments in place when the
store changes; the report writes them all into one file.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from evertrain.exceptions import EvertrainError, NotFoundError
from evertrain.faces import status_reads as data
from evertrain.faces import svg
from evertrain.faces.svg import Interval, Marker, Series, Threshold
from evertrain.faces.ui import evidence
from evertrain.store import Store

SECTIONS = (
    ("summary", "Now"),
    ("performance", "Performance"),
    ("timeline", "Timeline of cycles"),
    ("drift", "Drift"),
    ("rollout", "Rollout"),
    ("quality", "Prediction quality"),
    ("versions", "Versions and lineage"),
    ("runs", "Runs"),
    ("audit", "Audit trail"),
)
REPORT_RUNS = 100
AUDIT_SHOWN = 100


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def format_time(ts: float | None) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM`` (UTC), or ``-`` for none."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M")


def _time(ts: float | None) -> str:
    return f'<time class="ts">{format_time(ts)}</time>'


def _num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.{digits}g}"
    return e(v)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A table of already-escaped cells, in a wrapper that scrolls sideways on a narrow screen."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<div class="tw"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def badge(text: str, kind: str = "") -> str:
    return f'<span class="badge {kind}">{e(text)}</span>'


# --- collecting ---------------------------------------------------------------------------


def collect(
    store: Store,
    model: str,
    *,
    runs_offset: int = 0,
    runs_status: str | None = None,
    runs_limit: int = data.RUNS_PAGE,
    extra_accuracy: list[float | None] | None = None,
    with_failed: bool = False,
) -> dict[str, Any]:
    """Everything the views of ``model`` show.

    ``with_failed``: the newest failed runs too, apart (the report lists them first; the
    dashboard has a filter instead).
    """
    from evertrain.faces import status_extras

    overview = next((m for m in data.models_overview(store) if m["name"] == model), None)
    if overview is None:
        raise NotFoundError(f"model {model!r} is not registered")
    read = data.read_cycles(store, model)
    cycles, n_cycles = list(read.cycles), read.total
    versions, n_versions = data.versions(store, model)
    extras = status_extras.for_model(store, model)
    active, history = data.rollouts_of(store, model)
    shown = active or (history[0] if history else None)
    rollout_audit: list[dict[str, Any]] = []
    arms = None
    if shown is not None:
        rollout_audit = [
            dict(a.__dict__, payload=_payload(a.payload))
            for a in store.audit.entries(subject_prefix=f"model/{model}/rollout/{shown['id']}")
        ]
        try:
            arms = evidence.arms(store, model, shown, evidence.logs_key(shown.get("updated_at"), read.key))
        except (EvertrainError, OSError, ValueError) as exc:
            arms = {"error": str(exc), "arms": []}
    champion = (overview or {}).get("aliases", {}).get("champion")
    try:
        quality = evidence.quality(store, model, champion, evidence.logs_key(read.key))
    except (EvertrainError, OSError, ValueError) as exc:
        quality = {"error": str(exc)}
    spec = evidence.model_spec(store, model)
    drop = spec.triggers.performance.drop if spec is not None else None
    return {
        "model": model,
        "generated_at": store.clock(),
        "overview": overview or {},
        "status": extras,
        "cycles": cycles,
        "cycles_key": read.key,
        "markers": markers(cycles),
        "n_cycles": n_cycles,
        "versions": versions,
        "n_versions": n_versions,
        "moves": data.alias_moves(store, model),
        "rollout": shown,
        "rollout_live": active is not None,
        "rollout_history": history,
        "rollout_audit": rollout_audit,
        "arms": arms,
        "quality": quality,
        "performance_drop": drop,
        "runs": data.runs_page(store, model, offset=runs_offset, status=runs_status, limit=runs_limit),
        "failed_runs": data.runs_page(store, model, status="failed", limit=runs_limit)
        if with_failed
        else None,
        "audit": [
            dict(a.__dict__) for a in store.audit.entries(subject_prefix=f"model/{model}/", limit=AUDIT_SHOWN)
        ],
        "accuracy_per_batch": extra_accuracy,
    }


def _payload(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# --- events -------------------------------------------------------------------------------


def cycle_events(c: dict[str, Any]) -> list[tuple[str, str]]:
    """What happened in a cycle worth a mark: (kind, text); an empty list means a quiet cycle."""
    n = c.get("cycle")
    out: list[tuple[str, str]] = []
    if c.get("failed"):
        out.append(("failed", f"cycle {n} failed: {c.get('error') or 'no error recorded'}"))
        return out
    drift = (c.get("monitor") or {}).get("drift") or {}
    if drift.get("dataset_drift"):
        cols = ", ".join(drift.get("drifted_columns") or [])
        out.append(("drift", f"drift in {cols or 'the data'}"))
    decide = c.get("decide") or {}
    if decide.get("action") not in (None, "none"):
        out.append(("decision", f"decided to {decide['action']}"))
    train = c.get("train") or {}
    if train.get("status") == "trained":
        out.append(("retrain", f"trained v{train.get('version')}"))
    elif train.get("status") == "failed":
        out.append(("failed", f"training failed: {train.get('error') or ''}"))
    gate = c.get("gate") or {}
    if gate.get("status") == "failed":
        out.append(("rejected", f"v{gate.get('version')} failed its gates: {gate.get('reason') or ''}"))
    elif gate.get("status") == "passed":
        out.append(("gate", f"v{gate.get('version')} passed its gates"))
    looked = gate.get("second_look") or {}
    if looked.get("dropped"):
        out.append(("rejected", f"v{gate.get('version')} dropped after a second look: {looked['dropped']}"))
    elif gate.get("status") == "skipped" and gate.get("checks"):
        why = gate.get("reason")
        out.append(("gate", f"v{gate.get('version')} judged again, not yet shown better: {why}"))
    rollout = c.get("rollout") or {}
    action = rollout.get("action")
    if action == "promote" or gate.get("promoted"):
        out.append(("promotion", f"promoted v{rollout.get('version') or gate.get('version')}"))
    elif action == "rollback":
        out.append(("rollback", f"rolled back v{rollout.get('version')}"))
    elif action in ("advance", "complete", "abort", "start"):
        out.append(("rollout", f"rollout {action} v{rollout.get('version')}"))
    return out


def markers(cycles: Sequence[dict[str, Any]]) -> list[Marker]:
    out = []
    for c in cycles:
        for kind, text in cycle_events(c):
            if kind in svg.MARKER_DASH:
                out.append(Marker(float(c.get("cycle") or 0), kind, f"cycle {c.get('cycle')}: {text}"))
    return out


# --- sections -----------------------------------------------------------------------------


def summary_section(d: dict[str, Any], *, admin: bool = False) -> str:
    o = d["overview"]
    st = d["status"]
    al = o.get("aliases") or {}
    cards = []
    for alias in ("champion", "canary", "shadow", "previous"):
        if alias in al:
            v = al[alias]
            cards.append(
                f'<div class="card" data-alias="{alias}"><div class="k">{alias}</div>'
                f'<div class="v">{"v" + str(v) if v else "-"}</div></div>'
            )
    ro = st.get("rollout") or {}
    live = d.get("rollout_live")
    if live:
        share = ro.get("share")
        step = ro.get("step")
        text = f"{ro.get('phase')} v{ro.get('version')}"
        detail = f"{share:.0%} of traffic" if isinstance(share, float) else ""
        if step is not None and ro.get("n_steps"):
            detail += f", step {int(step) + 1} of {ro['n_steps']}"
        detail += f", last verdict: {ro.get('action')}"
    elif ro:
        text = f"idle (last: v{ro.get('version')} {ro.get('outcome') or ro.get('action')})"
        detail = ""
    else:
        text, detail = "idle", "no rollout yet"
    cards.append(
        f'<div class="card rollout-state {"live" if live else ""}"><div class="k">rollout</div>'
        f'<div class="v" id="rollout-state">{e(text)}</div><div class="d">{e(detail)}</div></div>'
    )
    dec = st.get("last_decision") or {}
    reasons = "; ".join(dec.get("reasons") or []) or "-"
    held = "; ".join(dec.get("held") or [])
    cards.append(
        f'<div class="card wide"><div class="k">last decision ({_time(dec.get("at"))})</div>'
        f'<div class="v" id="last-decision">{e(dec.get("action", "none yet"))}</div>'
        f'<div class="d">{e(reasons)}{" · held: " + e(held) if held else ""}</div></div>'
    )
    drift = st.get("last_drift") or {}
    if drift:
        share = drift.get("share_drifted")
        cols = ", ".join(drift.get("drifted_columns") or []) or "none"
        dtext = f"{share:.0%} of columns" if isinstance(share, float) else "-"
        cards.append(
            f'<div class="card"><div class="k">last drift (cycle {e(drift.get("cycle"))})</div>'
            f'<div class="v">{e(dtext)}</div><div class="d">{e(cols)}</div></div>'
        )
    cards.append(
        f'<div class="card"><div class="k">runs</div><div class="v">{o.get("n_runs", 0)}</div>'
        f'<div class="d">{o.get("n_failed", 0)} failed · {o.get("n_running", 0)} running</div></div>'
    )
    cards.append(
        '<div class="card"><div class="k">next cycle</div><div '
        f'class="v">{_time(st.get("next_cycle_at"))}</div>'
        f'<div class="d">{d["n_cycles"]} cycles so far</div></div>'
    )
    actions = ""
    if admin:
        options = "".join(f'<option value="{v["version"]}">v{v["version"]}</option>' for v in d["versions"])
        actions = (
            f'<div class="actions" data-model="{e(d["model"])}">'
            f'<label>version <select name="version">{options}</select></label>'
            '<button type="button" data-action="promote">Promote…</button>'
            '<button type="button" data-action="rollback">Roll back…</button>'
            '<output class="result" aria-live="polite"></output></div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>{actions}'


def higher_worse(metric: str | None) -> bool:
    """Whether a larger value of ``metric`` is worse (an error), from the metrics' own registry."""
    from evertrain.evaluate.metrics import METRICS

    found = METRICS.get(metric or "")
    return found is not None and not found.higher_is_better


def performance_section(d: dict[str, Any]) -> str:
    cycles = [c for c in d["cycles"] if not c.get("failed")]
    xs: list[float] = []
    realized: list[float | None] = []
    baseline: list[float | None] = []
    floor: list[float | None] = []
    reals = [((c.get("monitor") or {}).get("realized") or {}) for c in cycles]
    metric = next((r["metric"] for r in reals if r.get("metric")), None)
    drop = d.get("performance_drop")
    # an error retrains above its baseline plus the drop, a score below its baseline minus the drop
    up = higher_worse(metric)
    for c, real in zip(cycles, reals, strict=True):
        xs.append(float(c.get("cycle") or 0))
        realized.append(real.get("value"))
        base = real.get("baseline")
        baseline.append(base)
        floor.append(None if base is None or drop is None else (base + drop if up else base - drop))
    series = [Series(f"realized {metric or 'metric'} (labelled rows)", xs, realized)]
    series.append(Series("champion baseline (holdout)", xs, baseline, dashed=True, colour=svg.PALETTE[7]))
    if any(v is not None for v in floor):
        line = f"retrain {'above (baseline + drop)' if up else 'below (baseline - drop)'}"
        series.append(Series(line, xs, floor, dashed=True, colour=svg.THRESHOLD_COLOUR))
    if d.get("accuracy_per_batch"):
        acc = d["accuracy_per_batch"]
        series.append(
            Series("served accuracy (true labels)", [float(i) for i in range(1, len(acc) + 1)], acc)
        )
    metric_name = metric or "metric"
    bounded = metric_name in ("accuracy", "f1", "roc_auc", "precision", "recall", "balanced_accuracy")
    main = svg.line_chart(
        series,
        title=f"Realized {metric_name} per cycle",
        markers=d["markers"],
        y_range=(0.0, 1.0) if bounded else None,
        x_label="cycle",
        note="A gap is a cycle without labelled rows yet (labels arrive late), not a zero.",
    )
    est_x, est_v, est_lo, est_hi, est_b = [], [], [], [], []
    est_metric = None
    for c in cycles:
        est = (c.get("monitor") or {}).get("estimated") or {}
        est_metric = est_metric or est.get("metric")
        est_x.append(float(c.get("cycle") or 0))
        est_v.append(est.get("value"))
        est_lo.append(est.get("lower"))
        est_hi.append(est.get("upper"))
        est_b.append(est.get("baseline"))
    second = ""
    if any(v is not None for v in est_v):
        second = svg.line_chart(
            [
                Series(f"estimated {est_metric}", est_x, est_v),
                Series("interval low", est_x, est_lo, dashed=True, colour=svg.PALETTE[4]),
                Series("interval high", est_x, est_hi, dashed=True, colour=svg.PALETTE[4]),
                Series("reference", est_x, est_b, dashed=True, colour=svg.PALETTE[7]),
            ],
            title=f"Estimated {est_metric} without labels (confidence-based)",
            markers=d["markers"],
            x_label="cycle",
        )
    note = ""
    if d["n_cycles"] > len(d["cycles"]):
        note = f'<p class="note">The newest {len(d["cycles"])} of {d["n_cycles"]} cycles.</p>'
    return f'<div class="grid">{main}{second}</div>{note}'


def _quiet(c: dict[str, Any]) -> bool:
    return not cycle_events(c)


def _cycle_row(c: dict[str, Any]) -> str:
    mon = c.get("monitor") or {}
    drift = mon.get("drift") or {}
    dec = c.get("decide") or {}
    train = c.get("train") or {}
    gate = c.get("gate") or {}
    ro = c.get("rollout") or {}
    if c.get("failed"):
        cells = [
            e(c.get("cycle")),
            _time(c.get("at")),
            badge("cycle failed", "bad"),
            f'<span class="err">{e(c.get("error"))}</span>',
            "",
            "",
            "",
        ]
    else:
        if drift:
            share = drift.get("share_drifted")
            dtext = (
                badge("drift", "warn") + " " + e(", ".join(drift.get("drifted_columns") or []))
                if drift.get("dataset_drift")
                else e(f"{share:.0%}" if isinstance(share, float) else "-")
            )
        else:
            dtext = e(mon.get("status") or "-")
        action = dec.get("action", "-")
        reasons = "; ".join(dec.get("reasons") or [])
        held = "; ".join(dec.get("held") or [])
        dcell = (
            (badge(action, "act") if action not in ("none", "-") else e(action))
            + (f'<div class="why">{e(reasons)}</div>' if reasons else "")
            + (f'<div class="why held">held: {e(held)}</div>' if held else "")
        )
        tstat = train.get("status") or "-"
        if tstat == "trained":
            tcell = badge(f"trained v{train.get('version')}", "good")
        elif tstat == "failed":
            tcell = badge("failed", "bad") + f'<div class="why err">{e(train.get("error"))}</div>'
        else:
            tcell = e(tstat)
        gstat = gate.get("status") or "-"
        gcell = (
            badge(f"v{gate.get('version')} {gstat}", "good" if gstat == "passed" else "bad")
            if gstat in ("passed", "failed")
            else e(gstat)
        )
        if gstat == "failed" and gate.get("reason"):
            gcell += f'<div class="why">{e(gate.get("reason"))}</div>'
        ract = ro.get("action") or "-"
        rkind = {"promote": "good", "rollback": "bad", "hold": "", "advance": "act"}.get(ract, "")
        rcell = badge(f"{ract} v{ro.get('version')}", rkind) if ro.get("version") is not None else e(ract)
        if ro.get("phase") and ro.get("phase") != "done":
            rcell += f'<div class="why">{e(ro.get("phase"))} at {ro.get("share", 0):.0%}</div>'
        cells = [e(c.get("cycle")), _time(c.get("at")), dtext, dcell, tcell, gcell, rcell]
    return "<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>"


TIMELINE_HEAD = ("cycle", "at", "drift", "decision", "training", "gates", "rollout")


def timeline_section(d: dict[str, Any]) -> str:
    """Cycles newest first; runs of quiet cycles fold into one expandable row."""
    cycles = list(reversed(d["cycles"]))
    if not cycles:
        return '<p class="note">No cycle has run yet.</p>'
    rows: list[str] = []
    i = 0
    while i < len(cycles):
        if not _quiet(cycles[i]):
            rows.append(_cycle_row(cycles[i]))
            i += 1
            continue
        j = i
        while j < len(cycles) and _quiet(cycles[j]):
            j += 1
        quiet = cycles[i:j]
        if len(quiet) == 1:
            rows.append(_cycle_row(quiet[0]).replace("<tr>", '<tr class="quiet">', 1))
        else:
            first, last = quiet[-1].get("cycle"), quiet[0].get("cycle")
            inner = "".join(_cycle_row(c).replace("<tr>", '<tr class="quiet">', 1) for c in quiet)
            rows.append(
                f'<tr class="fold"><td colspan="7"><details><summary>cycles {e(first)}-{e(last)}: '
                f"{len(quiet)} quiet cycles (no trigger fired, nothing changed)</summary>"
                f'<div class="tw"><table><tbody>{inner}</tbody></table></div></details></td></tr>'
            )
        i = j
    return table(TIMELINE_HEAD, [], "timeline").replace("<tbody></tbody>", f"<tbody>{''.join(rows)}</tbody>")


def drift_section(
    d: dict[str, Any],
    distributions: dict[str, Any] | None,
    chosen: dict[str, Any] | None,
    *,
    interactive: bool,
) -> str:
    cycles = [c for c in d["cycles"] if ((c.get("monitor") or {}).get("drift") or {}).get("columns")]
    if not cycles:
        return '<p class="note">No drift measured yet (the monitor needs a champion and served rows).</p>'
    by_col: dict[str, list[float | None]] = {}
    meta: dict[str, dict[str, Any]] = {}
    xs = [float(c.get("cycle") or 0) for c in d["cycles"] if not c.get("failed")]
    index = {x: i for i, x in enumerate(xs)}
    for c in d["cycles"]:
        cols = ((c.get("monitor") or {}).get("drift") or {}).get("columns") or {}
        for name, col in cols.items():
            by_col.setdefault(name, [None] * len(xs))[index[float(c.get("cycle") or 0)]] = col.get(
                "effect_size"
            )
            meta[name] = col
    thresholds = evidence.effect_thresholds(meta)
    share = [
        ((c.get("monitor") or {}).get("drift") or {}).get("share_drifted")
        for c in d["cycles"]
        if not c.get("failed")
    ]
    charts = [
        svg.line_chart(
            [Series("share of columns drifted", xs, share)],
            title="Share of columns drifted per cycle",
            markers=d["markers"],
            y_range=(0.0, 1.0),
            y_fmt=lambda v: f"{v:.0%}",
            x_label="cycle",
        )
    ]
    for name, ys in sorted(by_col.items()):
        thr = thresholds.get(name)
        method = str(meta[name].get("method") or "").split("+")[-1]
        charts.append(
            svg.line_chart(
                [Series(f"{name}: {method} effect size", xs, ys)],
                title=f"{name}: effect over time",
                markers=d["markers"],
                thresholds=[Threshold(thr, f"threshold {thr:g}")] if thr is not None else [],
                x_label="cycle",
            )
        )
    detail = distributions_html(d, distributions, chosen, cycles, interactive=interactive)
    return f'<div class="grid">{"".join(charts)}</div>{detail}'


def _drifted(c: dict[str, Any]) -> bool:
    return bool(((c.get("monitor") or {}).get("drift") or {}).get("dataset_drift"))


def drift_cycle(d: dict[str, Any], cycle: int | None = None) -> dict[str, Any] | None:
    """The cycle whose distributions are shown: ``cycle``, else the newest that drifted, else the "
    "newest measured."""
    measured = [c for c in d["cycles"] if ((c.get("monitor") or {}).get("drift") or {}).get("columns")]
    if not measured:
        return None
    if cycle is not None:
        return next((c for c in measured if c.get("cycle") == cycle), None)
    drifted = [c for c in measured if (c.get("monitor") or {}).get("drift", {}).get("dataset_drift")]
    return (drifted or measured)[-1]


def distributions_html(
    d: dict[str, Any],
    dist: dict[str, Any] | None,
    chosen: dict[str, Any] | None,
    measured: list[dict[str, Any]],
    *,
    interactive: bool,
) -> str:
    options = "".join(
        f'<option value="{c.get("cycle")}"{" selected" if c is chosen else ""}>'
        f"cycle {c.get('cycle')}{' (drift)' if _drifted(c) else ''}</option>"
        for c in reversed(measured)
    )
    picker = f'<label>cycle <select class="drift-cycle">{options}</select></label>' if interactive else ""
    head = f'<div class="dist-head"><h3>Reference vs current, per feature</h3>{picker}</div>'
    if chosen is None or dist is None:
        return (
            head + '<div class="dist"><p class="note">The distributions of this cycle cannot be rebuilt '
            "(its reference or its logs are gone).</p></div>"
        )
    cards = []
    for col in dist["columns"]:
        state = "drift" if col["drifted"] else "stable"
        title = f"{col['name']} ({col['kind']})"
        meta = (
            f"{col['effect_test']} {_num(col['effect_size'], 3)} (threshold {_num(col['threshold'], 3)}), "
            f"adjusted p {_num(col['p_value'], 3)}"
        )
        chart = svg.histogram_pair(col["labels"], col["reference"], col["current"], title=title, note=meta)
        cards.append(
            f'<div class="dcard {state}">{badge(state, "bad" if col["drifted"] else "good")}{chart}</div>'
        )
    sub = (
        f'<p class="note">Cycle {e(chosen.get("cycle"))}: {dist["n_reference"]} reference rows (the '
        "champion's "
        f"training snapshot) vs {dist['n_current']} served rows; features sorted by effect over "
        "threshold.</p>"
    )
    return head + f'<div class="dist">{sub}<div class="grid">{"".join(cards)}</div></div>'


def _hours(x: float) -> str:
    return f"+{x:g}h"


def rollout_section(d: dict[str, Any]) -> str:
    r = d.get("rollout")
    hist = d.get("rollout_history") or []
    if r is None:
        return (
            '<p class="note">No rollout yet: a candidate that passes its gates goes through '
            "shadow and canary steps here.</p>"
        )
    live = d.get("rollout_live")
    verdict = r.get("last_verdict") or {}
    steps = (r.get("plan") or {}).get("steps") or []
    state = f"{r['phase']}" + (f" ({r['outcome']})" if r.get("outcome") else "")
    step_txt = f"step {int(r['step']) + 1} of {len(steps)}" if r.get("step") is not None and steps else "-"
    ended = f" · ended {_time(r['ended_at'])}" if r.get("ended_at") else ""
    head = (
        f'<div class="cards"><div class="card {"live" if live else ""}"><div class="k">challenger</div>'
        f'<div class="v">v{e(r["version"])} vs v{e(r.get("baseline"))}</div>'
        f'<div class="d">started {_time(r.get("created_at"))}{ended}</div></div>'
        f'<div class="card"><div class="k">phase</div><div class="v" id="rollout-phase">{e(state)}</div>'
        f'<div class="d">{e(step_txt)} · {r.get("share", 0):.0%} of traffic</div></div>'
        '<div class="card wide"><div class="k">verdict</div><div '
        f'class="v">{e(verdict.get("action") or "-")}</div>'
        f'<div class="d">{e("; ".join(r.get("reasons") or []))}</div></div></div>'
    )
    # traffic share by step, from the audited transitions of this rollout
    start = float(r.get("created_at") or 0)
    px: list[float] = []
    py: list[float] = []
    for a in d.get("rollout_audit") or []:
        p = a["payload"]
        share = (p.get("to") or {}).get("share", p.get("share"))
        phase = (p.get("to") or {}).get("phase", p.get("phase"))
        if share is None:
            continue
        if phase in ("done",) and (p.get("to") or {}).get("outcome") == "rolled_back":
            share = 0.0
        if phase == "shadow":
            share = 0.0
        px.append((float(a["at"]) - start) / 3600)
        py.append(float(share))
    end = r.get("ended_at") or r.get("updated_at")  # the rollout's own clock, which may be simulated
    if px and end is not None:
        px.append(max((float(end) - start) / 3600, px[-1]))
        py.append(py[-1])
    plan = ", ".join(f"{s.get('share', 0):.0%} for {_duration(s.get('duration'))}" for s in steps) or "-"
    share_chart = svg.step_chart(
        px,
        py,
        title="Challenger's share of traffic",
        name="challenger share",
        x_fmt=_hours,
        y_fmt=lambda v: f"{v:.0%}",
        x_label="hours since the rollout started",
        note=f"Plan: {plan}.",
    )
    arms = d.get("arms") or {}
    items = [
        Interval(
            f"{a['arm']} v{a['version']} (n={a['n']})",
            a.get("value"),
            a.get("low"),
            a.get("high"),
            svg.PALETTE[0] if a["arm"] == "champion" else svg.PALETTE[1],
        )
        for a in arms.get("arms", [])
    ]
    metric = next((a.get("metric") for a in arms.get("arms", []) if a.get("metric")), "metric")
    arm_chart = (
        svg.interval_chart(
            items,
            title=f"Each arm's {metric} on its labelled rows, 95% interval",
            x_label=metric,
            note="Wilson interval for accuracy, normal interval for MAE; the verdict's own test is below.",
        )
        if items
        else svg.empty("Each arm's metric", "no labelled rows yet")
    )
    checks = [
        [
            e(c.get("name")),
            badge(
                str(c.get("status")),
                {"pass": "good", "fail": "bad", "wait": "warn"}.get(str(c.get("status")), ""),
            ),
            _num(c.get("champion")),
            _num(c.get("challenger")),
            e(c.get("detail")),
        ]
        for c in verdict.get("checks") or []
    ]
    check_table = table(["check", "status", "champion", "challenger", "detail"], checks) if checks else ""
    past = [
        [
            e(h["version"]),
            e(h.get("baseline")),
            e(h["phase"]),
            badge(
                str(h.get("outcome") or "live"),
                {"promoted": "good", "rolled_back": "bad"}.get(str(h.get("outcome")), ""),
            ),
            _time(h.get("created_at")),
            _time(h.get("ended_at")),
            e("; ".join(h.get("reasons") or [])),
        ]
        for h in hist
    ]
    return (
        head
        + f'<div class="grid">{share_chart}{arm_chart}</div>'
        + (f"<h3>Checks of the last verdict</h3>{check_table}" if check_table else "")
        + "<h3>Rollouts</h3>"
        + table(["version", "vs", "phase", "outcome", "started", "ended", "reasons"], past)
    )


def quality_section(d: dict[str, Any]) -> str:
    q = d.get("quality") or {}
    if q.get("error"):
        return f'<p class="note">Prediction quality is not available: {e(q["error"])}</p>'
    if not q.get("n"):
        return '<p class="note">No labelled predictions of the champion yet.</p>'
    sub = (
        f'<p class="note">The champion (v{e(q.get("version"))}) on its newest {q["n"]} '
        f"labelled predictions ({e(q.get('task'))}).</p>"
    )
    parts = []
    if "residuals" in q:
        r = q["residuals"]
        parts.append(
            svg.bar_chart(
                r["edges"],
                r["counts"],
                title="Residuals (label - prediction)",
                x_label="residual",
                note=f"MAE {r['mae']:.4g} · RMSE {r['rmse']:.4g} · bias {r['bias']:+.4g}",
            )
        )
    if "confusion" in q:
        c = q["confusion"]
        matrix = c["matrix"]
        biggest = max((v for row in matrix for v in row), default=1) or 1
        head = "".join(f"<th>{e(k)}</th>" for k in c["classes"])
        body = []
        for i, (label, row) in enumerate(zip(c["classes"], matrix, strict=True)):
            total = sum(row) or 1
            cells = "".join(
                f'<td class="cm{" diag" if i == j else ""}" style="--a:{v / biggest:.3f}" '
                f'title="label {e(label)}, predicted {e(c["classes"][j])}: {v} ({v / total:.0%} of the '
                f'row)">{v}</td>'
                for j, v in enumerate(row)
            )
            body.append(f"<tr><th>{e(label)}</th>{cells}</tr>")
        parts.append(
            '<figure class="chart"><figcaption>Confusion matrix (rows: label, columns: '
            "prediction)</figcaption>"
            '<div class="tw"><table '
            f'class="confusion"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            f'<p class="note">accuracy {c["accuracy"]:.3f}</p></figure>'
        )
    if "calibration" in q:
        cal = q["calibration"]
        parts.append(
            svg.reliability_chart(
                [tuple(b) for b in cal["bins"]],
                title="Calibration (reliability curve)",
                note=f"expected calibration error {cal['ece']:.3f}",
            )
        )
    return sub + f'<div class="grid">{"".join(parts)}</div>'


def _gate_table(gate: dict[str, Any]) -> str:
    report = gate.get("report") or {}
    rows = [
        [
            e(c.get("name") or c.get("kind")),
            badge("pass", "good") if c.get("passed") else badge("FAIL", "bad"),
            e(c.get("reason") or c.get("detail") or json.dumps(c.get("evidence", {}), default=str)[:200]),
        ]
        for c in report.get("checks") or []
    ]
    status = badge("passed", "good") if gate.get("passed") else badge("failed", "bad")
    return (
        f"<h4>vs champion v{e(gate.get('champion_version') or '-')}: {status} "
        f"{_time(gate.get('created_at'))}</h4>" + table(["check", "result", "evidence"], rows)
    )


VERDICT_KIND = {"passed": "good", "failed": "bad"}


def versions_section(d: dict[str, Any]) -> str:
    if not d["versions"]:
        return '<p class="note">No version yet.</p>'
    current = {a: v for a, v in (d["overview"].get("aliases") or {}).items() if v}
    blocks = []
    for v in d["versions"]:
        now = [a for a, n in current.items() if n == v["version"]]
        gates = v["gates"]
        verdict = "-" if not gates else ("passed" if gates[-1]["passed"] else "failed")
        metrics = (
            v["metrics"].get("holdout") if isinstance(v["metrics"].get("holdout"), dict) else v["metrics"]
        )
        key_metrics = ", ".join(
            f"{k} {_num(val, 3)}" for k, val in sorted(metrics.items()) if isinstance(val, int | float)
        )[:160]
        summary = (
            f'<summary><span class="vn">v{v["version"]}</span>'
            f"{''.join(badge(a, 'good' if a == 'champion' else 'act') for a in now)}"
            f'<span class="vt">{format_time(v["created_at"])}</span>'
            f'<span class="vg">{badge("gates " + verdict, VERDICT_KIND.get(verdict, ""))}</span>'
            f'<span class="vm">{e(key_metrics)}</span></summary>'
        )
        lineage = [
            ["parent", f"v{v['parent']}" if v["parent"] else "-"],
            ["trigger", e(v["trigger"] or "-")],
            ["training run", f"<code>{e(v['run_id'] or '-')}</code>"],
            ["created by", e(v["created_by"])],
            ["framework", e(v["framework"])],
            ["artifact", f"<code>{e(v['artifact_sha256'][:16])}</code> ({v['size_bytes']:,} bytes)"],
            ["aliases held", e(", ".join(v["aliases_held"]) or "never")],
        ]
        lineage += [[f"{s['role']} snapshot", f"<code>{e(s['id'][:16])}</code>"] for s in v["snapshots"]]
        all_metrics = [[e(k), _num(val)] for k, val in sorted(_flat(v["metrics"]).items())]
        gates_html = "".join(_gate_table(g) for g in gates) or '<p class="note">No gate has judged it.</p>'
        blocks.append(
            f'<details class="version" id="v-{v["version"]}" data-version="{v["version"]}">{summary}'
            f'<div class="grid"><div><h4>Lineage</h4>{table(["", ""], lineage, "kv")}</div>'
            f"<div><h4>Metrics</h4>{table(['metric', 'value'], all_metrics, 'kv')}</div></div>"
            f"<h4>Gates</h4>{gates_html}</details>"
        )
    note = ""
    if d["n_versions"] > len(d["versions"]):
        note = f'<p class="note">The newest {len(d["versions"])} of {d["n_versions"]} versions.</p>'
    moves = [
        [
            _time(m["at"]),
            e(m["alias"]),
            e(m["action"]),
            e(m["from_version"]),
            e(m["to_version"]),
            badge(m["outcome"], "good" if m["outcome"] == "applied" else "warn"),
            e(m["actor"]),
            e(m["reason"] or ""),
        ]
        for m in reversed(d["moves"])
    ]
    return (
        note
        + '<p class="note">Click a version for its lineage, metrics and gate evidence.</p>'
        + "".join(blocks)
        + "<h3>Alias moves</h3>"
        + table(["when", "alias", "action", "from", "to", "outcome", "actor", "reason"], moves)
    )


def _flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _run_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in runs:
        status = r["status"]
        err = r.get("error") or ""
        short = err if len(err) <= 160 else err[:157] + "..."
        took = (r["ended_at"] - r["started_at"]) if r.get("ended_at") and r.get("started_at") else None
        rows.append(
            [
                _time(r["created_at"]),
                e(r["kind"]),
                f"<code>{e(r.get('key') or r['id'][:12])}</code>",
                badge(status, {"failed": "bad", "running": "warn", "succeeded": "good"}.get(status, "")),
                _duration(took),
                f'<span class="err" title="{e(err)}">{e(short)}</span>' if err else "",
            ]
        )
    return rows


RUN_HEAD = ("created", "kind", "key", "status", "took", "error")


def runs_table(page: dict[str, Any], *, pager: bool) -> str:
    rows = _run_rows(page["runs"])
    start = page["offset"] + 1 if page["runs"] else 0
    end = page["offset"] + len(page["runs"])
    what = "failed runs" if page.get("status") == "failed" else "runs"
    nav = ""
    if pager:
        prev_off = max(page["offset"] - page["limit"], 0)
        checked = " checked" if page.get("status") == "failed" else ""
        next_off = page["offset"] + page["limit"]
        nav = (
            f'<div class="pager" data-status="{e(page.get("status") or "")}">'
            '<button type="button" '
            f'data-offset="{prev_off}"{" disabled" if page["offset"] == 0 else ""}>newer</button>'
            '<button type="button" '
            f'data-offset="{next_off}"{" disabled" if next_off >= page["total"] else ""}>older</button>'
            f'<label><input type="checkbox" class="only-failed"{checked}> only failed</label></div>'
        )
    return (
        f'<p class="note">{what} {start} to {end} of {page["total"]}, newest first.</p>'
        + nav
        + table(RUN_HEAD, rows, "runs")
    )


def runs_section(d: dict[str, Any], *, pager: bool) -> str:
    """One page of runs with a pager (the dashboard), or the failed runs then the newest (the report)."""
    out = runs_table(d["runs"], pager=pager)
    failed = d.get("failed_runs")
    if not pager and failed and failed["runs"]:
        out = "<h3>Failed runs</h3>" + runs_table(failed, pager=False) + "<h3>All runs</h3>" + out
    return out


def audit_section(d: dict[str, Any]) -> str:
    rows = [
        [
            e(a["seq"]),
            _time(a["at"]),
            e(a["actor"]),
            e(a["action"]),
            f"<code>{e(a['subject'])}</code>",
            e(a.get("reason") or ""),
        ]
        for a in reversed(d["audit"])
    ]
    return (
        f'<p class="note">The newest {len(rows)} entries of the hash-chained audit log, newest first.</p>'
        + table(["seq", "when", "actor", "action", "subject", "reason"], rows, "audit")
    )


def sections(
    d: dict[str, Any],
    *,
    admin: bool = False,
    interactive: bool = True,
    distributions: dict[str, Any] | None = None,
    chosen: dict[str, Any] | None = None,
    reuse: Callable[[str, Callable[[], str]], str] | None = None,
) -> dict[str, str]:
    """Each section's HTML body, by id; ``interactive``: with the pager and pickers of the dashboard.

    ``reuse(id, make)``: how the sections drawn from the cycles alone (performance, timeline,
    drift) are made: the dashboard keeps them while ``cycles_key`` stays the same, the largest
    part of a rendering; default: ``make()``.
    """
    made = reuse or (lambda _sid, make: make())
    return {
        "summary": summary_section(d, admin=admin),
        "performance": made("performance", lambda: performance_section(d)),
        "timeline": made("timeline", lambda: timeline_section(d)),
        "drift": made("drift", lambda: drift_section(d, distributions, chosen, interactive=interactive)),
        "rollout": rollout_section(d),
        "quality": quality_section(d),
        "versions": versions_section(d),
        "runs": runs_section(d, pager=interactive),
        "audit": audit_section(d),
    }


def render_sections(parts: dict[str, str]) -> str:
    return "".join(
        f'<section id="{sid}" class="view"><h2>{e(title)}</h2><div class="body" '
        f'data-section="{sid}">{parts[sid]}</div></section>'
        for sid, title in SECTIONS
    )


def nav() -> str:
    return '<nav class="toc">' + "".join(f'<a href="#{sid}">{e(t)}</a>' for sid, t in SECTIONS) + "</nav>"


STYLE = (resources.files("evertrain.faces.ui") / "style.css").read_text(encoding="utf-8")
"""The page's and the report's styles (inlined into both: the report is one offline file)."""
