"""A helper process for the concurrency and kill tests; imports nothing but the store.

Run as a script. It reads one JSON command per line on stdin and answers with one JSON
line on stdout:

``["open", DB, ART]``
    arm, answer ``{"armed": true}``, wait for a ``go`` line, then open (and so migrate)
    a store; answer ``{"ok": true}`` or ``{"error": ...}``.
``["promote", DB, ART, MODEL, VERSION, EXPECTED]``
    arm as above, then on ``go`` promote VERSION expecting EXPECTED as champion;
    answer ``{"outcome": "applied" | "conflict"}``.
``["churn", DB, ART, STATE_FILE]``
    fork a child that registers and promotes in a loop until it is killed. The child
    answers ``{"ready": PID}`` itself once its store is open. STATE_FILE (16 bytes,
    memory-mapped) holds the phase the child is in and the iteration it works on, so
    that the test can tell where a kill landed and a new child resumes that iteration.
``["reap", PID]``
    wait for a churn child to end; answer ``{"pid": PID, "signal": N, "exit": N}``.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import sys
import traceback
from typing import Any

import evertrain.store.migrations  # noqa: F401  (imported before any fork, so children start fast)
from evertrain.exceptions import ConflictError
from evertrain.store import Store

MODEL = "churn"
PHASES = {"idle": 0, "put": 1, "register": 2, "promote": 3}

_stores: dict[tuple[str, str], Store] = {}


def _answer(value: dict[str, Any]) -> None:
    os.write(1, (json.dumps(value) + "\n").encode())


def _store(db: str, art: str) -> Store:
    key = (db, art)
    if key not in _stores:
        _stores[key] = Store(db, art).open()
    return _stores[key]


def _wait_go() -> None:
    _answer({"armed": True})
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected 'go', got {line!r}")


def _open(db: str, art: str) -> None:
    _wait_go()
    store = Store(db, art)
    try:
        store.open()
        _answer({"ok": True})
    except Exception as exc:
        _answer({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        store.close()


def _promote(db: str, art: str, model: str, version: int, expected: int | None) -> None:
    store = _store(db, art)
    store.registry.get_aliases(model)  # a warm connection, so both racers start level
    _wait_go()
    try:
        store.registry.promote(model, version, actor=f"racer-{os.getpid()}", expected=expected)
        _answer({"outcome": "applied"})
    except ConflictError:
        _answer({"outcome": "conflict"})


def _churn_forever(db: str, art: str, state_file: str) -> None:
    fd = os.open(state_file, os.O_RDWR)
    state = mmap.mmap(fd, 16)
    iteration = struct.unpack_from("<Q", state, 8)[0]
    store = Store(db, art).open()
    _answer({"ready": os.getpid()})
    while True:
        # The iteration is written before its work starts: a child killed part-way
        # leaves it behind, and the next child does it again under the same run_id.
        struct.pack_into("<Q", state, 8, iteration)
        state[0] = PHASES["put"]
        body = json.dumps({"iteration": iteration, "pad": "x" * (iteration % 97) * 40}).encode()
        digest = store.artifacts.put(body)
        state[0] = PHASES["register"]
        mv = store.registry.register(
            MODEL, digest, framework="json", actor="churn", run_id=f"r{iteration}", metrics={"i": iteration}
        )
        state[0] = PHASES["promote"]
        store.registry.promote(MODEL, mv.version, actor="churn", reason=f"iteration {iteration}")
        state[0] = PHASES["idle"]
        iteration += 1
        struct.pack_into("<Q", state, 8, iteration)


def _churn(db: str, art: str, state_file: str) -> None:
    for cached in _stores.values():  # never share a parent's pooled connections with a child
        cached.db.engine.dispose(close=False)
    _stores.clear()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            _churn_forever(db, art, state_file)
        except BaseException:
            _answer({"error": traceback.format_exc()})
        finally:
            os._exit(1)


def _reap(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    _answer(
        {
            "pid": pid,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        }
    )


def main() -> None:
    commands = {"open": _open, "promote": _promote, "churn": _churn, "reap": _reap}
    for line in sys.stdin:
        if not line.strip():
            continue
        name, *args = json.loads(line)
        commands[name](*args)


if __name__ == "__main__":
    main()
