"""Checking predict requests against the inputs a model version was trained on.

The rules come from the version's training snapshot (``snapshots.schema``:
``{"columns": {name: {"type", "nullable", "min"?, "max"?, "categories"?}}}``). A
request is refused with a 422 that names the field (``instances[3].age``) and the bad
value when a feature is missing, has the wrong type, or lies outside what the schema
allows. Two choices are deliberate:

* **Ranges have a tolerance.** Production data drifts, and judging drift is the
  monitor's job, not the door's. A numeric value is refused only when it lies more than
  ``range_tolerance`` times the training range (max - min) beyond either edge; such
  values are nearly always unit or encoding mistakes. ``None`` turns range checks off.
* **Unknown categories** are accepted by default (a new product code is usually fine to
  score, and the monitor sees it); ``unknown_categories="refuse"`` refuses them. A wrong
  type is always refused.

A version without a snapshot falls back to the model's ``feature_names_in_``: a plain
estimator or a LightGBM booster only takes numbers, so each input is numeric; a
pipeline may encode its own inputs, so each input is any scalar (logged as text).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from evertrain.exceptions import InputError

NUMERIC = "numeric"
CATEGORICAL = "categorical"
BOOLEAN = "boolean"
STRING = "string"
TIMESTAMP = "timestamp"
ANY = "any"
TYPES = (NUMERIC, CATEGORICAL, BOOLEAN, STRING, TIMESTAMP, ANY)

DEFAULT_RANGE_TOLERANCE = 0.5
"""Share of the training range accepted beyond either edge (see the module docstring)."""

UnknownCategories = Literal["accept", "refuse"]
_REPR_MAX = 60  # characters of a bad value quoted back in an error message
_MAX_STRING = 10_000  # characters of one string feature; longer is an error, not a feature

# Parquet type of each input type in the prediction log (docs/logs.md: "as typed by the schema").
LOG_TYPES = {
    NUMERIC: "float64",
    CATEGORICAL: "string",
    BOOLEAN: "bool",
    STRING: "string",
    TIMESTAMP: "timestamp",
    ANY: "string",
}


def show(value: Any) -> str:
    """A short repr of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def value_kind(value: Any) -> str:
    """The JSON kind of a value, as an error message names it.

    Not :func:`evertrain.monitor.columns.kind_of`, which gives the statistical kind of a
    column's type (numeric or categorical).

    >>> value_kind(3), value_kind("3"), value_kind(None)
    ('number', 'string', 'null')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_MISSING = object()


@dataclass(frozen=True)
class FieldRule:
    """What one input feature may hold."""

    name: str
    type: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    lo: float | None = None  # min less the tolerance: the smallest value accepted
    hi: float | None = None
    categories: frozenset[Any] | None = None
    category_kind: str = "string"  # the JSON kind the categories are (string, number, boolean)
    refuse_unknown: bool = False

    def describe(self) -> dict[str, Any]:
        """The rule as ``GET /v1/models/{name}`` shows it."""
        out: dict[str, Any] = {"type": self.type, "nullable": self.nullable}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.lo is not None:
            out["accepted_min"] = self.lo
        if self.hi is not None:
            out["accepted_max"] = self.hi
        if self.categories is not None:
            out["categories"] = sorted(self.categories, key=str)
            out["unknown_categories"] = "refuse" if self.refuse_unknown else "accept"
        return out

    def check(self, values: list[Any], offset: int = 0) -> list[Any]:
        """Check one column (``_MISSING`` where an instance lacks the field); return model-ready values."""
        out: list[Any] = []
        for i, value in enumerate(values):
            if self.nullable and type(value) is float and math.isnan(value):
                value = None  # a NaN (a replayed table's gap) is a missing value, not a number
            if value is None or value is _MISSING:
                if self.nullable:
                    out.append(None)
                    continue
                where = f"instances[{offset + i}].{self.name}"
                if value is _MISSING:
                    raise InputError(where, f"missing field (expected {self._expected()})")
                raise InputError(where, f"null is not allowed (expected {self._expected()})")
            out.append(self._one(value, offset + i))
        return out

    def _expected(self) -> str:
        return {
            NUMERIC: "a number",
            CATEGORICAL: f"a {self.category_kind} category",
            BOOLEAN: "true or false",
            STRING: "a string",
            TIMESTAMP: "an ISO-8601 time or epoch seconds",
            ANY: "a number, string or boolean",
        }[self.type]

    def _bad_type(self, value: Any, index: int) -> InputError:
        return InputError(
            f"instances[{index}].{self.name}",
            f"expected {self._expected()}, got {value_kind(value)} {show(value)}",
        )

    def _one(self, value: Any, index: int) -> Any:
        kind = self.type
        if kind == NUMERIC:
            if type(value) is float:
                number = value
            elif type(value) is int:
                try:
                    number = float(value)
                except OverflowError:
                    raise InputError(
                        f"instances[{index}].{self.name}", f"number {show(value)} is too large"
                    ) from None
            else:
                raise self._bad_type(value, index)
            if not math.isfinite(number):
                raise InputError(f"instances[{index}].{self.name}", f"number {show(value)} is not finite")
            if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
                raise InputError(
                    f"instances[{index}].{self.name}",
                    f"{show(value)} is outside the accepted range [{self.lo:.6g}, {self.hi:.6g}] "
                    f"(training range [{self.min:.6g}, {self.max:.6g}] plus tolerance)",
                )
            return number
        if kind == BOOLEAN:
            if type(value) is not bool:
                raise self._bad_type(value, index)
            return value
        if kind == STRING:
            if type(value) is not str:
                raise self._bad_type(value, index)
            self._length(value, index)
            return value
        if kind == CATEGORICAL:
            if value_kind(value) != self.category_kind or (type(value) is float and not math.isfinite(value)):
                raise self._bad_type(value, index)
            if type(value) is str:
                self._length(value, index)
            if self.refuse_unknown and self.categories is not None and value not in self.categories:
                known = ", ".join(show(c) for c in sorted(self.categories, key=str)[:10])
                raise InputError(
                    f"instances[{index}].{self.name}",
                    f"{show(value)} is not a category seen in training ({known}"
                    f"{', ...' if len(self.categories) > 10 else ''})",
                )
            return value
        if kind == TIMESTAMP:
            return self._timestamp(value, index)
        # ANY: a scalar of any JSON kind
        if type(value) is float and not math.isfinite(value):
            raise InputError(f"instances[{index}].{self.name}", f"number {show(value)} is not finite")
        if type(value) is int:
            try:
                float(value)
            except OverflowError:
                raise InputError(
                    f"instances[{index}].{self.name}", f"number {show(value)} is too large"
                ) from None
        if not isinstance(value, str | int | float | bool):
            raise self._bad_type(value, index)
        if type(value) is str:
            self._length(value, index)
        return value

    def _length(self, value: str, index: int) -> None:
        if len(value) > _MAX_STRING:
            raise InputError(
                f"instances[{index}].{self.name}",
                f"string of {len(value)} characters is longer than {_MAX_STRING}",
            )
        try:  # a lone surrogate is not text: no model or log can take it, and it is the caller's error
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"instances[{index}].{self.name}",
                f"string {show(value)} is not valid Unicode (it holds a lone surrogate)",
            ) from None

    def _timestamp(self, value: Any, index: int) -> float:
        if type(value) in (int, float):
            try:
                seconds = float(value)
            except OverflowError:
                seconds = math.inf
            if not math.isfinite(seconds):
                raise InputError(f"instances[{index}].{self.name}", f"time {show(value)} is not finite")
            return seconds
        if type(value) is str and len(value) <= _REPR_MAX:
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=dt.UTC)
                return parsed.timestamp()
        raise self._bad_type(value, index)


def rule_from_schema(
    name: str,
    column: Mapping[str, Any] | None,
    *,
    fallback: str,
    range_tolerance: float | None,
    unknown_categories: UnknownCategories,
) -> FieldRule:
    """The rule of one feature from its snapshot schema entry (``None``: no schema, use ``fallback``)."""
    if not isinstance(column, Mapping):
        return FieldRule(name, fallback, nullable=False)
    kind = column.get("type")
    if kind not in TYPES:
        kind = fallback
    nullable = bool(column.get("nullable", False))
    if kind == NUMERIC:
        lo_train, hi_train = _number(column.get("min")), _number(column.get("max"))
        lo = hi = None
        if range_tolerance is not None and lo_train is not None and hi_train is not None:
            width = hi_train - lo_train
            if width <= 0:
                width = max(abs(lo_train), 1.0)
            lo, hi = lo_train - range_tolerance * width, hi_train + range_tolerance * width
        return FieldRule(name, NUMERIC, nullable, lo_train, hi_train, lo, hi)
    if kind == CATEGORICAL:
        raw = column.get("categories")
        categories = frozenset(c for c in raw if c is not None) if isinstance(raw, list) else None
        cat_kind = "string"
        if categories:
            kinds = {value_kind(c) for c in categories}
            cat_kind = kinds.pop() if len(kinds) == 1 else "string"
            if cat_kind not in ("string", "number", "boolean"):
                cat_kind = "string"
        return FieldRule(
            name,
            CATEGORICAL,
            nullable,
            categories=categories,
            category_kind=cat_kind,
            refuse_unknown=unknown_categories == "refuse",
        )
    return FieldRule(name, kind, nullable)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class InputSchema:
    """The ordered inputs of one model version and the rules each must follow."""

    def __init__(self, fields: Sequence[FieldRule]) -> None:
        self.fields = tuple(fields)
        self.names = tuple(f.name for f in self.fields)
        self._index = {f.name: i for i, f in enumerate(self.fields)}

    def describe(self) -> dict[str, dict[str, Any]]:
        return {f.name: f.describe() for f in self.fields}

    def log_types(self) -> dict[str, str]:
        return {f.name: LOG_TYPES[f.type] for f in self.fields}

    def example(self) -> dict[str, Any]:
        """One valid instance, used to warm a freshly loaded model before it takes traffic."""
        row: dict[str, Any] = {}
        for f in self.fields:
            if f.type == NUMERIC:
                if f.min is not None and f.max is not None:
                    row[f.name] = (f.min + f.max) / 2.0
                else:
                    row[f.name] = 0.0
            elif f.type == CATEGORICAL:
                row[f.name] = sorted(f.categories, key=str)[0] if f.categories else "unknown"
            elif f.type == BOOLEAN:
                row[f.name] = False
            elif f.type == TIMESTAMP:
                row[f.name] = 0.0
            elif f.type == STRING:
                row[f.name] = ""
            else:
                row[f.name] = 0.0
        return row

    def columns(self, instances: list[Any], offset: int = 0) -> dict[str, list[Any]]:
        """Check ``instances`` (objects, or arrays in feature order) and return one list per feature."""
        n = len(self.names)
        rows: list[Mapping[str, Any]] = []
        for i, inst in enumerate(instances):
            if type(inst) is dict:
                rows.append(inst)
            elif type(inst) is list:
                if len(inst) != n:
                    raise InputError(
                        f"instances[{offset + i}]",
                        f"an array instance must hold {n} values in the order {list(self.names)[:20]}, "
                        f"got {len(inst)}",
                    )
                rows.append(dict(zip(self.names, inst, strict=True)))
            else:
                raise InputError(
                    f"instances[{offset + i}]",
                    f"expected an object of features, got {value_kind(inst)} {show(inst)}",
                )
        out: dict[str, list[Any]] = {}
        for rule in self.fields:
            name = rule.name
            out[name] = rule.check([r.get(name, _MISSING) for r in rows], offset)
        return out


def frame_columns(schema: InputSchema, columns: Mapping[str, list[Any]]) -> dict[str, Any]:
    """Typed arrays for a DataFrame: floats for numbers (NaN for null), times as UTC datetimes."""
    import pandas as pd

    out: dict[str, Any] = {}
    for rule in schema.fields:
        values = columns[rule.name]
        if rule.type == NUMERIC:
            if rule.nullable:
                values = [np.nan if v is None else v for v in values]
            out[rule.name] = np.asarray(values, dtype=np.float64)
        elif rule.type == TIMESTAMP:
            out[rule.name] = pd.to_datetime(
                np.array([np.nan if v is None else v for v in values], dtype=np.float64), unit="s", utc=True
            )
        elif rule.nullable:
            # One spelling of a missing value (NaN), as the training rows had it.
            out[rule.name] = [np.nan if v is None else v for v in values]
        else:
            out[rule.name] = values
    return out
