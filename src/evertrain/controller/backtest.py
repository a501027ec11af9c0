"""Backtests: replay a historical table through the real loop, beside simple baselines.

A team should be able to tune its retraining triggers on its own history before trusting
them in production. :func:`backtest` cuts a table into batches and replays it with
:class:`~evertrain.controller.replay.Replay` in a throwaway project (a real SQLite store
and artifact folder in a temporary directory): the champion (and a canary at its share)
scores each batch, labels arrive ``label_delay`` batches later, and after every batch the
real controller runs one cycle (monitor, policy, trainer, gates, rollout) on a
simulated clock. Beside it, baselines replay the same batches with the same trainer and
the same training window but no monitoring and no gates: never retrain, retrain every N
batches, and any :class:`RetrainRule` passed in (the benchmark adds one that retrains
when River's ADWIN fires on the error stream).

What differs from live, and why:

- Rollouts follow the spec's own plan (shadow, canary steps, the watch after promotion),
  as live: with a label delay a canary waits for its evidence exactly as it would in
  production, and the batches it takes are part of what a backtest should show. The
  replay logs no latency (there is no network), so a canary is judged on errors and
  quality, never on the timing noise of the machine running the backtest.
- Training runs in-process (the ``inline`` executor runs the same job code as ``local``
  without a child process), and the data source is the replay's warehouse folder.
- Each batch takes ``batch_seconds`` of simulated time (default: the spec's
  ``policy.cycle_interval``, one controller cycle per batch), so cooldowns, daily caps
  and schedules count in batches the way the live loop would count them in cycles.

The first model is trained on the ``warm_batches`` (already labelled history) by the
controller's bootstrap cycle before the first batch is served; it is reported under
``initial`` and is neither a retrain nor a promotion. Each baseline starts from the same
kind of first model trained on the same rows.

The table's checks and the default spec are in :mod:`evertrain.controller.backtest_spec`,
the baselines and their rules in :mod:`evertrain.controller.baselines`; this module runs
the replay and puts the record together.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(1400, 2))
>>> table = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "y": (x[:, 0] > 0).astype(int)})
>>> out = backtest(table, target="y", batch_size=200, warm_batches=5, baselines_every=(1,))
>>> len(out["batches"]), out["n_retrains"], sorted(out["baselines"])
(2, 0, ['every_1', 'never'])
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from evertrain.controller.backtest_spec import (
    as_frame,
    check_table,
    default_spec,
    encode_target,
    find_label_time,
    order_by_time,
    replay_spec,
)
from evertrain.controller.baselines import Every, Never, RetrainRule, Timeline, batch_score, run_baselines
from evertrain.controller.clock import ManualClock
from evertrain.controller.replay import BatchSource, Replay
from evertrain.data.logs import PREDICTIONS, read_log
from evertrain.exceptions import DataValidationError, NotFoundError, UsageError
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.store.names import CANARY, CHAMPION

#: Simulated time of the first replayed batch: 2026-01-05 00:00 UTC, a Monday, so daily
#: caps and cron schedules start on a day boundary.
START = 1767571200.0
#: Already-labelled batches the first model is trained on before the replay starts.
DEFAULT_WARM_BATCHES = 5
#: Retrain periods of the "retrain every N batches" baselines.
DEFAULT_BASELINES_EVERY = (5, 20)


# -- the replay of the policy --------------------------------------------------------------


def _aliases(store: Store, name: str) -> dict[str, int | None]:
    try:
        return dict(store.registry.get_aliases(name))
    except NotFoundError:
        return {}


def _trained_on(store: Store, name: str, version: int | None) -> dict[str, Any]:
    """What a version was fitted on, if it was registered: the rows of its registered window
    (``train_rows``) and the training set chosen among the candidates (``training_set``:
    ``window`` when there was one; ``version N`` for an earlier champion reinstated)."""
    if version is None:
        return {"train_rows": None, "training_set": None}
    params = store.registry.get_version(name, int(version)).params
    if params.get("reinstated_from") is not None:  # fitted where the version it reinstates was
        rows = _trained_on(store, name, int(params["reinstated_from"]))["train_rows"]
    else:
        rows = (params.get("window") or {}).get("n_train")
    return {
        "train_rows": None if rows is None else int(rows),
        "training_set": params.get("training_set") or "window",
    }


def _served_score(replay: Replay, index: int, task: str, accuracy: float | None) -> float | None:
    if task != "regression":
        return accuracy
    r = replay
    began = r.start + (index - r.warm_batches) * r.batch_seconds
    logged = read_log(
        r.store.logs_url or "",
        PREDICTIONS,
        r.spec.model.name,
        since=began,
        until=began + r.batch_seconds,
        columns=["prediction", "ts"],
    )
    if logged.num_rows == 0:
        return None
    labels = r.source.served(index)[r.spec.model.target].to_numpy(dtype=float)
    return batch_score(task, np.asarray(logged["prediction"], dtype=float), labels)


def run_policy(replay: Replay, on_batch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Replay every batch through the controller; the record of what the loop did."""
    assert replay.controller is not None
    store, spec = replay.store, replay.spec
    name, task = spec.model.name, spec.model.task
    replay.prepare()
    replay.clock.set(replay.start)
    boot = replay.controller.cycle()
    trained = boot.get("train") or {}
    first_seconds = float(trained.get("seconds") or 0.0)
    initial = {
        "version": trained.get("version"),
        "reason": "; ".join((boot.get("decide") or {}).get("reasons", [])),
        "train_seconds": first_seconds,
    }
    if _aliases(store, name).get(CHAMPION) is None:
        raise DataValidationError(
            f"the first model could not be trained on the {replay.warm_batches} warm batches: "
            f"{(boot.get('train') or {}).get('error') or (boot.get('gate') or {}).get('reason') or boot}"
        )
    batches: list[dict[str, Any]] = []
    retrains: list[dict[str, Any]] = []
    promotions: list[dict[str, Any]] = []
    rollbacks: list[dict[str, Any]] = []
    second_looks: list[dict[str, Any]] = []
    train_seconds = first_seconds
    correct = rows = 0
    for index in range(replay.warm_batches, replay.source.n_batches):
        before = _aliases(store, name)
        result = replay.batch(index)
        cycle = result["cycle"]
        accuracy = _served_score(replay, index, task, result["accuracy"])
        n = len(replay.source.served(index))
        if task != "regression" and accuracy is not None:
            correct += round(accuracy * n)
            rows += n
        decision = cycle.get("decide") or {}
        monitored = cycle.get("monitor") or {}
        batches.append(
            {
                "index": index,
                "accuracy": accuracy,
                "model_version": before.get(CHAMPION),
                "canary": before.get(CANARY),
                "drifted": list((monitored.get("drift") or {}).get("drifted_columns", [])),
                "decision": decision.get("action"),
                "held": decision.get("held", []),
            }
        )
        trained = cycle.get("train") or {}
        gate = cycle.get("gate") or {}
        if decision.get("action") == "retrain":
            retrains.append(
                {
                    "batch": index,
                    "reason": "; ".join(decision.get("reasons", [])),
                    "triggers": decision.get("triggers", []),
                    "version": trained.get("version"),
                    **_trained_on(store, name, trained.get("version")),
                    "gates": gate.get("status"),
                    "gate_reason": gate.get("reason"),
                    "checks": [c.get("reason") for c in gate.get("checks") or []],
                }
            )
            train_seconds += float(trained.get("seconds") or 0.0)
        looked = gate.get("second_look") or {}
        if (looked and "checks" in gate) or "dropped" in looked:
            # a kept challenger judged again on the rows labelled after its cut-off
            second_looks.append(
                {
                    "batch": index,
                    "version": gate.get("version"),
                    "look": looked.get("look"),
                    "rows": looked.get("rows"),
                    "passed": gate.get("status") == "passed",
                    "dropped": looked.get("dropped"),
                    "reasons": [c.get("reason") for c in gate.get("checks") or []],
                }
            )
        after = _aliases(store, name)
        rollout = cycle.get("rollout") or {}
        if after.get(CHAMPION) != before.get(CHAMPION):
            entry = {"batch": index, "version": after.get(CHAMPION)}
            if rollout.get("outcome") == "rolled_back":
                rollbacks.append(
                    {**entry, "from": before.get(CHAMPION), "reasons": rollout.get("reasons", [])}
                )
            else:
                promotions.append(entry)
        elif rollout.get("outcome") == "rolled_back":
            rollbacks.append(
                {
                    "batch": index,
                    "version": rollout.get("version"),
                    "from": CANARY,
                    "reasons": rollout.get("reasons", []),
                }
            )
        if on_batch is not None:
            on_batch(
                {
                    "batch": index,
                    "accuracy": accuracy,
                    "decision": decision.get("action"),
                    "champion": after.get(CHAMPION),
                }
            )
    scores = [b["accuracy"] for b in batches if b["accuracy"] is not None]
    if task == "regression":
        mean = float(np.mean(scores)) if scores else None
    else:
        mean = correct / rows if rows else None
    return {
        "initial": initial,
        "batches": batches,
        "retrains": retrains,
        "promotions": promotions,
        "rollbacks": rollbacks,
        "second_looks": second_looks,
        "mean_accuracy": mean,
        "n_retrains": len(retrains),
        "train_seconds": train_seconds,
    }


def backtest(
    table: pd.DataFrame | pa.Table,
    *,
    spec: Spec | None = None,
    target: str | None = None,
    batch_size: int = 1000,
    label_delay: int | None = None,
    warm_batches: int = DEFAULT_WARM_BATCHES,
    batch_seconds: float | None = None,
    baselines_every: Iterable[int] = DEFAULT_BASELINES_EVERY,
    rules: Sequence[RetrainRule] = (),
    workdir: Path | str | None = None,
    keep: bool = False,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
    what: str = "the table",
    time_column: str | None = None,
    label_time_column: str | None = None,
) -> dict[str, Any]:
    """Replay ``table`` (rows in time order) through the loop and the baselines; the JSON record.

    ``spec`` is a project's spec (its trainer, window, triggers, policy, gates and
    rollout are used as written); without one, :func:`default_spec` of the table with
    ``target``. ``label_delay`` is in batches (default: the spec's ``data.label_delay``
    rounded up to whole batches). ``workdir`` is where the throwaway project lives
    (default: a temporary folder, deleted afterwards unless ``keep``; a given one is
    kept). ``rules`` add baselines to never and every-N. ``what`` names the table in errors.

    ``time_column`` (default: the spec's ``data.time_column`` when the table has it) orders
    the rows (batches are cut in time order) and is never a feature. ``label_time_column``
    (default: the spec's, else a column named like ``label_ts`` or ``label_time``, see
    :data:`~evertrain.controller.backtest_spec.LABEL_TIME_NAMES`) says when each label
    arrived: without ``label_delay``, the delay is the median label lag in batches.

    Returns ``{"batches": [{"index", "accuracy", "model_version", "canary"}],
    "retrains": [{"batch", "reason", ...}], "promotions": [{"batch", "version"}],
    "rollbacks", "mean_accuracy", "n_retrains", "train_seconds", "initial", "baselines":
    {name: {"batches", "retrains", "mean_accuracy", "n_retrains", "train_seconds"}},
    "settings": {...}}``; for regression, ``accuracy`` holds R^2 per batch.
    """
    frame = as_frame(table)
    if spec is not None:
        if time_column is None and spec.data.time_column in frame.columns:
            time_column = spec.data.time_column
        if label_time_column is None and spec.data.label_time_column in frame.columns:
            label_time_column = spec.data.label_time_column
    if label_time_column is None and (found := find_label_time(frame)) is not None:
        if time_column is None:
            frame = frame.drop(columns=[found])  # never a feature, even when it cannot be used
        else:
            label_time_column = found
    frame, data_delay = order_by_time(
        frame,
        time_column=time_column,
        label_time_column=label_time_column,
        batch_size=max(batch_size, 1),
        what=what,
    )
    if label_delay is None and data_delay is not None:
        label_delay = data_delay
    if spec is None:
        if target is None:
            raise UsageError("outside a project a backtest needs the target column (--target COL)")
        check_table(frame, target, batch_size=batch_size, warm_batches=warm_batches, what=what)
        spec = default_spec(frame, target)
    else:
        if target is not None and target != spec.model.target:
            raise UsageError(
                f"the project's model {spec.model.name!r} predicts {spec.model.target!r}, not {target!r}"
            )
        target = spec.model.target
        check_table(frame, target, batch_size=batch_size, warm_batches=warm_batches, what=what)
    task = spec.model.task
    frame, classes = encode_target(frame, target, task)
    if spec.model.features:
        absent = [f for f in spec.model.features if f not in frame.columns]
        if absent:
            raise DataValidationError(
                f"{what}: feature column(s) {', '.join(map(repr, absent))} of the spec are absent"
            )
        frame = frame[[*spec.model.features, target]]
    seconds = float(batch_seconds if batch_seconds is not None else spec.policy.cycle_interval)
    if seconds <= 0:
        raise UsageError(f"batch seconds must be positive, got {seconds}")
    delay = label_delay if label_delay is not None else math.ceil(spec.data.label_delay / seconds)
    if delay < 0:
        raise UsageError(f"label delay must be 0 or more batches, got {delay}")
    every = sorted(set(int(n) for n in baselines_every))
    source = BatchSource.from_frame(frame, batch_size)
    run_spec = replay_spec(spec)

    made = workdir is None
    root = Path(tempfile.mkdtemp(prefix="evertrain-backtest-")) if made else Path(workdir)  # type: ignore[arg-type]
    if not made and root.exists() and any(root.iterdir()):
        raise UsageError(f"backtest folder {root} is not empty; give a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    state = root / ".evertrain"
    state.mkdir(exist_ok=True)
    clock = ManualClock(START)
    # An explicit store in the folder, never EVERTRAIN_DB_URL: a backtest must not write into a shared store.
    store = Store(
        f"sqlite:///{(state / 'evertrain.db').resolve()}",
        str((state / "artifacts").resolve()),
        logs_url=str((state / "logs").resolve()),
        clock=clock,
    ).open()
    began = time.perf_counter()
    try:
        replay = Replay(
            store,
            run_spec,
            root,
            source=source,
            clock=clock,
            start=START,
            batch_seconds=seconds,
            label_delay_batches=delay,
            warm_batches=warm_batches,
        )
        policy = run_policy(replay, on_batch)
        policy_seconds = time.perf_counter() - began
        rule_list: list[RetrainRule] = [Never(), *(Every(n) for n in every), *rules]
        baselines = run_baselines(run_spec, source, Timeline(replay, delay), rule_list)
    finally:
        store.close()
        if made and not keep:
            shutil.rmtree(root, ignore_errors=True)
    return {
        **policy,
        "baselines": baselines,
        "settings": {
            "model": spec.model.name,
            "task": task,
            "target": target,
            "classes": classes,
            "features": spec.model.features,
            "rows": len(frame),
            "batch_size": batch_size,
            "n_batches": source.n_batches,
            "warm_batches": warm_batches,
            "label_delay_batches": delay,
            "time_column": time_column,
            "label_time_column": label_time_column,
            "batch_seconds": seconds,
            "metric": "r2" if task == "regression" else "accuracy",
            "policy_seconds": policy_seconds,
            "workdir": str(root) if (keep or not made) else None,
        },
    }
