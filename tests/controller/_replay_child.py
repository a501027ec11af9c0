"""Run (or resume) the demo's stream in-process on a project folder; the kill test's victim.

Usage: python _replay_child.py PROJECT
"""

from __future__ import annotations

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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
