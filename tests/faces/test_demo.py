"""The demo closes the loop: each phase of the stream gets the response it deserves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evertrain.faces.cli import main
from evertrain.store import Store


def _phase(summary: dict[str, Any], cycle: int) -> str:
    return str(summary["phases"][cycle - 1])


def test_covariate_shift_alone_promotes_nothing(demo_run: tuple[Path, dict[str, Any]]) -> None:
    _, summary = demo_run
    covariate = [g for g in summary["gates"] if _phase(summary, g["cycle"]) == "covariate"]
    assert covariate, "the covariate shift should trigger a retrain whose challenger is judged"
    assert not any(g["passed"] for g in covariate)
    promoted = [r for r in summary["rollouts"] if r["outcome"] == "promoted"]
    assert not any(_phase(summary, r["cycle"]) == "covariate" for r in promoted)
    reasons = [
        d
        for d in summary["decisions"]
        if d["action"] == "retrain" and _phase(summary, d["cycle"]) == "covariate"
    ]
    assert reasons and "drift" in reasons[0]["triggers"]


def test_abrupt_change_gets_a_drift_triggered_retrain_that_is_promoted(
    demo_run: tuple[Path, dict[str, Any]],
) -> None:
    _, summary = demo_run
    retrains = [
        d
        for d in summary["decisions"]
        if d["action"] == "retrain" and _phase(summary, d["cycle"]) == "abrupt" and "drift" in d["triggers"]
    ]
    assert retrains, "the abrupt change must trigger a drift retrain"
    first = retrains[0]
    assert any("x3" in r for r in first["reasons"])
    gate = next(g for g in summary["gates"] if g["cycle"] == first["cycle"])
    assert gate["passed"]
    assert any(r["version"] == gate["version"] and r["outcome"] == "promoted" for r in summary["rollouts"])


def test_a_challenger_is_rejected_and_a_worse_one_rolled_back(demo_run: tuple[Path, dict[str, Any]]) -> None:
    _, summary = demo_run
    rejected = [g for g in summary["gates"] if not g["passed"]]
    assert rejected and all(any(not c["passed"] for c in g["checks"]) for g in rejected)
    rolled_back = [r for r in summary["rollouts"] if r["outcome"] == "rolled_back"]
    assert rolled_back, "the model trained on the faulty offline data must be rolled back"
    assert rolled_back[0]["reasons"] and "accuracy" in rolled_back[0]["reasons"][0]
    # it never stays champion
    assert summary["aliases"]["champion"] != rolled_back[0]["version"]


def test_the_demo_leaves_a_sound_project(demo_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = demo_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["cycles"] == summary["cycles"] == len(summary["phases"])
    assert {"cycles", "decisions", "versions", "gates", "rollouts", "accuracy_per_batch"} <= on_disk.keys()
    report = (out / "report.html").read_text()
    assert report.count("<svg") >= 2 and "http://" not in report.replace("http://www.w3.org/2000/svg", "")
    assert main(["audit", "verify", "--project", str(out)]) == 0
    store = Store.for_project(out).open()
    champion = store.registry.get_alias("demo", "champion")
    assert champion is not None and store.artifacts.verify(
        store.registry.get_version("demo", champion).artifact_sha256
    )
