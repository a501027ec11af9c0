"""Tables in, columns out: what every monitor function does before any statistics.

Accepts pyarrow, pandas and polars tables (polars and pandas become Arrow, zero-copy
where they can), decides each column's kind from its Arrow type, and extracts whole
columns as numpy arrays or category counts. Errors name the table, the column, the
rule and the bad value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evertrain.exceptions import DataValidationError, UsageError
from evertrain.monitor.tests import CATEGORICAL, NUMERIC, ColumnKind

#: A categorical column keeps its most frequent categories up to this many; the rest
#: are counted together under :data:`OTHER_LABEL`. Past this, a column is most likely
#: an identifier, and a contingency table of it would say nothing. Far above the
#: schema's and the snapshot's bounds, which decide whether values are listed and
#: enforced: this one only bounds how many categories a column's counts keep (for
#: drift tests and profiles), so that they stay small in memory and in reports.
PROFILE_MAX_CATEGORIES = 10_000
OTHER_LABEL = "(other)"
#: Number of bad values quoted in an error message.
EXAMPLES = 3


class ColumnReader:
    """A table read one column at a time: profiling holds one column per thread, not the table.

    It offers what the monitor reads of a pyarrow Table (``schema``, ``column_names``,
    ``num_rows``, ``column(name)``), so it passes wherever a table does;
    :func:`evertrain.data.tables.open_table` returns one for a Parquet file.
    """

    schema: pa.Schema
    num_rows: int

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)

    def column(self, name: str) -> pa.ChunkedArray:
        raise NotImplementedError

    def read_all(self) -> pa.Table:
        """The whole table (what the multivariate tests need)."""
        return pa.table({name: self.column(name) for name in self.column_names})


def as_columns(obj: Any, role: str) -> pa.Table | ColumnReader:
    """:func:`as_table`, except that a :class:`ColumnReader` passes as it is (read column by column)."""
    return obj if isinstance(obj, ColumnReader) else as_table(obj, role)


def as_table(obj: Any, role: str) -> pa.Table:
    """A pyarrow Table from a pyarrow Table or RecordBatch, a pandas or a polars DataFrame."""
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    module = type(obj).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            try:
                return pa.Table.from_pandas(obj, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise DataValidationError(f"{role}: cannot read the pandas DataFrame: {exc}") from None
    if module == "polars" and hasattr(obj, "to_arrow"):
        table = obj.to_arrow()
        if isinstance(table, pa.Table):
            return table
    raise UsageError(
        f"{role}: expected a pyarrow Table, a pandas or polars DataFrame, or a Profile; "
        f"got {type(obj).__name__}"
    )


def kind_of(dtype: pa.DataType) -> ColumnKind | None:
    """The monitor kind of an Arrow type: numeric, categorical, or None (not monitored)."""
    if pa.types.is_dictionary(dtype):
        return CATEGORICAL
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return NUMERIC
    if pa.types.is_boolean(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return CATEGORICAL
    if pa.types.is_string_view(dtype):
        return CATEGORICAL
    return None


def type_name(dtype: pa.DataType) -> str:
    """A short, user-facing name of an Arrow type."""
    if pa.types.is_dictionary(dtype):
        return "categorical"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "string"
    if pa.types.is_null(dtype):
        return "null (all missing)"
    return str(dtype)


def resolve_kinds(
    table: pa.Table,
    *,
    columns: Sequence[str] | None,
    numeric: Iterable[str] | None,
    categorical: Iterable[str] | None,
    role: str,
) -> tuple[dict[str, ColumnKind], dict[str, str]]:
    """Kinds of the monitored columns, and the skipped columns with the reason.

    ``numeric`` and ``categorical`` override the kind read from the type (an integer
    code column is better compared as categories).
    """
    forced: dict[str, ColumnKind] = {}
    for names, kind in ((numeric, NUMERIC), (categorical, CATEGORICAL)):
        for name in names or ():
            if name in forced and forced[name] != kind:
                raise UsageError(f"column {name!r} is listed both as numeric and as categorical")
            forced[name] = kind
    present = set(table.column_names)
    wanted = list(columns) if columns is not None else list(table.column_names)
    missing = [c for c in [*wanted, *forced] if c not in present]
    if missing:
        raise DataValidationError(
            f"{role}: no column named {', '.join(repr(c) for c in dict.fromkeys(missing))}; "
            f"it has {', '.join(repr(c) for c in table.column_names[:20])}"
        )
    kinds: dict[str, ColumnKind] = {}
    skipped: dict[str, str] = {}
    for name in wanted:
        dtype = table.schema.field(name).type
        if name in forced:
            if forced[name] == NUMERIC and kind_of(dtype) != NUMERIC:
                raise DataValidationError(
                    f"column {name!r} in {role}: asked to treat it as numeric, "
                    f"but its type is {type_name(dtype)}"
                )
            kinds[name] = forced[name]
            continue
        inferred = kind_of(dtype)
        if inferred is None:
            if pa.types.is_null(dtype):
                kinds[name] = NUMERIC  # all missing: reported as such by the caller
            else:
                skipped[name] = f"type {type_name(dtype)} is not monitored"
            continue
        kinds[name] = inferred
    return kinds, skipped


def numeric_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column as float64 numpy, NaN where missing (zero-copy for float64 without nulls)."""
    dtype = column.type
    if pa.types.is_null(dtype):
        return np.full(len(column), np.nan)
    if not pa.types.is_float64(dtype):
        column = pc.cast(column, pa.float64())
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            column = column.chunk(0)
        elif column.num_chunks == 0:
            return np.empty(0)
        else:
            column = column.combine_chunks()
    if column.null_count:
        column = pc.fill_null(column, np.nan)
    return np.asarray(_to_numpy(column), dtype=np.float64)


def _to_numpy(array: pa.Array) -> np.ndarray:
    """An Arrow array without nulls as numpy, zero-copy where it can be.

    A copying ``to_numpy`` goes through Arrow's pandas conversion, which imports pandas
    (most of a small drift run's start-up); a primitive array without nulls needs none.
    """
    dtype = array.type
    if array.null_count == 0 and (pa.types.is_floating(dtype) or pa.types.is_integer(dtype)):
        code = "f" if pa.types.is_floating(dtype) else "i" if pa.types.is_signed_integer(dtype) else "u"
        width = dtype.bit_width // 8
        return np.frombuffer(
            array.buffers()[1], dtype=f"{code}{width}", count=len(array), offset=array.offset * width
        )
    return array.to_numpy(zero_copy_only=False)


def non_numeric_examples(column: pa.ChunkedArray, limit: int = EXAMPLES) -> list[Any]:
    """A few values of a column that do not read as numbers (for error messages)."""
    values = pc.unique(column.drop_null() if hasattr(column, "drop_null") else column)
    out: list[Any] = []
    for v in values.to_pylist():
        try:
            float(v)
        except (TypeError, ValueError):
            out.append(v)
            if len(out) >= limit:
                break
    return out or values.to_pylist()[:limit]


def category_counts(column: pa.ChunkedArray | pa.Array) -> tuple[dict[str, int], int]:
    """Counts per category (labels as strings) and the number of missing values."""
    if pa.types.is_null(column.type):
        return {}, len(column)
    if isinstance(column, pa.ChunkedArray) and column.num_chunks == 0:
        return {}, 0
    if pa.types.is_dictionary(column.type):
        fast = _dictionary_counts(column)
        if fast is not None:
            return fast
    counts = pc.value_counts(column)
    values = counts.field("values")
    n = counts.field("counts")
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = pc.cast(values, pa.string())
    valid = pc.is_valid(values)
    missing = int(pc.sum(pc.filter(n, pc.invert(valid))).as_py() or 0)
    values, n = pc.filter(values, valid), pc.filter(n, valid)
    if len(values) > PROFILE_MAX_CATEGORIES:
        order = np.argsort(-n.to_numpy(), kind="stable")
        keep, rest = order[:PROFILE_MAX_CATEGORIES], order[PROFILE_MAX_CATEGORIES:]
        labels = values.take(pa.array(keep)).to_pylist()
        result = dict(zip(labels, n.take(pa.array(keep)).to_pylist(), strict=True))
        result[OTHER_LABEL] = result.get(OTHER_LABEL, 0) + int(n.to_numpy()[rest].sum())
        return result, missing
    return dict(zip(values.to_pylist(), n.to_pylist(), strict=True)), missing


def _dictionary_counts(column: pa.ChunkedArray | pa.Array) -> tuple[dict[str, int], int] | None:
    """Counts of a dictionary-encoded column by counting its integer codes (5x faster).

    None when the chunks do not share one dictionary (then the generic path runs).
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    dictionary = chunks[0].dictionary
    if any(not c.dictionary.equals(dictionary) for c in chunks[1:]):
        return None
    totals = np.zeros(len(dictionary), dtype=np.int64)
    missing = 0
    for chunk in chunks:
        codes = chunk.indices
        missing += codes.null_count
        if codes.null_count:
            codes = codes.drop_null()
        totals += np.bincount(_to_numpy(codes), minlength=len(dictionary))
    labels = dictionary if pa.types.is_string(dictionary.type) else pc.cast(dictionary, pa.string())
    out: dict[str, int] = {}
    for label, count in zip(labels.to_pylist(), totals.tolist(), strict=True):
        if not count:
            continue
        if label is None:  # a null inside the dictionary is a missing value too
            missing += count
        else:
            out[label] = out.get(label, 0) + count  # a dictionary may repeat a value
    if len(out) > PROFILE_MAX_CATEGORIES:
        return None
    return out, missing


def check_compatible(name: str, ref_kind: ColumnKind, current: pa.Table, current_role: str) -> None:
    """Raise when the current column's type cannot be compared with the reference kind."""
    dtype = current.schema.field(name).type
    kind = kind_of(dtype)
    if pa.types.is_null(dtype) or kind == ref_kind or (ref_kind == CATEGORICAL and kind is not None):
        return
    if ref_kind == NUMERIC:
        examples = non_numeric_examples(current.column(name))
        shown = ", ".join(repr(v) for v in examples)
        raise DataValidationError(
            f"column {name!r} in {current_role}: expected numeric like the reference, got "
            f"{type_name(dtype)} values ({shown}, ...)"
        )
    raise DataValidationError(
        f"column {name!r} in {current_role}: expected categorical like the reference, got {type_name(dtype)}"
    )


def require_rows(table: pa.Table, role: str) -> None:
    if table.num_rows == 0:
        raise DataValidationError(f"{role} has no rows; drift needs at least one row on each side")


def missing_columns(names: Iterable[str], table_columns: Mapping[str, Any] | Sequence[str]) -> list[str]:
    have = set(table_columns)
    return [n for n in names if n not in have]
