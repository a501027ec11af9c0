"""``evertrain report MODEL``: one self-contained HTML file of a model's life.

The same views as the dashboard (:mod:`evertrain.faces.ui.views`): what holds now,
realized and estimated performance with retrain, gate, promotion and rollback marks,
the timeline of cycles (quiet ones folded), drift per feature over time with its
threshold and the reference-vs-current distributions of the newest drifting cycle,
the rollout of the last challenger with each arm's metric and interval, calibration
and confusion (or residuals), versions with lineage and gate evidence, failed and
recent runs, the audit trail. Charts are inline SVG, styles inline, no script or font
from the network: the file works offline and can be mailed.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from evertrain.faces.ui import evidence, views
from evertrain.faces.ui.views import format_time
from evertrain.store import Store

STYLE = views.STYLE


def collect(store: Store, model: str, *, extra_accuracy: list[float | None] | None = None) -> dict[str, Any]:
    """Everything the report shows, from the store, its logs and its artifacts."""
    d = views.collect(
        store, model, runs_limit=views.REPORT_RUNS, extra_accuracy=extra_accuracy, with_failed=True
    )
    chosen = views.drift_cycle(d)
    d["drift_chosen"] = chosen
    d["distributions"] = None if chosen is None else evidence.distributions(store, model, chosen)
    return d


def render(d: dict[str, Any]) -> str:
    model = d["model"]
    aliases = " ".join(
        f'<span class="badge act">{html.escape(a)}: v{v}</span>'
        for a, v in sorted((d["overview"].get("aliases") or {}).items())
        if v
    )
    runs, failed = d["overview"].get("n_runs", 0), d["overview"].get("n_failed", 0)
    parts = views.sections(
        d, admin=False, interactive=False, distributions=d.get("distributions"), chosen=d.get("drift_chosen")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">
<title>evertrain report: {html.escape(model)}</title><style>{STYLE}</style></head><body>
<header class="top"><h1>{html.escape(model)}</h1>{aliases}
<p class="sub">evertrain report, generated {format_time(d["generated_at"])} UTC · {d["n_cycles"]} cycles ·
{d["n_versions"]} versions · {runs} runs ({failed} failed)</p>
{views.nav()}</header>
<main>{views.render_sections(parts)}</main>
</body></html>
"""


def write_report(store: Store, model: str, path: str, **kwargs: Any) -> None:
    """Write the report of ``model`` to ``path`` (atomically: a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(render(collect(store, model, **kwargs)), encoding="utf-8")
    tmp.replace(target)
