"""Run (or resume) the demo's stream in-process on a project folder; the kill test's victim.

Usage: python _replay_child.py PROJECT     one life, to the end
       python _replay_child.py --zygote    imports once, then forks one life per "fork PROJECT"
                                           (or "warm PROJECT") line on stdin; each life prints
                                           "pid N" first and the zygote prints "exit STATUS"
                                           once it is reaped

The zygote exists because importing the controller, trainer and gates takes seconds and the
kill test needs many lives: each forked life starts from a fresh copy of an interpreter that
has imported but never opened a store, so it resumes from the folder alone, as a restarted
process would.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

from evertrain.controller.clock import ManualClock
from evertrain.faces.demo import START, make_replay
from evertrain.faces.demo_scenarios import synthetic_scenario, write_project
from evertrain.store import Store


def main(project: Path) -> None:
    if not (project / "evertrain.yaml").exists():
        write_project(project)
    clock = ManualClock(START)
    store = Store.for_project(project, clock=clock).open()
    replay = make_replay(project, synthetic_scenario(seed=7, fast=True), clock, store)
    print("ready", flush=True)
    replay.run(on_batch=lambda r: print(f"batch {r['batch']} done", flush=True))
    print("finished", flush=True)


def zygote() -> None:
    print("zygote ready", flush=True)
    for line in sys.stdin:
        command, _, project = line.strip().partition(" ")
        if command not in ("fork", "warm"):
            break
        # "warm" runs a life whose modules the zygote then imports, so later lives pay for
        # none of the imports the controller makes lazily (trainer, gates, statistics).
        modules_r, modules_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(modules_r)
            print(f"pid {os.getpid()}", flush=True)
            code = 0
            try:
                main(Path(project))
                if command == "warm":
                    os.write(modules_w, "\n".join(sorted(sys.modules)).encode())
            except BaseException as exc:  # a life that fails says why, then exits non-zero
                print(f"error {exc!r}", file=sys.stderr, flush=True)
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        os.close(modules_w)
        with os.fdopen(modules_r, "rb") as modules:
            names = modules.read().decode().split()
        _, status = os.waitpid(pid, 0)
        for name in names:
            if name not in sys.modules and not name.startswith("__"):
                with contextlib.suppress(Exception):
                    importlib.import_module(name)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--zygote":
        zygote()
    else:
        main(Path(sys.argv[1]))
