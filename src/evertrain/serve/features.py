"""Predict requests that carry entity keys: the keys checked and kept for the log, and the features
the request lacks read from Feast's online store.

A project whose features live in Feast (a ``feast`` data source, or ``serving.feast``)
lets a client send, per instance, only the entity keys (``{"region": "east"}``) and the
features computed at request time. The rest comes from Feast's online store through one
long-lived worker (:mod:`evertrain.data.feast_online`), one read per request for all of
its instances; a value the request does carry is used as sent. The values the model
answered with are logged as served, and so are the entity keys, inputs of the model or
not, so ``evertrain feast skew`` and a training on the log can join Feast on them.

An instance without a key, or whose entity the online store does not hold, gets a 422
naming the key and the value; a Feast that cannot answer within
``serving.feast.timeout_seconds``, or whose worker is (re)starting, gets a 503 at once (the
request may be retried).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from evertrain.data.feast_online import OnlineFeatures
from evertrain.exceptions import EvertrainError, InputError, ServeError
from evertrain.train.inputs import show, value_kind

log = logging.getLogger("evertrain.serve")

#: The types an entity key may have in a request, by the log type Feast's value type maps to.
_KEY_CHECKS: dict[str, tuple[type, ...]] = {"string": (str,), "int64": (int,)}


class EntityFeatures:
    """Entity keys in, Feast's features added: what a project with Feast does to each predict request."""

    def __init__(self, online: OnlineFeatures, *, fetch: bool, timeout: float) -> None:
        self.online = online
        self.fetch = fetch
        self.timeout = timeout

    def start(self) -> None:
        """Start the Feast worker in the background; a failure is kept (and answered to requests
        with a 503 naming it), not raised."""
        threading.Thread(target=self._start, name="evertrain-feast-start", daemon=True).start()

    def _start(self) -> None:
        try:
            self.online.start()
        except EvertrainError as exc:
            log.warning("Feast's online store is not reachable: %s", exc.message)

    def close(self) -> None:
        self.online.close()

    @property
    def keys(self) -> dict[str, str]:
        """Each entity key and its log type (as Feast declares it)."""
        return self.online.keys_

    async def fill(self, instances: list[Any]) -> tuple[list[Any], dict[str, list[Any]]]:
        """``instances`` with the features each lacks from Feast, and the entity key columns for the log."""
        if not self.online.ready:
            await self._started()
        keys = self.keys
        columns: dict[str, list[Any]] = {key: [] for key in keys}
        lacking: list[int] = []
        names = self.online.names_
        for i, inst in enumerate(instances):
            if type(inst) is not dict:
                raise InputError(
                    f"instances[{i}]",
                    f"expected an object with the entity keys ({', '.join(keys)}), got {value_kind(inst)}",
                )
            for key, kind in keys.items():
                value = inst.get(key)
                if value is None:
                    raise InputError(
                        f"instances[{i}].{key}",
                        "missing entity key: the features from Feast are looked up by it",
                    )
                if type(value) is bool or not isinstance(value, _KEY_CHECKS.get(kind, (str, int))):
                    raise InputError(
                        f"instances[{i}].{key}",
                        f"expected a {kind} entity key, got {value_kind(value)} {show(value)}",
                    )
                columns[key].append(value)
            if self.fetch and any(name not in inst for name in names):
                lacking.append(i)
        if not lacking:
            return instances, columns
        answer = await self._read({key: [columns[key][i] for i in lacking] for key in keys})
        if answer.missing:
            i = lacking[answer.missing[0]]
            shown = ", ".join(f"{key}={show(columns[key][i])}" for key in keys)
            raise InputError(
                f"instances[{i}].{next(iter(keys))}",
                f"entity {shown} is not in Feast's online store (no features for it: a new entity, or "
                "one not materialized yet)",
            )
        filled = list(instances)
        for j, i in enumerate(lacking):
            given = instances[i]
            filled[i] = {**{name: answer.features[name][j] for name in names}, **given}
        return filled, columns

    async def _started(self) -> None:
        try:
            self.online.ensure()  # never waits for a start: one under way (or failed) raises at once
        except EvertrainError as exc:
            raise ServeError(503, f"Feast's online store is not reachable: {exc.message}") from None

    async def _read(self, entities: dict[str, list[Any]]) -> Any:
        try:
            future = await asyncio.to_thread(self.online.read, entities)
        except EvertrainError as exc:
            raise ServeError(503, f"Feast's online store is not reachable: {exc.message}") from None
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            self.online.forget(future)
            raise ServeError(503, f"Feast's online store did not answer within {self.timeout:g} s") from None
        except EvertrainError as exc:
            raise ServeError(503, exc.message) from None
