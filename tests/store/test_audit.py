"""The audit chain: any altered, removed or reordered row is found and named."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_procs import Worker

from evertrain.store import Store
from evertrain.store.audit import entry_hash
from evertrain.store.metadata import audit_head, audit_log

N_MODELS = 2
N_VERSIONS = 4
N_ENTRIES = N_MODELS * N_VERSIONS * 2  # a register and a promote per version


def fill(store: Store) -> None:
    for m in range(N_MODELS):
        for v in range(N_VERSIONS):
            digest = store.artifacts.put(json.dumps(f"{m}-{v}").encode())
            mv = store.registry.register(f"model-{m}", digest, framework="json", actor="a", metrics={"v": v})
            store.registry.promote(f"model-{m}", mv.version, actor="b", reason=f"step {v}")


def rows(store: Store) -> list[dict[str, Any]]:
    with store.db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq))]


def restore(store: Store, original: list[dict[str, Any]]) -> None:
    with store.db.engine.begin() as conn:
        conn.execute(sa.delete(audit_log))
        conn.execute(sa.insert(audit_log), original)
        last = original[-1]
        conn.execute(sa.update(audit_head).values(seq=last["seq"], hash=last["hash"]))


def run_sql(store: Store, *statements: sa.Executable) -> None:
    with store.db.engine.begin() as conn:
        for statement in statements:
            conn.execute(statement)


def alter(store: Store, seq: int, column: str) -> None:
    row = next(r for r in rows(store) if r["seq"] == seq)
    changed: Any
    if column == "at":
        changed = row["at"] + 1.0
    elif column in ("hash", "prev_hash"):
        changed = ("0" if row[column][0] != "0" else "1") + row[column][1:]
    elif column == "reason":
        changed = "covered up" if row["reason"] != "covered up" else "plain"
    else:
        changed = row[column][:-1] + ("X" if row[column][-1] != "X" else "Y")
    run_sql(store, sa.update(audit_log).where(audit_log.c.seq == seq).values({column: changed}))


def swap(store: Store, i: int, j: int) -> None:
    """Exchange the places of two rows in the chain."""
    run_sql(
        store,
        sa.update(audit_log).where(audit_log.c.seq == i).values(seq=-1),
        sa.update(audit_log).where(audit_log.c.seq == j).values(seq=i),
        sa.update(audit_log).where(audit_log.c.seq == -1).values(seq=j),
    )


def delete(store: Store, seq: int) -> None:
    run_sql(store, sa.delete(audit_log).where(audit_log.c.seq == seq))


COLUMNS = ["at", "actor", "action", "subject", "reason", "payload", "prev_hash", "hash"]

tamper = st.one_of(
    st.tuples(st.just("alter"), st.integers(1, N_ENTRIES), st.sampled_from(COLUMNS)),
    st.tuples(st.just("delete"), st.integers(1, N_ENTRIES)),
    st.tuples(st.just("swap"), st.integers(1, N_ENTRIES), st.integers(1, N_ENTRIES)).filter(
        lambda t: t[1] != t[2]
    ),
)


def apply(store: Store, change: tuple[Any, ...]) -> int:
    """Make the change and return the sequence number that verify must name."""
    if change[0] == "alter":
        alter(store, change[1], change[2])
        return int(change[1])
    if change[0] == "delete":
        delete(store, change[1])
        return int(change[1])
    swap(store, change[1], change[2])
    return min(change[1], change[2])


def test_an_intact_chain_verifies(store: Store) -> None:
    assert store.audit.verify().ok
    fill(store)
    result = store.audit.verify()
    assert (result.ok, result.n_entries) == (True, N_ENTRIES)
    assert [e.seq for e in store.audit.entries()] == list(range(1, N_ENTRIES + 1))
    assert [e.action for e in store.audit.entries(subject_prefix="model/model-1/")][:2] == [
        "register",
        "promote",
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=tamper)
def test_any_tampering_is_named(store: Store, change: tuple[Any, ...]) -> None:
    """Each example tampers with one intact chain and puts it back afterwards."""
    if not store.registry.list_models():
        fill(store)
    original = rows(store)
    bad = apply(store, change)
    try:
        result = store.audit.verify()
        assert not result.ok
        assert result.first_bad_seq == bad, result.problem
        assert f"entry {bad}" in (result.problem or "")
    finally:
        restore(store, original)
    assert store.audit.verify().ok


def test_every_row_altered_removed_or_reordered_is_named(store: Store) -> None:
    """The same, exhaustively for each row, removal and swaps with the next row."""
    fill(store)
    original = rows(store)
    for seq in range(1, N_ENTRIES + 1):
        changes: list[tuple[Any, ...]] = [("alter", seq, "payload"), ("delete", seq)]
        if seq < N_ENTRIES:
            changes.append(("swap", seq, seq + 1))
        for change in changes:
            bad = apply(store, change)
            result = store.audit.verify()
            restore(store, original)
            assert (result.ok, result.first_bad_seq) == (False, bad), (change, result.problem)


def test_a_rewritten_row_with_a_fresh_hash_is_still_caught(store: Store) -> None:
    fill(store)
    row = rows(store)[4]
    row["reason"] = "nothing to see"
    new_hash = entry_hash(
        row["seq"],
        row["at"],
        row["actor"],
        row["action"],
        row["subject"],
        row["reason"],
        row["payload"],
        row["prev_hash"],
    )
    run_sql(
        store,
        sa.update(audit_log).where(audit_log.c.seq == row["seq"]).values(reason=row["reason"], hash=new_hash),
    )
    result = store.audit.verify()
    assert not result.ok
    assert result.first_bad_seq == row["seq"] + 1
    assert f"entry {row['seq']} rewritten" in (result.problem or "")


def test_the_newest_row_rewritten_with_a_fresh_hash_is_caught_by_the_head(store: Store) -> None:
    fill(store)
    row = rows(store)[-1]
    new_hash = entry_hash(
        row["seq"],
        row["at"],
        "mallory",
        row["action"],
        row["subject"],
        row["reason"],
        row["payload"],
        row["prev_hash"],
    )
    run_sql(
        store,
        sa.update(audit_log).where(audit_log.c.seq == row["seq"]).values(actor="mallory", hash=new_hash),
    )
    result = store.audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, N_ENTRIES)


def test_a_row_slipped_in_after_the_head_is_named(store: Store) -> None:
    fill(store)
    last = rows(store)[-1]
    forged = dict(last, seq=last["seq"] + 1, prev_hash=last["hash"], actor="mallory")
    forged["hash"] = entry_hash(
        forged["seq"],
        forged["at"],
        forged["actor"],
        forged["action"],
        forged["subject"],
        forged["reason"],
        forged["payload"],
        forged["prev_hash"],
    )
    run_sql(store, sa.insert(audit_log).values(forged))
    result = store.audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, N_ENTRIES + 1)
    assert f"entry {N_ENTRIES + 1}" in (result.problem or "")


def test_verify_is_not_fooled_by_entries_appended_while_it_reads(
    db_url: str, artifacts_url: str, tmp_path: Path, workers: Callable[[], Worker]
) -> None:
    """A busy store (another process appending) always verifies: verify reads one snapshot."""
    state = tmp_path / "churn.state"
    state.write_bytes(bytes(16))
    with Store(db_url, artifacts_url) as store:
        worker = workers()
        worker.send("churn", db_url, artifacts_url, str(state))
        pid = worker.recv()["ready"]
        try:
            # At least 1.5 s and 30 checks, and until the other process has appended over 20
            # entries (a loaded machine gives it fewer per second): verify raced real appends.
            deadline, give_up = time.monotonic() + 1.5, time.monotonic() + 120
            checks, seen = 0, 0
            while time.monotonic() < deadline or checks < 30 or seen <= 20:
                assert time.monotonic() < give_up, f"the other process appended only {seen} entries"
                result = store.audit.verify()
                assert result.ok, result.problem
                checks, seen = checks + 1, result.n_entries
        finally:
            os.kill(pid, signal.SIGKILL)
            worker.send("reap", pid)
            assert worker.recv()["signal"] == signal.SIGKILL
        assert store.audit.verify().n_entries > 20


@pytest.mark.parametrize("column", COLUMNS)
def test_each_field_is_covered_by_the_hash(store: Store, column: str) -> None:
    fill(store)
    alter(store, 3, column)
    result = store.audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)
