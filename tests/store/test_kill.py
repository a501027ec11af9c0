"""SIGKILL at random points of register and promote: nothing is lost or half-written.

A helper process registers and promotes in a loop and is killed after a random delay
long enough to span many operations, or (every third kill each) as soon as it is seen
inside register or promote, so that both are hit however fast or slow the machine makes
them; a memory-mapped state file tells where each kill landed. The next helper resumes
the interrupted iteration under the same run_id, as a restarted controller step would.
After every kill the store must hold together.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import signal
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from store_procs import Worker

from evertrain.store import Store
from evertrain.store.metadata import alias_history, aliases, audit_log, model_versions

KILLS = 50
MAX_DELAY = 0.15  # seconds; SQLite does a register + promote in a few ms, PostgreSQL in ~15 ms
PHASE_NAMES = {0: "idle", 1: "put", 2: "register", 3: "promote"}
#: Where each kill is aimed, in turn: inside register, inside promote, after a random delay.
AIMS = (2, 3, None)


def _iteration(state: Path) -> int:
    return int(struct.unpack_from("<Q", state.read_bytes(), 8)[0])


def _wait_past(state: Path, iteration: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _iteration(state) <= iteration:
        assert time.monotonic() < deadline, f"{what}: the helper made no progress in {timeout:.0f}s"
        time.sleep(0.002)


def _wait_inside(state: Path, phase: int, timeout: float = 10.0) -> None:
    """Spin until the helper is inside ``phase`` (a few milliseconds long: no sleeping)."""
    with open(state, "rb") as fh, mmap.mmap(fh.fileno(), 16, access=mmap.ACCESS_READ) as view:
        deadline = time.monotonic() + timeout
        while view[0] != phase:
            assert time.monotonic() < deadline, f"the helper was never seen in {PHASE_NAMES[phase]}"


def check_store(store: Store) -> int:
    """Every invariant a crash must not break; returns how many versions there are."""
    verdict = store.audit.verify()
    assert verdict.ok, verdict.problem
    with store.db.read() as conn:
        versions = conn.execute(
            sa.select(model_versions.c.version, model_versions.c.run_id, model_versions.c.artifact_sha256)
        ).all()
        held = conn.execute(sa.select(aliases.c.alias, aliases.c.version)).all()
        applied = (
            conn.execute(
                sa.select(alias_history.c.to_version)
                .where(alias_history.c.alias == "champion", alias_history.c.outcome == "applied")
                .order_by(alias_history.c.id)
            )
            .scalars()
            .all()
        )
        actions = Counter(conn.execute(sa.select(audit_log.c.action)).scalars())
    by_number = {v.version: v for v in versions}
    # Versions are numbered without gaps and each run registered at most one.
    assert sorted(by_number) == list(range(1, len(versions) + 1))
    run_ids = [v.run_id for v in versions]
    assert len(set(run_ids)) == len(run_ids)
    # Every alias points at a registered version whose artifact verifies.
    for alias, version in held:
        assert version in by_number, f"{alias} points at unregistered version {version}"
        assert store.artifacts.verify(by_number[version].artifact_sha256)
    # A change and its audit entry commit together, and the champion is the last applied move.
    assert actions["register"] == len(versions)
    assert actions["promote"] == len(applied)
    champion = dict(held).get("champion")
    assert champion == (applied[-1] if applied else None)
    return len(versions)


def test_sigkill_during_register_and_promote_leaves_a_sound_store(
    db_url: str, artifacts_url: str, tmp_path: Path, workers: Callable[[], Worker]
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    state = tmp_path / "churn.state"
    state.write_bytes(bytes(16))
    worker = workers()
    landed: Counter[str] = Counter()
    with Store(db_url, artifacts_url) as store:
        for kill in range(KILLS):
            resumed = _iteration(state)
            worker.send("churn", db_url, artifacts_url, str(state))
            pid = worker.recv()["ready"]
            # Each child first finishes the iteration its predecessor left, however slow a
            # loaded machine makes it; the kill then lands at a random point after that.
            _wait_past(state, resumed, f"kill {kill} (seed {seed})")
            aim = AIMS[kill % len(AIMS)]
            if aim is None:
                time.sleep(rng.uniform(0.0, MAX_DELAY))
            else:
                _wait_inside(state, aim)
            os.kill(pid, signal.SIGKILL)
            worker.send("reap", pid)
            reaped = worker.recv()
            assert reaped["signal"] == signal.SIGKILL, (
                f"kill {kill} (seed {seed}): helper ended by itself: {reaped}"
            )
            landed[PHASE_NAMES[state.read_bytes()[0]]] += 1
            check_store(store)

        # Every iteration begun was registered exactly once, under its own run_id.
        iteration = _iteration(state)
        n_versions = check_store(store)
        with store.db.read() as conn:
            run_ids = set(conn.execute(sa.select(model_versions.c.run_id)).scalars())
        assert run_ids in ({f"r{i}" for i in range(iteration)}, {f"r{i}" for i in range(iteration + 1)})
        assert n_versions >= KILLS

        # Every stored blob is whole: temporaries never appear under their final name.
        blobs = [p for p in (Path(artifacts_url) / "sha256").rglob("*") if p.is_file()]
        for blob in blobs:
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.parent.name + blob.name
        leftovers = list((Path(artifacts_url) / "tmp").iterdir())
        assert len(leftovers) <= landed["put"]

    # The kills landed inside the operations, not between them (seed printed on failure).
    assert landed["register"] >= KILLS // 10, (seed, landed)
    assert landed["promote"] >= KILLS // 10, (seed, landed)
