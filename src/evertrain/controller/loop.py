"""The controller: one cycle at a time of monitor -> decide -> train -> gate -> rollout.

Every cycle is a run in the store, and every step a child run keyed by
``<model>/cycle/<n>/<step>``. A step that succeeded is never run again: its stored
result is read back. A step that was running when the process died is run again, and
each step is idempotent (training registers by run id, gates are recorded once per
version, alias moves are compare-and-swap), so a controller killed at any point resumes
where it stopped without repeating finished work or losing started work.

A step that raises anything (an evertrain error or any other exception) is recorded as
failed with its error, and the cycle and the loop go on: a bug in one step, or a store
hiccup, never kills the controller. A training that fails does not count as a retrain for
the cooldown, so the next cycle may try again, and its result says so.

A lease in the database makes sure two controllers on one store never both act, and
it is a fence: every write of a cycle carries the lease's token, and once another
controller took the lease over (this one paused past it), the store refuses them and
this controller stops (a lost lease is the one error that ends the loop). SIGTERM sets a
flag that is checked between steps; SIGINT (Ctrl-C) raises ``KeyboardInterrupt`` at once,
which stops a training worker (the executor kills it) and leaves the cycle's running
step to be run again on the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evertrain.controller import steps as default_steps
from evertrain.controller.alerts import Alerts
from evertrain.controller.clock import Clock, ManualClock
from evertrain.controller.context import CycleContext, StepFn, Stopped
from evertrain.controller.lease import Lease
from evertrain.controller.outcome import error_code
from evertrain.controller.policy import History
from evertrain.data.logs import CompactResult, compact
from evertrain.exceptions import EvertrainError, LeaseLostError, StoreError, UsageError
from evertrain.settings import use_system_arrow_allocator
from evertrain.spec import Spec, canonical_json
from evertrain.store import Store
from evertrain.store.runs import Run
from evertrain.store.storage import configure, describe, is_transport_error

log = logging.getLogger(__name__)
StepCallback = Callable[[int, str, dict[str, Any]], None]
"""Called as each step of a cycle ends: the cycle number, the step's name, its result."""
STEPS = ("monitor", "decide", "train", "gate", "rollout")
LEASE_TTL_SECONDS = 60.0  # a controller that stops renewing is replaced after this long
LEASE_RENEW_EVERY = LEASE_TTL_SECONDS / 3
COMPACTION_LEASE_TTL = 600.0  # a compaction that dies frees the logs for another after this long


def compact_logs(
    store: Store, models: list[str] | None = None, holder: str | None = None
) -> CompactResult | None:
    """Compact the store's logs under the compaction lease; None when another compaction holds it."""
    if not store.logs_url:
        return CompactResult()
    who = holder or f"{socket.gethostname()}:{os.getpid()}"
    lease = Lease(store.db, f"compact/{store.logs_url}", who, COMPACTION_LEASE_TTL, store.clock)
    if not lease.acquire():
        return None
    try:
        return compact(store.logs_url, models=models)
    finally:
        lease.release()


class Controller:
    def __init__(
        self,
        store: Store,
        spec: Spec,
        project: Path | str,
        *,
        clock: Clock | None = None,
        steps: dict[str, StepFn] | None = None,
        holder: str | None = None,
        lease_ttl: float | None = None,
        interval: float | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.project = Path(project)
        self.clock = clock or Clock()
        self.steps = steps or default_steps.STEP_FUNCTIONS
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.alerts = Alerts(spec.alerts.webhooks)
        ttl = lease_ttl if lease_ttl is not None else LEASE_TTL_SECONDS
        self.lease = Lease(store.db, f"controller/{spec.model.name}", self.holder, ttl, self.clock)
        #: Time between cycles: ``interval`` when given (``evertrain run --interval``), else the spec's.
        self.interval = float(interval) if interval is not None else spec.policy.cycle_interval
        self._stop = threading.Event()
        configure(spec.storage.options)
        self._on_step: StepCallback | None = None
        self._on_start: Callable[[int], None] | None = None

    # -- state ---------------------------------------------------------------------------

    def _cycle_key(self, n: int) -> str:
        return f"{self.spec.model.name}/cycle/{n}"

    def _newest_cycle(self, status: str | None = None) -> Run | None:
        """The cycle run with the highest number (of ``status`` where given). The number is the
        last part of its key; reading keys alone keeps this cheap after thousands of cycles,
        where reading every cycle's record (with its policy history) took longer each cycle."""
        prefix = self._cycle_key(0).removesuffix("0")
        numbers = [
            int(number)
            for key in self.store.runs.keys(self.spec.model.name, "cycle", status)
            if key.startswith(prefix) and (number := key[len(prefix) :]).isdigit()
        ]
        return self.store.runs.find(self._cycle_key(max(numbers))) if numbers else None

    def last_cycle(self) -> tuple[int, str] | None:
        """The newest cycle number and its status."""
        newest = self._newest_cycle()
        return None if newest is None else (int(newest.params["cycle"]), newest.status)

    def previous(self) -> tuple[History, float | None]:
        """The policy history and the time of the newest finished cycle."""
        newest = self._newest_cycle("succeeded")
        if newest is None:
            return History(), None
        result = newest.result or {}
        return History.from_dict(result.get("history")), result.get("at")

    # -- running -------------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM stops the loop between steps; SIGINT keeps Python's KeyboardInterrupt (stop now)."""
        signal.signal(signal.SIGTERM, self.request_stop)

    def run(
        self,
        cycles: int | None = None,
        on_cycle: Callable[[dict[str, Any]], None] | None = None,
        on_step: StepCallback | None = None,
        on_start: Callable[[int], None] | None = None,
        through: str | None = None,
    ) -> int:
        """Run cycles until ``cycles`` are done or a stop is requested; returns cycles run.

        ``through``: end each cycle after that step (see :meth:`cycle`).

        ``on_start(cycle)`` is called as a cycle begins (or resumes), ``on_step(cycle, name,
        result)`` as each of its steps ends and ``on_cycle`` with
        each cycle's result; when another cycle follows, that result carries ``next_at``,
        the time it is due. On the wall clock a heartbeat thread renews the lease while the
        loop works or waits, so a long training keeps it, and a clean stop releases it so
        that a successor starts at once rather than after the lease expires.
        """
        done = 0
        self._on_step, self._on_start = on_step, on_start
        # Every read of the loop comes after a pause (the interval between cycles).
        use_system_arrow_allocator()
        beat = None if isinstance(self.clock, ManualClock) else self._heartbeat()
        try:
            while (cycles is None or done < cycles) and not self._stop.is_set():
                try:
                    result = self.cycle(through=through)
                except LeaseLostError as exc:
                    log.warning("stopping: %s", exc)
                    break
                done += 1
                more = cycles is None or done < cycles
                if more:
                    result = {**result, "next_at": self.clock.now() + self.interval}
                if on_cycle is not None:
                    on_cycle(result)
                if more:
                    self.clock.sleep(self.interval, until=self._stop)
        finally:
            self._on_step = self._on_start = None
            self._stop.set()
            if beat is not None:
                beat.join(timeout=5)
            if self.lease.token is not None:
                self.lease.release()
            self.alerts.flush()
        return done

    def _heartbeat(self) -> threading.Thread:
        def renew() -> None:
            while not self._stop.wait(min(LEASE_RENEW_EVERY, self.lease.ttl / 3)):
                if self.lease.token is not None:
                    try:
                        self.lease.renew()  # never takes a lost lease back: the fence would not know
                    except EvertrainError as exc:  # a store hiccup: the next beat tries again
                        log.warning("lease renewal failed: %s", exc)

        thread = threading.Thread(target=renew, name="evertrain-lease", daemon=True)
        thread.start()
        return thread

    def cycle(self, manual: str | None = None, through: str | None = None) -> dict[str, Any]:
        """Run (or resume) one cycle; returns its result.

        ``through``: stop after that step and leave the cycle running, for the next call to
        resume (an orchestrator that runs each step as a task of its own). The result then
        carries ``paused_after`` (that step) and ``next_step``; the last step ends the cycle.
        """
        if through is not None and through not in STEPS:
            raise UsageError(f"unknown step {through!r}; the steps are {', '.join(STEPS)}")
        if not self.lease.acquire():
            held = self.lease.holder_now()
            return {
                "cycle": None,
                "skipped": f"another controller holds the lease ({held[0] if held else '?'})",
            }
        self.lease.fence()  # every write of this cycle needs this lease and token
        last = self.last_cycle()
        if last is not None and last[1] == "running":
            number = last[0]
        else:
            number = (last[0] + 1) if last is not None else 1
        key = self._cycle_key(number)
        run = self.store.runs.start(
            "cycle",
            model=self.spec.model.name,
            key=key,
            params={
                "cycle": number,
                "at": self.clock.now(),
                "manual": manual,
                "interval": self.interval,
            },
        )
        # Replicas started with only the store URLs serve with the project file saved here.
        try:
            self.store.specs.save(self.spec.model.name, canonical_json(self.spec))
        except EvertrainError as exc:  # the artifact store is down: the next cycle saves it
            log.warning("cannot save the project file in the store: %s", exc)
        if self._on_start is not None:
            self._on_start(number)
        history, previous_at = self.previous()
        ctx = CycleContext(
            store=self.store,
            spec=self.spec,
            project=self.project,
            clock=self.clock,
            cycle=number,
            at=float(run.params.get("at", self.clock.now())),
            history=history,
            alerts=self.alerts,
            manual=run.params.get("manual"),
            previous_at=previous_at,
        )
        try:
            for name in STEPS:
                if self._stop.is_set():
                    raise Stopped
                ctx.results[name] = self._step(ctx, run.id, name)
                if name == "train" and ctx.results[name].get("status") == "failed":
                    ctx.results[name]["cooldown"] = self._forget_failed_retrain(ctx)
                if self._on_step is not None:
                    self._on_step(number, name, ctx.results[name])
                if name == through and name != STEPS[-1]:
                    following = STEPS[STEPS.index(name) + 1]
                    log.info("cycle %d paused after %s; %s is next", number, name, following)
                    return {
                        "cycle": number,
                        "at": ctx.at,
                        **ctx.results,
                        "paused_after": name,
                        "next_step": following,
                    }
        except Stopped:
            log.info("stop requested: cycle %d stops before its next step", number)
            return {"cycle": number, "stopped": True, **ctx.results}
        result = {"cycle": number, "at": ctx.at, **ctx.results, "history": ctx.history.to_dict()}
        every = self.spec.storage.compact_every
        if every and number % every == 0:
            result["compaction"] = self._compact()
        self.store.runs.finish(run.id, "succeeded", result=result)
        return result

    def _compact(self) -> dict[str, Any]:
        """Compact this model's logs; a failure is reported in the cycle's result, not raised."""
        try:
            done = compact_logs(self.store, [self.spec.model.name], self.holder)
        except EvertrainError as exc:
            log.warning("log compaction failed: %s", exc)
            return {"error": str(exc)}
        return {"skipped": "another compaction is running"} if done is None else done.to_dict()

    def _step(self, ctx: CycleContext, cycle_run: str, name: str) -> dict[str, Any]:
        key = f"{self._cycle_key(ctx.cycle)}/{name}"
        existing = self.store.runs.find(key)
        if existing is not None and existing.status == "succeeded":
            result = dict(existing.result or {})
            if "history" in result:
                ctx.history = History.from_dict(result["history"])
            return result
        run = existing or self.store.runs.start(
            "step", model=self.spec.model.name, key=key, parent_id=cycle_run, params={"step": name}
        )
        try:
            try:
                result = self.steps[name](ctx)
            except Exception as exc:
                if isinstance(exc, EvertrainError) or not is_transport_error(exc):
                    raise
                # A storage client's failure that no part turned into a StoreError is one all the same.
                raise StoreError(f"step {name}: storage failed: {describe(exc)}") from exc
        except LeaseLostError:
            raise  # another controller has the lease now: this one stops, writing nothing more
        except Exception as exc:
            # Any other failure (an evertrain error, a bug, a dependency's error) is recorded
            # and the cycle goes on: the next cycle retries what it needs. KeyboardInterrupt and
            # SystemExit are not Exceptions: they stop the controller, the step stays running.
            error = describe_error(exc)
            # The step's line and its run carry the error; the traceback is for debug logs only.
            log.debug("step %s of cycle %d failed", name, ctx.cycle, exc_info=exc)
            self.store.runs.finish(run.id, "failed", error=error)
            # the code says what kind of failure it was (evertrain.controller.outcome maps it)
            return {"status": "failed", "error": error, "error_code": error_code(exc)}
        self.store.runs.finish(run.id, "succeeded", result=result)
        return result

    @staticmethod
    def _forget_failed_retrain(ctx: CycleContext) -> str:
        """A failed training is no retrain: drop it from the history the cooldown reads.

        The decision recorded the retrain before training began; left there, its cooldown
        would hold every later cycle without anything new being served. Returns what the
        cycle's result says about it.
        """
        times = ctx.history.retrain_times
        if ctx.at in times:
            ctx.history.retrain_times = [t for t in times if t != ctx.at]
        return "a failed training does not count toward the cooldown: the next cycle may retrain"


def describe_error(exc: BaseException) -> str:
    """One line for a failed step: an evertrain error's message, else the type and message."""
    if isinstance(exc, EvertrainError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
