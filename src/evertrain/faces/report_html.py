"""``evertrain report MODEL``: one self-contained HTML file of a model's life.

Accuracy over time with retrain, promotion and rollback markers; drift per feature
over time; the version timeline with lineage; each gate's evidence; the audit trail.
Charts are inline SVG, styles inline: the file works offline and can be mailed.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any

from evertrain.faces.svg import Marker, Series, line_chart
from evertrain.store import Store


def format_time(ts: float | None) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM`` (UTC), or ``-`` for none; the report and the dashboard agree."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def collect(store: Store, model: str, *, extra_accuracy: list[float | None] | None = None) -> dict[str, Any]:
    """Everything the report shows, from the store alone."""
    cycles = []
    for run in store.runs.list(model=model, kind="cycle"):
        if run.status != "succeeded" or not run.result:
            continue
        cycles.append(run.result)
    cycles.sort(key=lambda c: c.get("cycle", 0))
    versions = [v.to_dict() for v in store.registry.list_versions(model)]
    lineage = {v["version"]: store.lineage.of_version(model, v["version"]) for v in versions}
    return {
        "model": model,
        "generated_at": store.clock(),
        "aliases": store.registry.get_aliases(model),
        "cycles": cycles,
        "versions": versions,
        "lineage": lineage,
        "history": [m.__dict__ for m in store.registry.history(model)],
        "audit": [e.__dict__ for e in store.audit.entries(subject_prefix=f"model/{model}/")][-200:],
        "accuracy_per_batch": extra_accuracy,
    }


def _markers(data: dict[str, Any]) -> list[Marker]:
    out: list[Marker] = []
    for c in data["cycles"]:
        n = c.get("cycle", 0)
        train = c.get("train") or {}
        gate = c.get("gate") or {}
        rollout = c.get("rollout") or {}
        if train.get("status") == "trained":
            out.append(Marker(n, "retrain", f"cycle {n}: trained v{train.get('version')}"))
        if gate.get("status") == "failed":
            out.append(Marker(n, "rejected", f"cycle {n}: v{gate.get('version')} failed its gates"))
        if rollout.get("action") == "promote" or gate.get("promoted"):
            out.append(
                Marker(
                    n, "promotion", f"cycle {n}: promoted v{rollout.get('version') or gate.get('version')}"
                )
            )
        if rollout.get("action") == "rollback":
            out.append(Marker(n, "rollback", f"cycle {n}: rolled back v{rollout.get('version')}"))
    return out


def accuracy_chart(data: dict[str, Any]) -> str:
    """Inline SVG of realized accuracy per cycle against the champion's baseline, with event markers."""
    xs, realized, baseline = [], [], []
    for c in data["cycles"]:
        mon = c.get("monitor") or {}
        real = mon.get("realized") or {}
        xs.append(c.get("cycle", 0))
        realized.append(real.get("value"))
        baseline.append(real.get("baseline"))
    series = [Series("realized", xs, realized), Series("champion baseline", xs, baseline, dashed=True)]
    if data.get("accuracy_per_batch"):
        acc = data["accuracy_per_batch"]
        series.append(Series("served (true)", list(range(1, len(acc) + 1)), acc))
    return line_chart(
        series, title="Accuracy over time", markers=_markers(data), y_range=(0.0, 1.0), x_label="cycle"
    )


def drift_chart(data: dict[str, Any]) -> str:
    """Inline SVG of each feature's drift effect size per cycle, with event markers."""
    by_col: dict[str, list[float | None]] = {}
    xs = []
    for i, c in enumerate(data["cycles"]):
        cols = ((c.get("monitor") or {}).get("drift") or {}).get("columns") or {}
        xs.append(c.get("cycle", 0))
        for name, col in cols.items():
            by_col.setdefault(name, [None] * len(data["cycles"]))[i] = col.get("effect_size")
    series = [Series(name, xs, ys) for name, ys in sorted(by_col.items())]
    return line_chart(
        series, title="Drift per feature (effect size)", markers=_markers(data), x_label="cycle"
    )


def html_table(headers: list[str], rows: list[list[Any]]) -> str:
    """An HTML table of ``rows`` under ``headers``, every cell escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt_metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
    )


def _gate_evidence(lineage: dict[int, dict[str, Any]]) -> str:
    blocks = []
    for version, info in sorted(lineage.items()):
        for gate in info.get("gates", []):
            report = gate.get("report") or {}
            checks = report.get("checks") or []
            rows = [
                [
                    c.get("name") or c.get("kind"),
                    "pass" if c.get("passed") else "FAIL",
                    c.get("reason")
                    or c.get("detail")
                    or json.dumps(c.get("evidence", {}), default=str)[:160],
                ]
                for c in checks
            ]
            status = "passed" if gate.get("passed") else "failed"
            blocks.append(
                f"<h4>v{version} vs champion {gate.get('champion_version') or '-'}: {status}</h4>"
                + html_table(["check", "result", "evidence"], rows)
            )
    return "".join(blocks) or "<p>No gate has run yet.</p>"


VERSION_COLUMNS = ["version", "created", "trigger", "parent", "train snapshot", "metrics"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4} h1{margin-bottom:0} .sub{color:#666;margin-top:4px}
.pill{display:inline-block;padding:1px 8px;border-radius:9px;background:#eef;margin-right:6px}
"""


def render(data: dict[str, Any]) -> str:
    model = data["model"]
    aliases = "".join(
        f'<span class="pill">{html.escape(a)}: v{v}</span>' for a, v in sorted(data["aliases"].items()) if v
    )
    decisions = [
        [
            c.get("cycle"),
            (c.get("decide") or {}).get("action", "-"),
            "; ".join((c.get("decide") or {}).get("reasons", [])),
            "; ".join((c.get("decide") or {}).get("held", [])),
        ]
        for c in data["cycles"]
    ]
    versions = [
        [
            f"v{v['version']}",
            format_time(v["created_at"]),
            v.get("trigger") or "-",
            v.get("parent") or "-",
            (v.get("snapshot") or "-")[:12],
            _fmt_metrics(v.get("metrics") or {}),
        ]
        for v in data["versions"]
    ]
    moves = [
        [
            format_time(m["at"]),
            m["alias"],
            m["action"],
            m["from_version"],
            m["to_version"],
            m["outcome"],
            m["reason"] or "",
        ]
        for m in data["history"]
    ]
    audit = [
        [e["seq"], format_time(e["at"]), e["actor"], e["action"], e["subject"], e["reason"] or ""]
        for e in data["audit"]
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>evertrain report: {html.escape(model)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(model)}</h1>
<p class="sub">evertrain report, generated {format_time(data["generated_at"])} UTC. {aliases}</p>
<h2>Performance</h2>{accuracy_chart(data)}
<h2>Drift</h2>{drift_chart(data)}
<h2>Decisions</h2>{html_table(["cycle", "action", "reasons", "held back"], decisions)}
<h2>Versions and lineage</h2>{html_table(VERSION_COLUMNS, versions)}
<h3>Alias moves</h3>{html_table(["when", "alias", "action", "from", "to", "outcome", "reason"], moves)}
<h2>Gate evidence</h2>{_gate_evidence(data["lineage"])}
<h2>Audit trail</h2>{html_table(["seq", "when", "actor", "action", "subject", "reason"], audit)}
</body></html>
"""


def write_report(store: Store, model: str, path: str, **kwargs: Any) -> None:
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(render(collect(store, model, **kwargs)), encoding="utf-8")
    tmp.replace(target)
