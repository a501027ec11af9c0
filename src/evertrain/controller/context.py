"""What a cycle's steps and the loop that runs them share: the cycle's context and its types.

The loop (:mod:`evertrain.controller.loop`) builds a :class:`CycleContext` and calls the
steps (:mod:`evertrain.controller.steps`) with it; the steps only read and add to it.
Both import these types from here, so the loop imports the steps and the steps never
import the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evertrain.controller.alerts import Alerts
from evertrain.controller.clock import Clock
from evertrain.controller.policy import History
from evertrain.spec import Spec
from evertrain.store import Store

ACTOR = "controller"
"""The actor the controller's alias moves, gates and audit entries are recorded under."""


@dataclass
class CycleContext:
    """What steps of one cycle share: inputs, and the results of earlier steps."""

    store: Store
    spec: Spec
    project: Path
    clock: Clock
    cycle: int
    at: float
    history: History
    alerts: Alerts
    manual: str | None = None
    previous_at: float | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.spec.model.name


StepFn = Callable[[CycleContext], dict[str, Any]]
"""One step of a cycle: takes the context, returns the step's result (stored with its run)."""


class Stopped(Exception):
    """SIGTERM arrived; the cycle stops between steps and resumes on the next start."""
