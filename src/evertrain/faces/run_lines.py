"""What ``evertrain run`` prints: one line per step of a cycle, from the step's stored result.

Each line says what the step saw or did in the words a person on call needs: what
monitoring saw, the decision and what held it, a training done or failed with its
error, each gate's verdict with its numbers, the rollout's move. The same results are in
the store (``evertrain runs``); these lines only read them.

>>> step_lines("decide", {"action": "none", "reasons": [], "held": ["cooldown: 10s ago"]})
['decide   no retrain; held: cooldown: 10s ago']
>>> step_lines("train", {"status": "failed", "error": "no training rows"})
['train    FAILED: no training rows']
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from rich.markup import escape

if TYPE_CHECKING:
    from evertrain.controller.results import (
        DecideResult,
        GateStepResult,
        MonitorResult,
        RolloutStepResult,
        TrainStepResult,
    )

WIDTH = 8  # the step names are padded to this width, so the lines read as a table


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def _line(name: str, text: str) -> str:
    return f"{name:<{WIDTH}} {text}"


def _failed(name: str, result: Mapping[str, Any]) -> list[str] | None:
    if result.get("status") != "failed" or "error" not in result:
        return None
    lines = [_line(name, f"FAILED: {result['error']}")]
    if result.get("cooldown"):
        lines.append(_line("", str(result["cooldown"])))
    return lines


def _monitor(result: MonitorResult) -> str:
    if result.get("status") == "no champion":
        return "no champion yet: nothing served to watch"
    parts = [f"{result.get('n_rows', 0)} rows served since the last cycle"]
    drift = result.get("drift")
    if drift:
        columns = drift.get("drifted_columns") or []
        total = len(drift.get("columns") or {})
        parts.append(
            f"drift in {len(columns)}/{total} columns"
            + (f" ({', '.join(columns[:5])}{'...' if len(columns) > 5 else ''})" if columns else "")
        )
    realized = result.get("realized")
    if realized and realized.get("n_labels"):
        parts.append(
            f"{realized.get('metric')} {_num(realized.get('value'))} on {realized['n_labels']} labels "
            f"(champion v{result.get('champion')} trained at {_num(realized.get('baseline'))})"
        )
    else:
        parts.append(f"no labels yet for champion v{result.get('champion')}")
    estimated = result.get("estimated")
    if estimated and estimated.get("value") is not None:
        parts.append(f"estimated {_num(estimated.get('value'))} (baseline {_num(estimated.get('baseline'))})")
    if result.get("rollout") is not None:
        parts.append(f"v{result['rollout']} in rollout")
    return "; ".join(parts)


def _decide(result: DecideResult) -> str:
    reasons = "; ".join(result.get("reasons") or [])
    held = "; ".join(result.get("held") or [])
    if result.get("action") == "retrain":
        text = f"retrain: {reasons}" if reasons else "retrain"
    else:
        text = "no retrain" + (f": {reasons}" if reasons else "")
    return text + (f"; held: {held}" if held else "")


def _train(result: TrainStepResult) -> str:
    if result.get("status") == "skipped":
        return "skipped (no retrain decided)"
    metrics = result.get("metrics") or {}
    shown = ", ".join(
        f"{k} {_num(v)}"
        for k, v in metrics.items()
        if isinstance(v, int | float) and not k.endswith(("seconds", "_rows", "iterations"))
    )
    return f"version {result.get('version')} trained in {float(result.get('seconds') or 0):.1f}s" + (
        f" ({shown})" if shown else ""
    )


def _gate(result: GateStepResult) -> list[str]:
    if result.get("status") == "skipped":
        return [_line("gate", "skipped (nothing new to judge)")]
    version = result.get("version")
    against = result.get("champion")
    head = f"version {version} {result.get('status')}" + (
        f" against champion v{against}" if against is not None else ""
    )
    if result.get("promoted"):
        head += "; promoted to champion"
    elif result.get("rollout"):
        head += f"; rollout started ({result['rollout']})"
    lines = [_line("gate", head)]
    for check in result.get("checks") or []:
        mark = "pass" if check.get("passed") else "FAIL"
        lines.append(_line("", f"  {mark} {check.get('name') or check.get('kind')}: {check.get('reason')}"))
    return lines


def _rollout(result: RolloutStepResult) -> str:
    action = result.get("action")
    if action == "idle":
        return "no rollout in progress"
    where = f"v{result.get('version')}"
    if result.get("phase"):
        where += f" {result['phase']}"
    share = result.get("share")
    if share is not None:
        where += f" at {float(share):.0%}"
    outcome = {"promoted": "PROMOTED", "rolled_back": "ROLLED BACK"}.get(result.get("outcome") or "", "")
    reasons = "; ".join(result.get("reasons") or [])
    return f"{outcome or action}: {where}" + (f" ({reasons})" if reasons else "")


def step_lines(name: str, result: Mapping[str, Any]) -> list[str]:
    """The lines that tell what step ``name`` of a cycle did, from its result.

    ``result`` is the step's stored JSON; each step's lines read it as that step's
    result type of ``evertrain.controller.results``.
    """
    failed = _failed(name, result)
    if failed is not None:
        return failed
    if name == "monitor":
        return [_line(name, _monitor(cast("MonitorResult", result)))]
    if name == "decide":
        return [_line(name, _decide(cast("DecideResult", result)))]
    if name == "train":
        return [_line(name, _train(cast("TrainStepResult", result)))]
    if name == "gate":
        return _gate(cast("GateStepResult", result))
    if name == "rollout":
        return [_line(name, _rollout(cast("RolloutStepResult", result)))]
    return [_line(name, str(result))]


def styled(line: str) -> str:
    """A line for rich: markup in it escaped, failures and outcomes coloured."""
    text = escape(line)
    marks = (("FAILED", "red"), ("FAIL ", "red"), ("ROLLED BACK", "yellow"), ("PROMOTED", "green"))
    for word, colour in marks:
        text = text.replace(word, f"[{colour}]{word}[/]", 1)
    return text


def when(ts: float) -> str:
    """A time as the local wall clock shows it, e.g. ``14:05:09``."""
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def in_words(seconds: float) -> str:
    """A duration in the largest unit that fits: ``45s``, ``5m``, ``2h 30m``, ``3d``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        hours, minutes = divmod(int(seconds // 60), 60)
        return f"{hours}h" + (f" {minutes}m" if minutes else "")
    return f"{seconds / 86400:.1f}d"
