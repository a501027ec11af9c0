"""The registry: immutable versions, aliases moved only by compare-and-swap, every attempt recorded."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from evertrain.exceptions import ConflictError, InvalidNameError, NotFoundError, UsageError
from evertrain.store import Store
from evertrain.store.registry import ModelVersion


def register(store: Store, name: str = "m", **kwargs: object) -> ModelVersion:
    digest = store.artifacts.put(
        json.dumps(f"model {name} {kwargs.get('run_id')} {len(store.audit.entries())}").encode()
    )
    kwargs.setdefault("framework", "json")
    kwargs.setdefault("actor", "alice")
    return store.registry.register(name, digest, **kwargs)  # type: ignore[arg-type]


def test_versions_count_up_per_model_and_keep_what_was_registered(db_url: str, tmp_path: Path) -> None:
    ticks = itertools.count(1_700_000_000)
    with Store(db_url, str(tmp_path / "art"), clock=lambda: float(next(ticks))) as store:
        first = register(
            store, metrics={"auc": 0.91}, params={"depth": 3}, trigger="drift", code_version="abc"
        )
        second = register(store, parent=1, trigger="schedule")
        other = register(store, "other")
        assert (first.version, second.version, other.version) == (1, 2, 1)

        again = store.registry.get_version("m", 1)
        assert again == first
        assert again.metrics == {"auc": 0.91}
        assert again.params == {"depth": 3}
        assert (again.trigger, again.code_version, again.created_by) == ("drift", "abc", "alice")
        assert second.parent == 1
        assert first.created_at < second.created_at
        assert [v.version for v in store.registry.list_versions("m")] == [1, 2]
        assert store.registry.list_models() == ["m", "other"]
        assert [e.action for e in store.audit.entries()] == ["register"] * 3


def test_a_run_registers_its_version_once(store: Store) -> None:
    """A run killed after registering and run again gets its version back, not a second one."""
    digest = store.artifacts.put(b'"weights"')
    first = store.registry.register("m", digest, framework="json", actor="a", run_id="run-1")
    again = store.registry.register("m", digest, framework="json", actor="a", run_id="run-1")
    other = store.registry.register("m", digest, framework="json", actor="a", run_id="run-2")
    assert again == first
    assert (first.version, other.version) == (1, 2)
    assert store.registry.version_of_run("m", "run-2") == 2
    assert store.registry.version_of_run("m", "run-3") is None
    assert store.registry.version_of_run("unknown", "run-1") is None
    assert len(store.registry.list_versions("m")) == 2
    assert len(store.audit.entries()) == 2


def test_a_refused_registration_writes_nothing(store: Store) -> None:
    digest = store.artifacts.put(b'"weights"')
    register(store)
    with pytest.raises(NotFoundError, match="no version 7"):
        store.registry.register("m", digest, framework="json", actor="a", parent=7)
    with pytest.raises(NotFoundError, match="snapshot"):
        store.registry.register("m", digest, framework="json", actor="a", snapshots=[("f" * 64, "train")])
    with pytest.raises(UsageError, match="role"):
        store.registry.register("m", digest, framework="json", actor="a", snapshots=[("f" * 64, "lunch")])
    with pytest.raises(UsageError, match="framework"):
        store.registry.register("m", digest, framework="", actor="a")
    with pytest.raises(UsageError, match="metrics"):
        store.registry.register("m", digest, framework="json", actor="a", metrics={"auc": float("nan")})
    with pytest.raises(UsageError, match="params"):
        store.registry.register("m", digest, framework="json", actor="a", params={"f": object()})
    assert [v.version for v in store.registry.list_versions("m")] == [1]
    assert len(store.audit.entries()) == 1


def test_unknown_models_and_versions_are_not_found(store: Store) -> None:
    register(store)
    with pytest.raises(NotFoundError, match="'nope' is not registered"):
        store.registry.get_version("nope", 1)
    with pytest.raises(NotFoundError, match="no version 2"):
        store.registry.get_version("m", 2)
    with pytest.raises(NotFoundError):
        store.registry.promote("m", 2, actor="a")
    with pytest.raises(InvalidNameError):
        store.registry.get_version("m", "../1")


def test_promote_moves_the_champion_only_from_the_expected_version(store: Store) -> None:
    for _ in range(3):
        register(store)
    move = store.registry.promote("m", 1, actor="alice", expected=None, reason="first")
    assert (move.from_version, move.to_version, move.outcome) == (None, 1, "applied")
    store.registry.promote("m", 2, actor="alice", expected=1)
    with pytest.raises(ConflictError, match="holds version 2, not the expected 1"):
        store.registry.promote("m", 3, actor="bob", expected=1, reason="stale")

    assert store.registry.get_alias("m", "champion") == 2
    assert store.registry.resolve("m", "champion").version == 2
    rows = [
        (h.from_version, h.to_version, h.expected_version, h.outcome, h.actor)
        for h in store.registry.history("m")
    ]
    assert rows == [
        (None, 1, None, "applied", "alice"),
        (1, 2, 1, "applied", "alice"),
        (2, 3, 1, "conflict", "bob"),
    ]
    assert store.registry.history("m")[-1].reason == "stale"
    # The lost attempt changed nothing, so it is not an audit entry; the two moves are.
    assert [e.action for e in store.audit.entries()] == ["register"] * 3 + ["promote"] * 2
    assert store.audit.verify().ok


def test_promoting_a_canary_clears_the_canary_alias(store: Store) -> None:
    for _ in range(3):
        register(store)
    store.registry.promote("m", 1, actor="a")
    store.registry.set_alias("m", "canary", 2, actor="a")
    store.registry.set_alias("m", "shadow", 3, actor="a")
    store.registry.promote("m", 2, actor="a")
    assert store.registry.get_aliases("m") == {"champion": 2, "canary": None, "shadow": 3}


def test_promote_leaves_an_alias_that_moved_to_another_version_meanwhile(
    store: Store, db_url: str, artifacts_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Promoting v2 clears the canary only if the canary is still on v2 when the move commits."""
    for _ in range(3):
        register(store)
    store.registry.set_alias("m", "canary", 2, actor="a")
    store.registry.set_alias("m", "shadow", 2, actor="a")
    real_write = store.db.write

    @contextlib.contextmanager
    def someone_moves_the_canary_first() -> Iterator[Connection]:
        monkeypatch.setattr(store.db, "write", real_write)
        with Store(db_url, artifacts_url) as other:
            other.registry.set_alias("m", "canary", 3, actor="other", expected=2)
        with real_write() as conn:
            yield conn

    monkeypatch.setattr(store.db, "write", someone_moves_the_canary_first)
    store.registry.promote("m", 2, actor="a", expected=None)
    assert store.registry.get_aliases("m") == {"champion": 2, "canary": 3, "shadow": None}
    cleared = [(h.alias, h.from_version, h.to_version) for h in store.registry.history("m")][-2:]
    assert cleared == [("champion", None, 2), ("shadow", 2, None)]


def test_rollback_walks_back_through_earlier_champions(store: Store) -> None:
    for _ in range(4):
        register(store)
    with pytest.raises(UsageError, match="no champion"):
        store.registry.rollback("m", actor="a")
    for version in (1, 2, 3):
        store.registry.promote("m", version, actor="a")
    assert store.registry.rollback("m", actor="a", reason="bad").to_version == 2
    assert store.registry.rollback("m", actor="a").to_version == 1
    with pytest.raises(UsageError, match="no earlier champion"):
        store.registry.rollback("m", actor="a")
    store.registry.promote("m", 4, actor="a")
    assert store.registry.rollback("m", actor="a").to_version == 1
    assert store.registry.get_alias("m", "champion") == 1
    assert [e.action for e in store.audit.entries()][-3:] == ["rollback", "promote", "rollback"]
    assert store.audit.verify().ok


def test_an_alias_can_be_cleared(store: Store) -> None:
    register(store)
    store.registry.set_alias("m", "shadow", 1, actor="a")
    store.registry.set_alias("m", "shadow", None, actor="a", expected=1)
    assert store.registry.get_alias("m", "shadow") is None
    with pytest.raises(InvalidNameError):
        store.registry.set_alias("m", "../champion", 1, actor="a")
