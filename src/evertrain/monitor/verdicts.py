"""What a drift comparison concludes: per-column verdicts and the dataset verdict, with their JSON forms.

:func:`evertrain.monitor.report.drift` builds a :class:`DriftReport`; the report page,
the CLI and the controller read it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from evertrain.monitor.tests import ColumnKind, TestResult, get_test

if TYPE_CHECKING:
    from evertrain.monitor.multivariate import MultivariateResult

#: A change of missing share is material from five percentage points: day-to-day
#: pipelines wobble by less, a broken source or join moves it by more.
MISSING_SHARE_THRESHOLD = 0.05


def _num(x: float | None) -> float | None:
    """A JSON-safe float: NaN and infinities become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return _num(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class MissingCheck:
    """Missing values on both sides; for numeric columns also a test of their share."""

    reference: int
    current: int
    reference_share: float
    current_share: float
    p_value: float | None = None
    p_value_adjusted: float | None = None
    threshold: float = MISSING_SHARE_THRESHOLD
    drifted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "reference": self.reference,
                "current": self.current,
                "reference_share": self.reference_share,
                "current_share": self.current_share,
                "p_value": self.p_value,
                "p_value_adjusted": self.p_value_adjusted,
                "threshold": self.threshold,
                "drifted": self.drifted,
            }
        )


@dataclass(frozen=True)
class ColumnDrift:
    """The verdict on one column, with every registered test's result."""

    name: str
    kind: ColumnKind
    significance_test: str
    effect_test: str
    statistic: float
    p_value: float | None
    p_value_adjusted: float | None
    effect_size: float
    threshold: float
    drifted: bool
    tests: Mapping[str, TestResult]
    missing: MissingCheck
    n_reference: int
    n_current: int
    exact: bool
    plot: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def method(self) -> str:
        return f"{self.significance_test}+{self.effect_test}"

    @property
    def relative_effect(self) -> float:
        """Effect size over its threshold: above 1 means material. Reports sort by it."""
        return self.effect_size / self.threshold if self.threshold > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        tests = {}
        for name, res in self.tests.items():
            test = get_test(name, self.kind)
            tests[name] = {
                "role": test.role,
                "statistic": res.statistic,
                "p_value": res.p_value,
                "threshold": test.default_threshold,
                **dict(res.details),
            }
        return _jsonable(
            {
                "kind": self.kind,
                "method": self.method,
                "statistic": self.statistic,
                "p_value": self.p_value,
                "p_value_adjusted": self.p_value_adjusted,
                "effect_size": self.effect_size,
                "threshold": self.threshold,
                "drifted": self.drifted,
                "significance_test": self.significance_test,
                "effect_test": self.effect_test,
                "n_reference": self.n_reference,
                "n_current": self.n_current,
                "exact": self.exact,
                "missing": self.missing.to_dict(),
                "tests": tests,
            }
        )


@dataclass(frozen=True)
class DriftReport:
    """Column verdicts and the dataset verdict of one reference-vs-current comparison."""

    columns: Mapping[str, ColumnDrift]
    n_reference: int
    n_current: int
    alpha: float
    correction: str
    hypotheses: int
    drift_share: float | None = None
    target: ColumnDrift | None = None
    skipped: Mapping[str, str] = field(default_factory=dict)
    multivariate: Sequence[MultivariateResult] = ()

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, c in self.columns.items() if c.drifted]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        """Any column drifted (default), or at least ``drift_share`` of them; or a multivariate test fired."""
        if any(m.drifted for m in self.multivariate):
            return True
        if self.drift_share is None:
            return bool(self.drifted_columns)
        return bool(self.columns) and self.share_drifted >= self.drift_share

    @property
    def exact(self) -> bool:
        return all(c.exact for c in self.columns.values())

    def sorted_columns(self) -> list[ColumnDrift]:
        """Columns by relative effect size (effect / threshold), largest first."""
        return sorted(self.columns.values(), key=lambda c: -c.relative_effect)

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": {name: c.to_dict() for name, c in self.columns.items()},
            "drifted_columns": self.drifted_columns,
            "share_drifted": self.share_drifted,
            "dataset_drift": self.dataset_drift,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "correction": {"method": self.correction, "alpha": self.alpha, "hypotheses": self.hypotheses},
            "drift_share": self.drift_share,
            "exact": self.exact,
            "target": None if self.target is None else {"name": self.target.name, **self.target.to_dict()},
            "skipped_columns": dict(self.skipped),
            "multivariate": [m.to_dict() for m in self.multivariate],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


__all__ = ["MISSING_SHARE_THRESHOLD", "ColumnDrift", "DriftReport", "MissingCheck"]
