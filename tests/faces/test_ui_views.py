"""The dashboard's reads, views and routes without a browser: bounded, folded, drawn on purpose."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from evertrain.faces import status_reads as data
from evertrain.faces import svg, ui
from evertrain.faces.ui import views
from evertrain.store import Store


def _cycle(
    store: Store, n: int, *, decide: str = "none", train: str = "skipped", drift: bool = False
) -> None:
    run = store.runs.start("cycle", model="m", key=f"m/cycle/{n}", params={"cycle": n, "at": 1000.0 * n})
    store.runs.finish(
        run.id,
        "succeeded",
        result={
            "cycle": n,
            "at": 1000.0 * n,
            "monitor": {
                "status": "ok",
                "realized": {"metric": "accuracy", "value": None if n % 5 == 0 else 0.8, "baseline": 0.85},
                "drift": {
                    "share_drifted": 0.5 if drift else 0.0,
                    "dataset_drift": drift,
                    "drifted_columns": ["x"] if drift else [],
                    "columns": {
                        "x": {
                            "method": "ks+wasserstein",
                            "effect_size": 0.3 if drift else 0.01,
                            "drifted": drift,
                        }
                    },
                },
            },
            "decide": {"action": decide, "reasons": ["a reason"] if decide != "none" else []},
            "train": {"status": train, "error": "boom" if train == "failed" else None},
            "gate": {"status": "skipped"},
            "rollout": {"action": "idle"},
        },
    )


@pytest.fixture
def busy(project_store: Store, clock: Any) -> Store:
    """A model with 12 cycles (one drift, one failed retrain) and their runs, an hour apart."""
    for n in range(1, 13):
        clock.now += 3600
        _cycle(
            project_store,
            n,
            decide="retrain" if n == 7 else "none",
            train="failed" if n == 7 else "skipped",
            drift=n == 6,
        )
    clock.now += 1
    failed = project_store.runs.start("train", model="m", key="m/cycle/7/training")
    project_store.runs.finish(failed.id, "failed", error="ValueError: no rows")
    return project_store


def test_line_chart_fits_its_container_and_draws_gaps_thresholds_and_whole_names() -> None:
    name = "a series whose name is much longer than sixteen characters"
    out = svg.line_chart(
        [svg.Series(name, [1, 2, 3, 4, 5], [0.5, None, 0.7, 0.9, 3.0])],
        title="t",
        thresholds=[svg.Threshold(2.5, "threshold 2.5")],
        markers=[svg.Marker(3, "retrain", "cycle 3: trained v2")],
    )
    assert (
        'viewBox="0 0 ' in out
        and "<svg" in out
        and ' width="' not in out.split("<svg", 1)[1].split(">", 1)[0]
    )
    assert name in out  # the legend is HTML and wraps: never cut
    assert 'class="gap"' in out and "no value (gap)" in out
    assert 'class="threshold"' in out and "threshold 2.5" in out
    assert out.count("<circle") == 4  # one per known value; the gap has none
    # every value lies inside the plot: the range holds the data (3.0) and the threshold
    ys = [float(v) for v in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', out)]
    assert all(10 <= y <= svg.HEIGHT - 26 for y in ys)


def test_x_tick_labels_leave_room_between_them() -> None:
    out = svg.line_chart([svg.Series("s", list(range(0, 10_001)), [1.0] * 10_001)], title="t")
    ticks = re.findall(r'<text class="tick" x="([\d.]+)" y="[\d.]+" text-anchor="middle">([^<]+)<', out)
    spans = [(float(x) - svg.text_width(t) / 2, float(x) + svg.text_width(t) / 2) for x, t in ticks]
    assert len(spans) >= 3
    assert all(b[0] - a[1] >= 6 for a, b in itertools.pairwise(spans))
    assert spans[0][0] >= 0 and spans[-1][1] <= svg.WIDTH


def test_runs_are_read_a_page_at_a_time_with_failed_ones_apart(busy: Store) -> None:
    page = data.runs_page(busy, "m", limit=5)
    assert page["total"] == 13 and len(page["runs"]) == 5
    assert page["runs"][0]["kind"] == "train"  # newest first
    second = data.runs_page(busy, "m", offset=5, limit=5)
    assert {r["id"] for r in second["runs"]}.isdisjoint(r["id"] for r in page["runs"])
    failed = data.runs_page(busy, "m", status="failed")
    assert failed["total"] == 1 and failed["runs"][0]["error"] == "ValueError: no rows"
    got = data.read_cycles(busy, "m", limit=4)
    assert got.total == 12 and [c["cycle"] for c in got.cycles] == [9, 10, 11, 12]


def test_the_fingerprint_moves_only_when_the_store_does(busy: Store) -> None:
    before = data.fingerprint(busy, "m", fresh=True)
    assert data.fingerprint(busy, "m", fresh=True) == before
    _cycle(busy, 13)
    assert data.fingerprint(busy, "m", fresh=True) != before


def test_a_cycle_is_read_again_when_it_finishes_not_when_another_run_does(busy: Store, clock: Any) -> None:
    clock.now += 3600
    cycle = busy.runs.start("cycle", model="m", key="m/cycle/13", params={"cycle": 13, "at": clock.now})
    first = data.read_cycles(busy, "m")
    assert first.total == 13 and first.cycles[-1]["status"] == "running"
    step = busy.runs.start("step", model="m", params={"step": "monitor"})
    busy.runs.finish(step.id, "succeeded", result={})
    assert data.read_cycles(busy, "m") is first  # the cycles did not move: nothing parsed again
    busy.runs.finish(
        cycle.id, "succeeded", result={"cycle": 13, "at": clock.now, "decide": {"action": "retrain"}}
    )
    finished = data.read_cycles(busy, "m")
    assert finished.key != first.key and finished.cycles[-1]["decide"] == {"action": "retrain"}


def test_quiet_cycles_fold_and_events_stay_in_view(busy: Store) -> None:
    d: dict[str, Any] = {"cycles": list(data.read_cycles(busy, "m").cycles)}
    out = views.timeline_section(d)
    assert "cycles 8-12: 5 quiet cycles" in out and "cycles 1-5: 5 quiet cycles" in out
    assert "boom" in out  # the failed retrain of cycle 7, with its error
    assert "drift" in out  # cycle 6
    kinds = [m.kind for m in views.markers(d["cycles"])]
    assert kinds == ["drift", "failed"]


def test_routes_answer_unchanged_refuse_bad_input_and_serve_the_root(busy: Store) -> None:
    client = TestClient(Starlette(routes=ui.routes(busy, root=True)))
    assert client.get("/").status_code == 200 and client.get("/ui").status_code == 200
    first = client.get("/ui/api/models/m/sections").json()
    assert set(first["sections"]) == {sid for sid, _ in views.SECTIONS}
    again = client.get("/ui/api/models/m/sections", params={"since": first["fingerprint"]}).json()
    assert again == {"fingerprint": first["fingerprint"], "unchanged": True}
    bad = client.get("/ui/api/models/m/sections", params={"runs_offset": "-3"})
    assert bad.status_code == 422 and bad.json()["field"] == "runs_offset"
    assert client.get("/ui/api/models/m/sections", params={"runs_status": "maybe"}).status_code == 422
    missing = client.get("/ui/api/models/nope/sections")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert client.get("/ui/api/models/m/runs", params={"status": "failed"}).json()["total"] == 1
    page = client.get("/").text
    assert "Read-only view" in page and "data-action" not in page  # no admin token: no buttons


def test_a_poll_after_a_run_finished_carries_only_the_sections_it_changed(
    busy: Store, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "FINGERPRINT_SECONDS", 0.0)  # every poll reads the store afresh
    client = TestClient(Starlette(routes=ui.routes(busy)))
    first = client.get("/ui/api/models/m/sections").json()
    assert set(first["digests"]) == set(first["sections"])
    clock.now += 60
    run = busy.runs.start("step", model="m", params={"step": "monitor"})
    busy.runs.finish(run.id, "failed", error="OSError: the log folder went away")
    have = ",".join(f"{sid}:{digest}" for sid, digest in first["digests"].items())
    got = client.get("/ui/api/models/m/sections", params={"since": first["fingerprint"], "have": have}).json()
    assert not got["unchanged"] and got["fingerprint"] != first["fingerprint"]
    # the counts and the runs changed; the cycles, their charts and the versions did not
    assert {"summary", "runs"} <= set(got["sections"])
    assert not {"performance", "timeline", "drift", "versions"} & set(got["sections"])
    assert "the log folder went away" in got["sections"]["runs"]
    assert set(got["digests"]) == set(first["digests"])
    assert got["digests"]["timeline"] == first["digests"]["timeline"]
    # a client that holds nothing (or other digests) gets every section
    full = client.get("/ui/api/models/m/sections", params={"have": "summary:00"}).json()
    assert set(full["sections"]) == set(first["sections"])
    bad = client.get("/ui/api/models/m/sections", params={"have": "summary"})
    assert bad.status_code == 422 and bad.json()["field"] == "have" and "'summary'" in bad.json()["error"]
