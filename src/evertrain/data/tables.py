"""Read a CSV or Parquet file into a pyarrow Table, with errors a person can act on.

Every failure is a :class:`~evertrain.exceptions.DataValidationError` (exit code 2)
that names the file and what is wrong with it: it does not exist, it is not a table
(JSON, say), a CSV row has the wrong number of fields (with its line number), or it
has no rows. String columns of Parquet files are read dictionary-encoded: the
monitor counts categories several times faster that way and the table is smaller.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from evertrain.exceptions import DataValidationError
from evertrain.monitor.columns import ColumnReader

if TYPE_CHECKING:
    import pandas as pd

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".tsv", ".txt")
_PARQUET_MAGIC = b"PAR1"
#: Bytes read to guess what a file without a known suffix holds.
_SNIFF_BYTES = 512
_CSV_FIELDS = re.compile(r"Expected (\d+) columns, got (\d+): (.*)", re.DOTALL)


def _sniff(path: Path) -> str:
    """``parquet``, ``csv`` or a description of what else the file looks like."""
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    stripped = head.lstrip()
    if name.endswith((".json", ".jsonl", ".ndjson")) or stripped[:1] in (b"{", b"["):
        return "JSON"
    if b"\x00" in head:
        return "binary data"
    return "csv"


def _csv_error(path: Path, message: str) -> DataValidationError:
    first = message.splitlines()[0] if message else "unreadable CSV"
    m = _CSV_FIELDS.search(message)
    if m:
        expected, got, row = m.group(1), m.group(2), m.group(3).strip()
        line_no = _find_line(path, row)
        where = f"line {line_no}" if line_no else "a row"
        return DataValidationError(
            f"{path}: CSV {where} has {got} fields, the header has {expected} ({row[:80]!r})"
        )
    return DataValidationError(f"{path}: cannot read as CSV: {first.removeprefix('CSV parse error: ')}")


def _find_line(path: Path, row: str) -> int | None:
    """Line number (1-based) of the first line equal to ``row``; only on the error path."""
    if path.name.lower().endswith((".gz", ".bz2")):
        return None
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh, start=1):
                if line.rstrip("\r\n") == row:
                    return i
    except OSError:
        return None
    return None


def _kind(p: Path) -> str:
    if not p.exists():
        raise DataValidationError(f"{p}: no such file")
    return "parquet" if p.is_dir() else _sniff(p)


def _string_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


def _parquet_error(p: Path, exc: Exception) -> DataValidationError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataValidationError(f"{p}: not a readable Parquet file ({reason})")


class ParquetColumns(ColumnReader):
    """A Parquet file read one column at a time, string columns dictionary-encoded.

    Only the footer is read when it is opened; each :meth:`column` call decodes that
    column alone, so a profile of the file holds one column per thread instead of the
    whole table, and starts on the first column while the others are still on disk.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._meta = meta = pq.read_metadata(path)
            self.schema = meta.schema.to_arrow_schema()
        except (pa.ArrowInvalid, OSError) as exc:
            raise _parquet_error(path, exc) from None
        self.num_rows = meta.num_rows
        self._strings = set(_string_columns(self.schema))
        if self._strings:
            fields = [
                pa.field(f.name, pa.dictionary(pa.int32(), f.type), f.nullable)
                if f.name in self._strings
                else f
                for f in self.schema
            ]
            self.schema = pa.schema(fields, metadata=self.schema.metadata)

    def column(self, name: str) -> pa.ChunkedArray:
        strings = [name] if name in self._strings else None
        try:
            # ParquetFile, not read_table: no dataset layer (which imports pandas) for one column.
            one = pq.ParquetFile(self.path, metadata=self._meta, read_dictionary=strings, memory_map=True)
            return one.read(columns=[name]).column(0)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _parquet_error(self.path, exc) from None


def open_table(path: str | Path) -> pa.Table | ParquetColumns:
    """A table to monitor: a Parquet file opened to be read column by column, else :func:`read_table`.

    The same checks as :func:`read_table` (no such file, not a table, no columns, no
    rows) apply, on the Parquet footer alone.
    """
    p = Path(path)
    if not (p.is_file() and _kind(p) == "parquet"):
        return read_table(p)
    reader = ParquetColumns(p)
    if not reader.column_names:
        raise DataValidationError(f"{p}: the table has no columns")
    if reader.num_rows == 0:
        raise DataValidationError(f"{p}: the table has no rows")
    return reader


def read_table(path: str | Path, *, allow_empty: bool = False, dictionary_strings: bool = True) -> pa.Table:
    """Read a Parquet file (or folder of Parquet files) or a CSV file.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("x,c\\n1.5,a\\n2.0,b\\n")
    >>> read_table(p).num_rows
    2
    """
    p = Path(path)
    kind = _kind(p)
    if kind == "parquet":
        try:
            schema = pq.read_schema(p) if p.is_file() else None
            strings = _string_columns(schema) if schema is not None and dictionary_strings else None
            table = pq.read_table(p, read_dictionary=strings or None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _parquet_error(p, exc) from None
    elif kind == "csv":
        try:
            delimiter = "\t" if p.name.lower().endswith(".tsv") else ","
            table = pacsv.read_csv(p, parse_options=pacsv.ParseOptions(delimiter=delimiter))
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                raise DataValidationError(f"{p}: the file is empty (no header, no rows)") from None
            raise _csv_error(p, str(exc)) from None
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"{p}: CSV is not valid UTF-8 ({exc.reason})") from None
    else:
        raise DataValidationError(
            f"{p}: not a table: it looks like {kind}; expected Parquet "
            f"({', '.join(PARQUET_SUFFIXES)}) or CSV ({', '.join(CSV_SUFFIXES)})"
        )
    if table.num_columns == 0:
        raise DataValidationError(f"{p}: the table has no columns")
    if table.num_rows == 0 and not allow_empty:
        raise DataValidationError(f"{p}: the table has no rows")
    return table


__all__ = ["CSV_SUFFIXES", "PARQUET_SUFFIXES", "ParquetColumns", "open_table", "read_table"]


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """The Arrow table of ``frame`` without its index, as snapshots hold it (decoding gives it back)."""
    return pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
