"""Reading tables: every failure names the file and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evertrain.data.tables import read_table
from evertrain.exceptions import DataValidationError


def test_reads_parquet_with_dictionary_strings_and_csv(tmp_path: Path) -> None:
    table = pa.table({"x": [1.0, 2.0, None], "c": ["a", "b", "a"]})
    pq.write_table(table, tmp_path / "t.parquet")
    got = read_table(tmp_path / "t.parquet")
    assert pa.types.is_dictionary(got.schema.field("c").type)
    assert got.column("x").null_count == 1
    (tmp_path / "t.csv").write_text("x,c\n1.5,a\n,b\n")
    assert read_table(tmp_path / "t.csv").num_rows == 2
    (tmp_path / "no_suffix").write_bytes((tmp_path / "t.parquet").read_bytes())
    assert read_table(tmp_path / "no_suffix").num_rows == 3


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.csv", "a,b\n1,2\n3,4,5\n", "CSV line 3 has 3 fields, the header has 2"),
        ("empty.csv", "", "the file is empty"),
        ("header_only.csv", "a,b\n", "the table has no rows"),
        ("data.json", '{"a": 1}', "not a table: it looks like JSON"),
        ("fake.parquet", "not parquet at all", "not a readable Parquet file"),
    ],
)
def test_clear_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataValidationError, match=message) as info:
        read_table(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    assert read_table_allow_empty(tmp_path).num_rows == 0


def read_table_allow_empty(tmp_path: Path) -> pa.Table:
    (tmp_path / "h.csv").write_text("a,b\n")
    return read_table(tmp_path / "h.csv", allow_empty=True)
