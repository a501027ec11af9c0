"""Data sources: where labelled rows come from, read into one pandas table.

One small interface (:class:`Source`: ``read()`` and ``uri``) and one class per
``data.source.kind`` of the spec, chosen from a registry by that kind:

- ``parquet``: a file, a folder (every ``*.parquet`` below it) or a glob;
- ``csv``: a file or a glob;

  both on the local disk or under any fsspec URL (``s3://bucket/warehouse/*.parquet``),
  listed fresh on every read, with the storage options of :mod:`evertrain.store.storage`;
- ``sql``: a query through SQLAlchemy (any URL it knows);
- ``duckdb``: a DuckDB query over files (needs the optional ``duckdb`` package);
- ``log``: the serving prediction log joined with its feedback labels (see ``docs/logs.md``),
  after the rows of its optional ``history`` source (a warehouse of the time before serving);
- ``dvc``: a DVC-tracked path of a git repository at a revision (:mod:`evertrain.data.dvc_source`);
- ``feast``: the rows of another source with features from a Feast feature store as of each
  row's time (:mod:`evertrain.data.feast_source`).

A source returns every row it has, labels and label arrival times included; choosing
the rows that were known at a training time is the job of :mod:`evertrain.data.windows`.

>>> import tempfile, pathlib, pandas as pd
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> pd.DataFrame({"x": [1, 2], "y": [0, 1]}).to_csv(folder / "rows.csv", index=False)
>>> CsvSource("rows.csv", base=folder).read().shape
(2, 2)
"""

from __future__ import annotations

import contextlib
import glob as globlib
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from evertrain.data.logs import FEEDBACK, PREDICTION_COLUMNS, PREDICTIONS, model_folder, read_log_parts
from evertrain.data.source_base import Source, in_project
from evertrain.exceptions import DataValidationError, NotFoundError, UsageError
from evertrain.store.names import SHADOW
from evertrain.store.redact import mask_text, mask_url
from evertrain.store.storage import fresh_find, fresh_glob, open_fs, storage_errors

#: Columns the serving logs add around the features (docs/logs.md); never features themselves.
LOG_COLUMNS = tuple(PREDICTION_COLUMNS)
#: Name the ``log`` source gives to the arrival time of each row's label (the feedback ``ts``).
LOG_LABEL_TIME = "label_ts"
#: Rows of this serving arm were never returned to a client, so their feedback is not theirs.
SHADOW_ARM = SHADOW


def _expand(pattern: str, suffix: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The filesystem of ``pattern`` (any fsspec URL or a local path) and the files that a path, a
    folder or a glob there names, listed fresh and sorted so that reads are reproducible."""
    fs, path = open_fs(pattern)
    if isinstance(fs, LocalFileSystem):
        local = Path(path)
        if local.is_dir():
            return fs, sorted(str(p) for p in local.rglob(f"*{suffix}"))
        if any(ch in pattern for ch in "*?["):
            return fs, sorted(globlib.glob(path, recursive=True))
        return fs, [path] if local.exists() else []
    if any(ch in path for ch in "*?["):
        return fs, fresh_glob(fs, path)
    fs.invalidate_cache(path)
    if fs.isdir(path):
        found = fresh_find(fs, path)
        return fs, [
            p for p in found if p.endswith(suffix) and not p.rsplit("/", 1)[-1].startswith((".", "_"))
        ]
    return fs, [path] if fs.exists(path) else []


def _read_parquet_file(path: str, fs: fsspec.AbstractFileSystem) -> pa.Table:
    """One Parquet file, whole: read as a file rather than as a dataset of one file
    (``pq.read_table``), the same table without the dataset layer (6.0 against 6.8 ms for
    150,000 rows)."""
    with pq.ParquetFile(path, filesystem=None if isinstance(fs, LocalFileSystem) else fs) as parquet:
        return parquet.read()


class ParquetSource(Source):
    kind = "parquet"

    def __init__(self, path: str, *, base: Path | None = None) -> None:
        self.path = path
        self.base = base

    @property
    def uri(self) -> str:
        return f"parquet:{in_project(self.path, self.base, resolve=False)}"

    def read(self) -> pd.DataFrame:
        target = in_project(self.path, self.base, resolve=False)
        with storage_errors(target, "list the parquet source"):
            fs, files = _expand(target, ".parquet")
        if not files:
            raise DataValidationError(f"parquet source {self.path!r}: no Parquet files found at {target}")
        try:
            with storage_errors(target, "read the parquet source"):
                tables = [_read_parquet_file(f, fs) for f in files]
            table = pa.concat_tables(tables, promote_options="default")
        except (OSError, pa.ArrowInvalid, NotFoundError) as exc:
            raise DataValidationError(f"parquet source {self.path!r}: cannot read {target}: {exc}") from None
        # One block per column: consolidating the columns into blocks of one type holds the
        # interpreter lock for most of the conversion, and a training reads its source in a
        # thread beside other Python work (claiming its run). Beside a busy thread the
        # conversion of 150,000 rows took 40 ms consolidated, 1.9 ms split (idle: 1.6, 1.3).
        return table.to_pandas(split_blocks=True).reset_index(drop=True)


class CsvSource(Source):
    kind = "csv"

    def __init__(self, path: str, *, base: Path | None = None) -> None:
        self.path = path
        self.base = base

    @property
    def uri(self) -> str:
        return f"csv:{in_project(self.path, self.base, resolve=False)}"

    def read(self) -> pd.DataFrame:
        target = in_project(self.path, self.base, resolve=False)
        with storage_errors(target, "list the csv source"):
            fs, files = _expand(target, ".csv")
        if not files:
            raise DataValidationError(f"csv source {self.path!r}: no CSV files found at {target}")
        try:
            with storage_errors(target, "read the csv source"):
                frames = []
                for f in files:
                    with fs.open(f, "rb") as fh:
                        frames.append(pd.read_csv(fh))
        except (OSError, ValueError, NotFoundError) as exc:
            raise DataValidationError(f"csv source {self.path!r}: cannot read {target}: {exc}") from None
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


class SqlSource(Source):
    """A query through SQLAlchemy; the engine is made when read and disposed right after."""

    kind = "sql"

    def __init__(self, url: str, query: str) -> None:
        self.url = url
        self.query = query

    @property
    def uri(self) -> str:
        import hashlib

        # Lineage and error messages show it: no password, in the authority or the query.
        return f"sql:{mask_url(self.url)}#{hashlib.sha256(self.query.encode()).hexdigest()[:16]}"

    def read(self) -> pd.DataFrame:
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(self.url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise UsageError(f"sql source: cannot use URL {self.uri}: {mask_text(str(exc))}") from None
        try:
            with engine.connect() as conn:
                return pd.read_sql_query(sa.text(self.query), conn)
        except sa.exc.SQLAlchemyError as exc:
            raise DataValidationError(
                f"sql source {self.uri}: the query failed: {mask_text(str(exc))}"
            ) from None
        finally:
            engine.dispose()


class DuckDBSource(Source):
    """A DuckDB query; relative file paths in it are read from the project folder."""

    kind = "duckdb"

    def __init__(self, query: str, *, base: Path | None = None) -> None:
        self.query = query
        self.base = base

    @property
    def uri(self) -> str:
        import hashlib

        return f"duckdb:{hashlib.sha256(self.query.encode()).hexdigest()[:16]}"

    def read(self) -> pd.DataFrame:
        try:
            import duckdb
        except ImportError:
            raise UsageError("a duckdb source needs the duckdb package: pip install duckdb") from None
        con = duckdb.connect()
        try:
            if self.base is not None:
                con.execute("SET file_search_path = ?", [str(self.base)])
            return con.execute(self.query).df().reset_index(drop=True)
        except duckdb.Error as exc:
            raise DataValidationError(f"duckdb source: the query failed: {exc}") from None
        finally:
            con.close()


class LogSource(Source):
    """Predictions of one model joined with their feedback on ``request_id``.

    Shadow rows are skipped (their answer was never returned, so a label speaks of the
    answer the client did get). Each feedback row gives one output row: the label under
    the model's target name and its arrival time under :data:`LOG_LABEL_TIME`. A request
    labelled twice gives two rows; the window keeps the newest label known at its cut-off.
    """

    kind = "log"

    def __init__(self, logs_url: str, model: str, target: str, *, history: Source | None = None) -> None:
        self.logs_url = logs_url.rstrip("/")
        self.model = model
        self.target = target
        self.history = history

    @property
    def uri(self) -> str:
        uri = f"log:{model_folder(self.logs_url, PREDICTIONS, self.model)}"
        return uri if self.history is None else f"{uri}+{self.history.uri}"

    def _read(self, log: str) -> pa.Table | None:
        """Every part of one log of the model, in path order, through the one reader of the layout."""
        try:
            parts = read_log_parts(self.logs_url, log, self.model)
            return pa.concat_tables(parts, promote_options="permissive") if parts else None
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataValidationError(f"{log} log of model {self.model!r}: cannot read: {exc}") from None

    def read(self) -> pd.DataFrame:
        """The labelled served rows, after the history's rows when there is a history.

        Before anything was served (the first training of a new project) the history alone
        is read; without a history that is an error naming the log's location.
        """
        served = self._served()
        if self.history is None:
            if served is None:
                raise DataValidationError(
                    f"log source: no prediction log for model {self.model!r} under {self.logs_url} "
                    "(serve the model and post feedback first, or give the source a history)"
                )
            return served
        past = self.history.read()
        if "request_id" not in past.columns:
            # Every row of a log source has an id; a warehouse row's is its place in the history.
            past.insert(0, "request_id", [f"history:{i}" for i in range(len(past))])
        if served is None or served.empty:
            return past.reset_index(drop=True)
        if self.target in past.columns and self.target in served.columns:
            # The log keeps labels as floats; a history of integer classes keeps its type.
            with contextlib.suppress(ValueError, TypeError):
                served[self.target] = served[self.target].astype(past[self.target].dtype)
        return pd.concat([past, served], ignore_index=True)

    def _served(self) -> pd.DataFrame | None:
        predictions = self._read(PREDICTIONS)
        feedback = self._read(FEEDBACK)
        if predictions is None:
            return None
        pred = predictions.to_pandas()
        pred = pred[pred["arm"] != SHADOW_ARM].drop_duplicates("request_id", keep="first")
        if feedback is None:
            labels = pd.DataFrame({"request_id": pd.Series(dtype=object), "label": [], "ts": []})
        else:
            labels = feedback.to_pandas()[["request_id", "label", "ts"]]
        labels = labels.rename(columns={"label": self.target, "ts": LOG_LABEL_TIME})
        if self.target in pred.columns:
            pred = pred.drop(columns=[self.target])
        joined = pred.merge(labels, on="request_id", how="inner", validate="one_to_many")
        return joined.sort_values(["ts", "request_id", LOG_LABEL_TIME], kind="stable").reset_index(drop=True)


SOURCES: dict[str, type[Source]] = {
    cls.kind: cls for cls in (ParquetSource, CsvSource, SqlSource, DuckDBSource, LogSource)
}
#: Every kind :func:`open_source` knows: those above, and the kinds in modules of their own
#: (imported when used): ``dvc`` (:mod:`evertrain.data.dvc_source`), ``feast``
#: (:mod:`evertrain.data.feast_source`).
KINDS = (*SOURCES, "dvc", "feast")


def open_source(
    source: Any,
    *,
    base: Path | None = None,
    logs_url: str | None = None,
    model: str = "",
    target: str = "",
    time_column: str | None = None,
) -> Source:
    """The :class:`Source` for a spec's ``data.source`` (a :class:`evertrain.spec.SourceSpec`).

    ``time_column`` (``data.time_column``): the event time a ``feast`` source joins features as of.
    """
    kind = source.kind
    if kind == "parquet":
        return ParquetSource(source.path, base=base)
    if kind == "csv":
        return CsvSource(source.path, base=base)
    if kind == "sql":
        return SqlSource(source.url, source.query)
    if kind == "duckdb":
        return DuckDBSource(source.query, base=base)
    if kind == "dvc":
        from evertrain.data.dvc_source import DvcSource

        return DvcSource(source.path, repo=source.repo or ".", rev=source.rev, base=base)
    if kind == "feast":
        from evertrain.data.feast_source import FeastSource

        entities = open_source(source.entities, base=base, logs_url=logs_url, model=model, target=target)
        return FeastSource(
            source.repo,
            source.features,
            entities,
            time_column=time_column,
            python=source.python,
            base=base,
        )
    if kind == "log":
        url = (source.path and in_project(source.path, base, resolve=False)) or logs_url
        if not url:
            raise UsageError("a log source needs the logs location (EVERTRAIN_LOGS_URL or source.path)")
        history = None if source.history is None else open_source(source.history, base=base)
        return LogSource(url, model, target, history=history)
    raise UsageError(f"unknown data source kind {kind!r}; known: {', '.join(sorted(KINDS))}")


def read_table(path: str | Path, *, base: Path | None = None) -> pd.DataFrame:
    """A Parquet or CSV file (e.g. a golden set), chosen by its suffix."""
    text = str(path)
    if text.endswith(".csv"):
        return CsvSource(text, base=base).read()
    return ParquetSource(text, base=base).read()
