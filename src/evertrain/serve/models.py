"""Switching the versions a replica serves (loading one is :mod:`evertrain.train.predictor`).

A :class:`ModelManager` keeps, per model, one immutable :class:`Routes` object: the
loaded champion, canary (with its traffic share) and shadow. A request reads that
object once and uses it to the end, so a request that started on a version finishes
on it even if a switch happens meanwhile. A switch is the assignment of a new
``Routes``, done only after every version it names has been loaded, hash-checked and
warmed with one prediction: blue-green, with the old version kept loaded as the
instant target of a rollback.

A poller thread reads the aliases and the active rollout of every model from the store
every ``poll_seconds``, so that several replicas converge on the same routing with no
channel but the store. ``refresh()`` does the same at once (the admin routes call it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from evertrain.exceptions import EvertrainError, NotFoundError
from evertrain.serve.metrics import ServeMetrics
from evertrain.spec import ModelSpec, RolloutSpec
from evertrain.store import Store
from evertrain.store.formats import BoosterModel
from evertrain.store.metadata import models as models_table
from evertrain.store.metadata import rollouts
from evertrain.store.names import CANARY, CHAMPION, SHADOW
from evertrain.train.predictor import LoadedModel, LoadOptions, load_version

log = logging.getLogger("evertrain.serve.models")

ARMS = (CHAMPION, CANARY, SHADOW)
DEFAULT_CANARY_SHARE = 0.1
"""Share of traffic for a canary alias set by hand, with no rollout and no spec to say otherwise."""
LOAD_RETRY_SECONDS = 30.0
"""A version that failed to load is tried again after this long (or at once on an explicit refresh)."""
_ACTIVE_PHASES = (SHADOW, CANARY)


@dataclass(frozen=True)
class Desired:
    """What the store says a model should serve."""

    champion: int | None = None
    canary: int | None = None
    share: float = 0.0
    shadow: int | None = None


@dataclass(frozen=True)
class Routes:
    """What one model serves right now; replaced whole, never changed in place."""

    name: str
    champion: LoadedModel | None = None
    canary: LoadedModel | None = None
    share: float = 0.0
    shadow: LoadedModel | None = None
    desired: Desired = field(default_factory=Desired)

    @property
    def versions(self) -> dict[str, int | None]:
        return {
            CHAMPION: None if self.champion is None else self.champion.version,
            CANARY: None if self.canary is None else self.canary.version,
            SHADOW: None if self.shadow is None else self.shadow.version,
        }


def read_desired(store: Store, name: str, rollout_spec: RolloutSpec | None = None) -> Desired:
    """The aliases of ``name`` and the canary share of its active rollout, from the store."""
    aliases = store.registry.get_aliases(name)
    canary = aliases.get(CANARY)
    share = 0.0
    if canary is not None:
        with store.db.read() as conn:
            row = conn.execute(
                sa.select(rollouts.c.version, rollouts.c.share)
                .join(models_table, models_table.c.id == rollouts.c.model_id)
                .where(models_table.c.name == name, rollouts.c.phase.in_(_ACTIVE_PHASES))
                .order_by(rollouts.c.created_at.desc())
                .limit(1)
            ).first()
        if row is not None and row.version == canary:
            share = float(row.share)
        elif rollout_spec is not None and rollout_spec.steps:
            share = rollout_spec.steps[0].share
        else:
            share = DEFAULT_CANARY_SHARE
    return Desired(aliases.get(CHAMPION), canary, share, aliases.get(SHADOW))


def for_serving(model: LoadedModel) -> LoadedModel:
    """``model``, fed the way that costs a request least.

    A LightGBM booster on numeric inputs takes the float matrix in the order of its
    features as it is: building a DataFrame for it on every call, which it converts
    straight back to that matrix, costs many times the trees' own time on a small batch.
    """
    if model.all_numeric and isinstance(model.estimator, BoosterModel):
        model.wants_frame = False
    return model


class ModelManager:
    """Every model a replica serves: routing polled from the store, versions loaded in the background."""

    def __init__(
        self,
        store: Store,
        *,
        spec: ModelSpec | None = None,
        rollout_spec: RolloutSpec | None = None,
        options: LoadOptions | None = None,
        poll_seconds: float = 1.0,
        only: Iterable[str] | None = None,
        metrics: ServeMetrics | None = None,
        clock: Callable[[], float] = time.time,
        loader: Callable[..., LoadedModel] = load_version,
    ) -> None:
        self.store = store
        self.spec = spec
        self.rollout_spec = rollout_spec
        self.options = options or LoadOptions()
        self.poll_seconds = poll_seconds
        self.only = None if only is None else set(only)
        self.metrics = metrics
        self.clock = clock
        self.loader = loader
        self._routes: dict[str, Routes] = {}
        self._cache: dict[tuple[str, int], LoadedModel] = {}
        self._failed: dict[tuple[str, int], tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshed = threading.Event()
        self.last_error: str | None = None

    # -- what requests read ---------------------------------------------------------------

    def routes(self, name: str) -> Routes | None:
        return self._routes.get(name)

    def names(self) -> list[str]:
        return sorted(self._routes)

    def ready(self) -> bool:
        """Ready once the store was read and every model that has a champion has one loaded."""
        if not self.refreshed.is_set():
            return False
        return all(r.champion is not None for r in self._routes.values() if r.desired.champion is not None)

    def load_error(self, name: str, version: int | None) -> str | None:
        if version is None:
            return None
        failed = self._failed.get((name, version))
        return None if failed is None else failed[1]

    # -- keeping in step with the store -------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="evertrain-model-poller", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Ask the poller to read the store now rather than at its next tick."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # a store hiccup must not stop the poller; serve what is loaded
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("reading the routing state failed: %s", self.last_error)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def refresh(self, *, retry_failed: bool = False) -> None:
        """Read every model's aliases and rollout, load what is missing, then switch atomically."""
        with self._lock:
            names = self.store.registry.list_models()
            if self.only is not None:
                names = [n for n in names if n in self.only]
            for name in names:
                try:
                    desired = read_desired(self.store, name, self.rollout_spec)
                except NotFoundError:
                    continue
                self._apply(name, desired, retry_failed)
            self.last_error = None
            self.refreshed.set()

    def _apply(self, name: str, desired: Desired, retry_failed: bool) -> None:
        current = self._routes.get(name) or Routes(name)
        if current.desired == desired and self._complete(current, desired):
            return
        loaded: dict[str, LoadedModel | None] = {}
        for arm, version, held in (
            (CHAMPION, desired.champion, current.champion),
            (CANARY, desired.canary, current.canary),
            (SHADOW, desired.shadow, current.shadow),
        ):
            if version is None:
                loaded[arm] = None
            elif held is not None and held.version == version:
                loaded[arm] = held
            else:
                # Not loaded yet (or failed): keep serving what this arm had, except that a canary
                # or shadow that the store no longer names is dropped at once.
                fresh = self._get(name, version, retry_failed)
                if fresh is not None:
                    loaded[arm] = fresh
                elif arm == CHAMPION:
                    loaded[arm] = held
                else:
                    loaded[arm] = None
        new = Routes(
            name,
            champion=loaded[CHAMPION],
            canary=loaded[CANARY],
            share=desired.share if loaded[CANARY] is not None else 0.0,
            shadow=loaded[SHADOW],
            desired=desired,
        )
        self._routes = {**self._routes, name: new}
        self._after_switch(current, new)

    @staticmethod
    def _complete(routes: Routes, desired: Desired) -> bool:
        return routes.versions == {CHAMPION: desired.champion, CANARY: desired.canary, SHADOW: desired.shadow}

    def _get(self, name: str, version: int, retry_failed: bool) -> LoadedModel | None:
        key = (name, version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        failed = self._failed.get(key)
        if failed is not None and not retry_failed and self.clock() - failed[0] < LOAD_RETRY_SECONDS:
            return None
        try:
            model = for_serving(self.loader(self.store, name, version, spec=self.spec, options=self.options))
        except (EvertrainError, Exception) as exc:  # a broken version must never take serving down
            message = f"{type(exc).__name__}: {exc}"
            if failed is None or failed[1] != message:
                log.error("model %s v%s cannot be served: %s", name, version, message)
            self._failed[key] = (self.clock(), message)
            if self.metrics is not None:
                self.metrics.load_errors.labels(name, str(version)).inc()
            return None
        self._failed.pop(key, None)
        self._cache[key] = model
        return model

    def _after_switch(self, old: Routes, new: Routes) -> None:
        keep = {(new.name, v) for v in new.versions.values() if v is not None}
        if old.champion is not None:
            keep.add((old.name, old.champion.version))  # blue stays warm: a rollback switches back at once
        for key in [k for k in self._cache if k[0] == new.name and k not in keep]:
            del self._cache[key]
        if self.metrics is not None:
            for arm, version in new.versions.items():
                self.metrics.serving_version.labels(new.name, arm).set(version or 0)
                if old.versions[arm] != version:
                    self.metrics.switches.labels(new.name, arm).inc()
            self.metrics.canary_share.labels(new.name).set(new.share)
