"""Schema inference and validation, and the training-serving skew check.

:func:`infer_schema` reads a reference table once: each column's kind and Arrow type,
its missing rate, its range (numeric) and its allowed categories (when it has few
enough distinct values to be a code rather than free text). :func:`validate_table`
checks a batch against that schema and lists *every* violation, by column, with how
many values broke the rule and a few of them. :func:`check_skew` puts a training
snapshot and the features actually served side by side: schema violations of the
served features plus a drift report, in one answer.

Rules, with their tolerances and why:

``missing_column``   a schema column is absent from the batch.
``type``             a column's values are of another kind (text where numbers were).
``all_missing``      every value of a column is missing.
``missing_rate``     more missing values than the reference rate + :data:`MISSING_TOLERANCE`.
``range``            numeric values beyond the reference range widened by
                     :data:`RANGE_MARGIN` of its span on each side, in more than
                     :data:`RANGE_TOLERANCE` of the rows or a whole span away.
``category``         values outside the reference's categories.
``unexpected_column`` (warning) a batch column the schema does not know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evertrain.exceptions import DataValidationError
from evertrain.monitor import columns as cols
from evertrain.monitor.tests import CATEGORICAL, NUMERIC

#: Columns with at most this many distinct values get an allowed-category list; above
#: it a text column is treated as free text (names, identifiers) and not checked.
#: Higher than :data:`evertrain.data.snapshots.SNAPSHOT_MAX_CATEGORIES`: here a wrong
#: guess costs a line in a validation report, there a refused request at serving.
SCHEMA_MAX_CATEGORIES = 100
#: A batch may have this many more missing values (as a share) than the reference
#: before it is a violation: day-to-day pipelines wobble by a few points.
MISSING_TOLERANCE = 0.05
#: A second sample of one distribution exceeds the first sample's extremes about half
#: the time, so the allowed range is the reference range widened by a tenth of its
#: span on each side, and a few values past that are still a tail, not an error: the
#: rule fires when more than :data:`RANGE_TOLERANCE` of the rows lie outside, or when
#: any value lies a whole span beyond the reference range (a sentinel such as -999).
RANGE_MARGIN = 0.1
RANGE_TOLERANCE = 0.001
#: Bad values quoted per violation.
EXAMPLES = 5
SCHEMA_FORMAT = "evertrain-schema"
_INCOMPARABLE = frozenset({"missing_column", "type", "all_missing"})
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ColumnSchema:
    """What one column looked like in the reference."""

    name: str
    kind: str  # numeric | categorical | other
    dtype: str
    missing_rate: float
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None

    @property
    def nullable(self) -> bool:
        """Whether the reference had missing values here: a gap in this column is expected.

        >>> ColumnSchema("age", NUMERIC, "double", 0.05).nullable
        True
        """
        return self.missing_rate > 0.0


@dataclass(frozen=True)
class Schema:
    """Per-column expectations inferred from a reference table."""

    columns: dict[str, ColumnSchema]
    n_rows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SCHEMA_FORMAT,
            "version": SCHEMA_VERSION,
            "n_rows": self.n_rows,
            "columns": {name: {**asdict(c), "nullable": c.nullable} for name, c in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "schema") -> Schema:
        if not isinstance(d, dict) or d.get("format") != SCHEMA_FORMAT:
            raise DataValidationError(
                f'{source}: not an evertrain schema (expected "format": "{SCHEMA_FORMAT}")'
            )
        if d.get("version") != SCHEMA_VERSION:
            raise DataValidationError(
                f"{source}: schema version {d.get('version')!r} is not {SCHEMA_VERSION}"
            )
        out = {}
        for name, c in dict(d.get("columns", {})).items():
            try:
                # "nullable" is written for readers; it follows from the missing rate.
                out[name] = ColumnSchema(**{k: v for k, v in dict(c).items() if k != "nullable"})
            except TypeError as exc:
                raise DataValidationError(f"{source}: column {name!r}: {exc}") from None
        return cls(columns=out, n_rows=int(d.get("n_rows", 0)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        p = Path(path)
        if not p.is_file():
            raise DataValidationError(f"{p}: no such schema file")
        try:
            data = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataValidationError(f"{p}: schema is not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(p))


def infer_schema(table: Any, *, max_categories: int = SCHEMA_MAX_CATEGORIES) -> Schema:
    """Infer a :class:`Schema` from a pyarrow, pandas or polars table.

    >>> import pyarrow as pa
    >>> s = infer_schema(pa.table({"age": [30, 41, None], "plan": ["a", "b", "a"]}))
    >>> s.columns["age"].minimum, s.columns["age"].maximum, s.columns["plan"].categories
    (30.0, 41.0, ['a', 'b'])
    """
    t = cols.as_table(table, "reference")
    out: dict[str, ColumnSchema] = {}
    n = t.num_rows
    for name in t.column_names:
        column = t.column(name)
        dtype = column.type
        kind = cols.kind_of(dtype)
        missing = column.null_count
        if kind == NUMERIC:
            values = cols.numeric_values(column)
            finite = values[np.isfinite(values)]
            missing = n - finite.size
            lo = float(finite.min()) if finite.size else None
            hi = float(finite.max()) if finite.size else None
            out[name] = ColumnSchema(name, NUMERIC, cols.type_name(dtype), missing / n if n else 0.0, lo, hi)
        elif kind == CATEGORICAL:
            counts, missing = cols.category_counts(column)
            cats = sorted(counts) if len(counts) <= max_categories else None
            out[name] = ColumnSchema(
                name, CATEGORICAL, cols.type_name(dtype), missing / n if n else 0.0, None, None, cats
            )
        else:
            out[name] = ColumnSchema(name, "other", cols.type_name(dtype), missing / n if n else 0.0)
    return Schema(columns=out, n_rows=n)


@dataclass(frozen=True)
class Violation:
    """One broken rule in one column: how many values broke it and a few of them."""

    column: str
    rule: str
    message: str
    count: int = 0
    examples: list[Any] = field(default_factory=list)
    severity: str = "error"

    def to_dict(self) -> dict[str, Any]:
        def safe(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return str(v)
            return v

        return {**asdict(self), "examples": [safe(v) for v in self.examples]}


@dataclass(frozen=True)
class ValidationReport:
    """Every violation of a batch against a schema; ``ok`` when there is no error."""

    violations: list[Violation]
    n_rows: int
    columns_checked: int

    @property
    def errors(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_column(self) -> dict[str, list[Violation]]:
        out: dict[str, list[Violation]] = {}
        for v in self.violations:
            out.setdefault(v.column, []).append(v)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "n_rows": self.n_rows,
            "columns_checked": self.columns_checked,
            "n_errors": len(self.errors),
            "violations": [v.to_dict() for v in self.violations],
        }


def _examples(values: pa.Array | pa.ChunkedArray | np.ndarray, limit: int = EXAMPLES) -> list[Any]:
    if isinstance(values, np.ndarray):
        return [float(v) for v in np.unique(values)[:limit]]
    return pc.unique(values).slice(0, limit).to_pylist()


def validate_table(
    table: Any,
    schema: Schema,
    *,
    missing_tolerance: float = MISSING_TOLERANCE,
    range_margin: float = RANGE_MARGIN,
    range_tolerance: float = RANGE_TOLERANCE,
) -> ValidationReport:
    """Check ``table`` against ``schema`` and list every violation by column."""
    t = cols.as_table(table, "batch")
    n = t.num_rows
    found: list[Violation] = []
    if n == 0:
        found.append(Violation("*", "empty", "the batch has no rows"))
        return ValidationReport(found, 0, 0)
    checked = 0
    for name, spec in schema.columns.items():
        if name not in t.column_names:
            found.append(Violation(name, "missing_column", f"column {name!r} is missing from the batch"))
            continue
        checked += 1
        column = t.column(name)
        dtype = column.type
        kind = cols.kind_of(dtype)
        if pa.types.is_null(dtype) or column.null_count == n:
            if spec.missing_rate < 1.0:
                found.append(
                    Violation(name, "all_missing", f"column {name!r}: all {n} values are missing", n)
                )
            continue
        if spec.kind == NUMERIC and kind != NUMERIC:
            bad = cols.non_numeric_examples(column)
            found.append(
                Violation(
                    name,
                    "type",
                    f"column {name!r}: expected numeric ({spec.dtype}), got {cols.type_name(dtype)} values",
                    n - column.null_count,
                    bad,
                )
            )
            continue
        if spec.kind == CATEGORICAL and kind is None:
            found.append(
                Violation(
                    name, "type", f"column {name!r}: expected {spec.dtype}, got {cols.type_name(dtype)}"
                )
            )
            continue
        if spec.kind == NUMERIC:
            values = cols.numeric_values(column)
            finite_mask = np.isfinite(values)
            missing = n - int(finite_mask.sum())
            finite = values[finite_mask]
            if spec.minimum is not None and spec.maximum is not None and finite.size:
                span = spec.maximum - spec.minimum
                lo = spec.minimum - range_margin * span
                hi = spec.maximum + range_margin * span
                out_mask = (finite < lo) | (finite > hi)
                bad_n = int(out_mask.sum())
                far_lo, far_hi = spec.minimum - span, spec.maximum + span
                far = bool(((finite < far_lo) | (finite > far_hi)).any()) if bad_n else False
                if bad_n > range_tolerance * n or far:
                    found.append(
                        Violation(
                            name,
                            "range",
                            f"column {name!r}: {bad_n} values outside [{lo:.6g}, {hi:.6g}] "
                            f"(reference range [{spec.minimum:.6g}, {spec.maximum:.6g}] widened by "
                            f"{range_margin:.0%} of its span)",
                            bad_n,
                            _examples(finite[out_mask]),
                        )
                    )
        else:
            counts, missing = cols.category_counts(column)
            if spec.categories is not None:
                allowed = set(spec.categories)
                unknown = {k: v for k, v in counts.items() if k not in allowed}
                if unknown:
                    top = sorted(unknown, key=lambda k: -unknown[k])
                    found.append(
                        Violation(
                            name,
                            "category",
                            f"column {name!r}: {sum(unknown.values())} values in {len(unknown)} categories "
                            f"the reference does not have",
                            sum(unknown.values()),
                            top[:EXAMPLES],
                        )
                    )
        rate = missing / n
        if rate > spec.missing_rate + missing_tolerance:
            found.append(
                Violation(
                    name,
                    "missing_rate",
                    f"column {name!r}: {rate:.1%} missing, reference {spec.missing_rate:.1%} "
                    f"(tolerance {missing_tolerance:.0%} points)",
                    missing,
                )
            )
    for name in t.column_names:
        if name not in schema.columns:
            found.append(
                Violation(
                    name, "unexpected_column", f"column {name!r} is not in the schema", severity="warning"
                )
            )
    return ValidationReport(found, n, checked)


@dataclass(frozen=True)
class SkewReport:
    """Training-serving skew: schema violations of the served features and their drift."""

    validation: ValidationReport
    drift: Any  # evertrain.monitor.report.DriftReport

    @property
    def ok(self) -> bool:
        return self.validation.ok and not self.drift.dataset_drift

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "validation": self.validation.to_dict(), "drift": self.drift.to_dict()}


def check_skew(
    training: Any, serving: Any, *, columns: Sequence[str] | None = None, **drift_options: Any
) -> SkewReport:
    """Compare the features a model was trained on with the features it is served.

    The schema comes from the training snapshot; the served features are validated
    against it (types, ranges, categories, missing rates) and compared with it column
    by column (:func:`evertrain.monitor.report.drift`) on the columns both share.
    """
    from evertrain.monitor.report import drift

    train = cols.as_table(training, "training")
    serve = cols.as_table(serving, "serving")
    if columns is not None:
        train = train.select([c for c in columns if c in train.column_names])
    schema = infer_schema(train)
    validation = validate_table(serve.select([c for c in serve.column_names if c in schema.columns]), schema)
    # Columns that cannot be compared at all; out-of-range values and new categories
    # are exactly what the drift report should weigh, so those columns stay in.
    broken = {v.column for v in validation.errors if v.rule in _INCOMPARABLE}
    shared = [
        c
        for c in train.column_names
        if c in serve.column_names
        and c not in broken
        and cols.kind_of(train.schema.field(c).type) is not None
    ]
    if not shared:
        raise DataValidationError("training and serving share no comparable column")
    report = drift(train, serve, columns=shared, labels=("training", "serving"), **drift_options)
    return SkewReport(validation, report)


__all__ = [
    "ColumnSchema",
    "Schema",
    "SkewReport",
    "ValidationReport",
    "Violation",
    "check_skew",
    "infer_schema",
    "validate_table",
]
