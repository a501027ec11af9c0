"""Runs: every step recorded; a keyed run started again is the same run."""

from __future__ import annotations

from typing import Any

import pytest

from evertrain.exceptions import InvalidNameError, NotFoundError, UsageError
from evertrain.store import Store


def test_a_keyed_run_is_found_again_after_a_restart(store: Store) -> None:
    run = store.runs.start("train", model="m", key="cycle-1/train", params={"lr": 0.1})
    again = store.runs.start("train", model="m", key="cycle-1/train", params={"lr": 0.2})
    assert again.id == run.id and again.params == {"lr": 0.1}
    assert store.runs.find("cycle-1/train") == run
    assert store.runs.find("cycle-2/train") is None
    assert (run.status, run.model, run.kind) == ("running", "m", "train")


def test_finishing_a_run_records_its_outcome(store: Store) -> None:
    ok = store.runs.start("train", model="m")
    bad = store.runs.start("evaluate", model="m")
    store.runs.finish(ok.id, "succeeded", metrics={"auc": 0.9}, result={"version": 1})
    store.runs.finish(bad.id, "failed", error="out of memory")
    failed = store.runs.get(bad.id)
    assert (failed.status, failed.error) == ("failed", "out of memory")
    done = store.runs.get(ok.id)
    assert (done.status, done.metrics, done.result) == ("succeeded", {"auc": 0.9}, {"version": 1})
    assert done.ended_at is not None
    assert [r.id for r in store.runs.list(model="m")] == [ok.id, bad.id]
    assert [r.id for r in store.runs.list(kind="evaluate")] == [bad.id]
    with pytest.raises(UsageError):
        store.runs.finish(ok.id, "running")
    with pytest.raises(NotFoundError):
        store.runs.finish("nope", "failed")
    with pytest.raises(NotFoundError):
        store.runs.get("nope")


def test_runs_are_listed_by_status_and_creation_time(project_store: Store, clock: Any) -> None:
    """What a training step asks before it trains: the running runs to resume, and today's
    runs for the budget, found by the database rather than among every run ever made."""
    clock.now = 1000.0
    old = project_store.runs.start("train", model="m")
    project_store.runs.finish(old.id, "succeeded")
    clock.now = 2000.0
    running = project_store.runs.start("train", model="m")
    clock.now = 2001.0
    later = project_store.runs.start("train", model="m")
    project_store.runs.finish(later.id, "failed", error="boom")
    assert [r.id for r in project_store.runs.list(model="m", status="running")] == [running.id]
    assert [r.id for r in project_store.runs.list(model="m", created_since=2000.0)] == [running.id, later.id]
    assert project_store.runs.list(model="m", kind="evaluate", created_since=0.0) == []
    assert [r.id for r in project_store.runs.list(status="succeeded", created_since=999.0)] == [old.id]


def test_keys_of_keyed_runs_only(store: Store) -> None:
    """A controller finds its newest cycle among the keys of its cycle runs."""
    for n in (1, 2, 10):
        run = store.runs.start("cycle", model="m", key=f"m/cycle/{n}")
        if n != 10:
            store.runs.finish(run.id, "succeeded")
    store.runs.start("cycle", model="m")  # no key
    store.runs.start("cycle", model="other", key="other/cycle/1")
    store.runs.start("train", model="m", key="m/cycle/10/train")
    assert sorted(store.runs.keys("m", "cycle")) == ["m/cycle/1", "m/cycle/10", "m/cycle/2"]
    assert sorted(store.runs.keys("m", "cycle", "succeeded")) == ["m/cycle/1", "m/cycle/2"]
    assert store.runs.keys("nobody", "cycle") == ()


def test_a_run_cannot_create_a_model_with_a_path_in_its_name(store: Store) -> None:
    with pytest.raises(InvalidNameError):
        store.runs.start("train", model="../escape")
    assert store.registry.list_models() == []
