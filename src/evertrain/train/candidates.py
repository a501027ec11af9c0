"""Candidate training sets after a change, and the time-ordered validation that picks one.

When the data changed (a drift or a decay began at a time the policy gives as a hint),
no fixed rule knows whether the model should learn from the configured window, which
still holds the old data, or only from the rows since the change, which may be too few.
The training tries both, and a middle way, on the same train part, and scores each on
the same valid part: the newest labelled rows before the holdout, all from after the
change (:func:`evertrain.data.windows.make_window` cuts it there). The candidates:

``window``
    the configured window as it is (always first: the default choice);
``since_change``
    only the train rows after the change, when there are at least
    :data:`MIN_SINCE_CHANGE_ROWS` of them;
``upweighted``
    the whole window with the rows after the change weighted so that they count as much,
    together, as all the older rows (the two periods weigh the same; a balance that
    needs no tuned constant), when both periods have rows.

The choice follows the one-standard-error rule: a candidate replaces the configured
window only if its per-row loss on the valid part is lower than the window's by more
than one standard error of the paired difference; among those, the largest improvement
wins. Noise on a small valid part then falls back to the window the user configured.
Every candidate, its size, its score and the choice are recorded in the run and in the
version's params.

Earlier champions are offered beside the training sets (``TrainJob.recall``): each is
scored on the same valid part and, by the same rule, replaces the model fitted on the
chosen set only if its loss is lower by more than one standard error (see
:func:`evertrain.train.worker.execute_job`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evertrain.evaluate.metrics import Outputs

#: Fewest train rows after the change for the ``since_change`` candidate. LightGBM's
#: default leaf needs 20 rows, so 200 rows hold at most ten leaves of a tree: fewer cannot
#: fit a model worth comparing, and the window or the up-weighted set then covers the change.
MIN_SINCE_CHANGE_ROWS = 200

WINDOW, SINCE_CHANGE, UPWEIGHTED = "window", "since_change", "upweighted"


@dataclass(frozen=True)
class Candidate:
    """One training set: its name and the change time it is cut or weighted at."""

    name: str
    since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "since": self.since}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(str(data["name"]), data.get("since"))


def plan(n_train: int, n_after: int, since: float | None) -> list[Candidate]:
    """The candidates for a train part of ``n_train`` rows, ``n_after`` of them after ``since``.

    >>> [c.name for c in plan(9000, 400, 100.0)]
    ['window', 'since_change', 'upweighted']
    >>> [c.name for c in plan(9000, 150, 100.0)], [c.name for c in plan(9000, 0, None)]
    (['window', 'upweighted'], ['window'])
    """
    out = [Candidate(WINDOW)]
    if since is None or n_after <= 0:
        return out
    if n_after >= MIN_SINCE_CHANGE_ROWS and n_after < n_train:
        out.append(Candidate(SINCE_CHANGE, since))
    if 0 < n_after < n_train:
        out.append(Candidate(UPWEIGHTED, since))
    return out


def training_rows(
    train: pd.DataFrame, candidate: Candidate, times: np.ndarray | None, weight_column: str
) -> tuple[pd.DataFrame, str | None]:
    """The train rows of ``candidate`` and the weight column to fit with (None: unweighted).

    ``times``: epoch seconds of the train rows (needed by every candidate but the window).
    An existing weight column (a weighted window) is kept and multiplied.
    """
    has_weights = weight_column in train.columns
    if candidate.name == WINDOW or candidate.since is None or times is None:
        return train, weight_column if has_weights else None
    after = times >= candidate.since
    if candidate.name == SINCE_CHANGE:
        return train.loc[after].reset_index(drop=True), weight_column if has_weights else None
    if candidate.name == UPWEIGHTED:
        n_after, n_before = int(after.sum()), int((~after).sum())
        base = train[weight_column].to_numpy(dtype=float) if has_weights else np.ones(len(train))
        factor = np.where(after, n_before / max(n_after, 1), 1.0)
        return train.assign(**{weight_column: base * factor}), weight_column
    raise ValueError(
        f"unknown candidate training set {candidate.name!r} (known: {WINDOW}, {SINCE_CHANGE}, {UPWEIGHTED})"
    )


def row_losses(outputs: Outputs) -> np.ndarray:
    """Per-row loss behind the primary metric: 0/1 error (accuracy) or squared error (rmse)."""
    if outputs.task == "regression":
        return np.asarray((outputs.pred - outputs.y) ** 2, dtype=float)
    return np.asarray(outputs.pred != outputs.y, dtype=float)


def choose(losses: dict[str, np.ndarray]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The chosen candidate by the one-standard-error rule, and each candidate's evidence.

    ``losses``: per-row losses on the same valid rows, the configured window first.

    >>> rng = np.random.default_rng(0)
    >>> window = (rng.random(300) < 0.4).astype(float)
    >>> fresh = (rng.random(300) < 0.1).astype(float)
    >>> choose({"window": window, "since_change": fresh})[0]
    'since_change'
    >>> choose({"window": window, "since_change": window.copy()})[0]
    'window'
    """
    names = list(losses)
    base = losses[names[0]]
    evidence: dict[str, dict[str, Any]] = {}
    best, best_gain = names[0], 0.0
    for name in names:
        diff = base - losses[name]  # positive: this candidate does better than the window
        n = diff.size
        se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
        gain = float(diff.mean()) if n else 0.0
        evidence[name] = {"valid_loss": float(losses[name].mean()) if n else None, "gain": gain, "se": se}
        if name != names[0] and gain > se and gain > best_gain:
            best, best_gain = name, gain
    return best, evidence


__all__ = [
    "MIN_SINCE_CHANGE_ROWS",
    "SINCE_CHANGE",
    "UPWEIGHTED",
    "WINDOW",
    "Candidate",
    "choose",
    "plan",
    "row_losses",
    "training_rows",
]
