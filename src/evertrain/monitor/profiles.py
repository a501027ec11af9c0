"""Mergeable per-column profiles, so monitoring can run over days of logs without the rows.

A :class:`Profile` holds, per column:

numeric
    count, missing count, mean and sum of squared deviations (merged with Chan's
    formula), minimum, maximum, a KLL quantile sketch (Apache DataSketches), and
    counts and offset sums in fine *reference bins*.
categorical
    missing count and counts per category.

Reference bins are what make the drift tests fast and their error known. A reference
profile chooses :data:`FINE_BINS` equal-mass bin edges from its own data; every later
window is profiled *against* that reference and counts its values in the same bins.
Counts, minima, maxima and category counts then merge exactly (integer addition),
moments and offset sums to floating-point rounding, and the KLL sketches with the
guarantee of a single sketch over the union.

The binning is in :mod:`evertrain.monitor.binning`; drift statistics from two profiles,
with their error bounds, in :mod:`evertrain.monitor.profile_compare`.
"""

from __future__ import annotations

import base64
import json
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from evertrain.exceptions import DataValidationError, UsageError
from evertrain.monitor import columns as cols
from evertrain.monitor.binning import FINE_BINS, Binner, Workspace, choose_edges
from evertrain.monitor.tests import (
    CATEGORICAL,
    MISSING_LABEL,
    NUMERIC,
    ColumnKind,
)

if TYPE_CHECKING:
    from datasketches import kll_doubles_sketch

#: KLL sketch size: normalised rank error about 0.3% (99% confidence), 23 kB per
#: column for a million values.
DEFAULT_KLL_K = 1000
FORMAT_VERSION = 1
#: Profiling threads by default; more rarely helps, since a column pass is memory-bound.
MAX_THREADS = 4
#: Below this many rows, threads cost more than they save.
_THREADS_MIN_ROWS = 100_000


def _default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_THREADS))


#: Below this ratio of the one-pass sum of squares to its parts, rounding may have eaten
#: more than about 1e-9 of the variance (a large mean with a small spread): recompute it
#: in two passes.
_CANCELLATION = 1e-6


def _moments(x: np.ndarray, total: float | None = None) -> tuple[float, float]:
    """Mean and sum of squared deviations; one pass unless cancellation makes it imprecise.

    ``total`` is the sum of ``x`` when the caller has it already (from the bin sums).
    """
    n = x.size
    s1 = float(x.sum()) if total is None else total
    # einsum's own loop, not BLAS: OpenBLAS's threads spin-wait after a dot product, and
    # across a table's columns that spinning cost a drift run a sixth of its CPU time.
    s2 = float(np.einsum("i,i->", x, x))
    mean = s1 / n
    m2 = s2 - s1 * mean
    if m2 <= _CANCELLATION * s2:
        dev = x - mean
        m2 = float(np.einsum("i,i->", dev, dev))
    return mean, max(m2, 0.0)


@dataclass(eq=False)
class NumericProfile:
    """Summary of one numeric column; see the module docstring."""

    count: int = 0
    missing: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    edges: np.ndarray | None = None
    bin_counts: np.ndarray | None = None
    bin_offsets: np.ndarray | None = None
    sketch: kll_doubles_sketch | None = None
    _binner: Binner | None = field(default=None, repr=False)

    kind: ColumnKind = NUMERIC

    @property
    def std(self) -> float:
        """Population standard deviation (as ``numpy.std``)."""
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges, counts and offset sums of the reference bins (an error if the profile has none)."""
        if self.edges is None or self.bin_counts is None or self.bin_offsets is None:
            raise UsageError("this numeric profile has no reference bins")
        if self.bin_counts.size != self.edges.size + 1 or self.bin_offsets.size != self.edges.size + 1:
            raise DataValidationError(
                f"numeric profile is inconsistent: {self.edges.size} edges need {self.edges.size + 1} bins, "
                f"got {self.bin_counts.size} counts and {self.bin_offsets.size} sums"
            )
        return self.edges, self.bin_counts, self.bin_offsets

    def binner(self) -> Binner:
        if self.edges is None:
            raise UsageError("this numeric profile has no reference bins")
        if self._binner is None:
            self._binner = Binner(self.edges)
        return self._binner

    @classmethod
    def from_values(
        cls,
        values: np.ndarray,
        *,
        edges: np.ndarray | None = None,
        bins: int | None = FINE_BINS,
        sketch_k: int | None = DEFAULT_KLL_K,
        binner: Binner | None = None,
        work: Workspace | None = None,
    ) -> NumericProfile:
        """Profile float values (NaN and infinities counted as missing).

        ``edges`` (from a reference profile) fixes the bins; without it, ``bins`` equal-mass
        edges are chosen from these values (``None``: no bins). ``sketch_k=None`` skips
        the KLL sketch, which is the slowest part and not needed for a drift verdict.
        """
        x = np.asarray(values, dtype=np.float64)
        n_missing = 0
        lo = hi = math.nan
        if x.size:
            # NaN propagates through min and max, and infinities show in them: one check
            # of the extremes stands for a pass of isfinite over the column.
            lo, hi = float(x.min()), float(x.max())
            if not (math.isfinite(lo) and math.isfinite(hi)):
                finite = np.isfinite(x)
                n_missing = int(x.size - np.count_nonzero(finite))
                x = x[finite]
                lo, hi = (float(x.min()), float(x.max())) if x.size else (math.nan, math.nan)
        n = int(x.size)
        prof = cls(count=n, missing=n_missing)
        if n:
            prof.minimum, prof.maximum = lo, hi
        if edges is None and bins is not None:
            edges = choose_edges(x, bins)
        total = None
        if edges is not None:
            prof.edges = edges
            prof._binner = binner if binner is not None else Binner(edges)
            index = prof._binner(x, work)
            m = edges.size
            prof.bin_counts = np.bincount(index, minlength=m + 1).astype(np.int64)
            sums = np.bincount(index, weights=x, minlength=m + 1)
            total = float(sums.sum())
            # Sums are kept as offsets from each bin's anchor (its left edge; the first
            # edge for the open lower bin), the scale at which the per-bin integrals work.
            anchors = np.concatenate((edges[:1], edges)) if m else np.zeros(1)
            prof.bin_offsets = sums - prof.bin_counts * anchors
        if n:
            prof.mean, prof.m2 = _moments(x, total)
        if sketch_k is not None:
            from datasketches import kll_doubles_sketch  # only for sketches: a drift verdict needs none

            prof.sketch = kll_doubles_sketch(sketch_k)
            if n:
                # The binding takes only writable arrays; Arrow hands out read-only views.
                prof.sketch.update(np.require(x, dtype=np.float64, requirements=["C", "W"]))
        return prof

    def merge(self, other: NumericProfile) -> NumericProfile:
        """The profile of both windows together (bins must be the same)."""
        n = self.count + other.count
        out = NumericProfile(count=n, missing=self.missing + other.missing)
        if n:
            delta = other.mean - self.mean
            out.mean = self.mean + delta * other.count / n
            out.m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        out.minimum = min(self.minimum, other.minimum)
        out.maximum = max(self.maximum, other.maximum)
        if self.edges is not None or other.edges is not None:
            if self.edges is None or other.edges is None or not np.array_equal(self.edges, other.edges):
                raise UsageError(
                    "cannot merge numeric profiles built on different reference bins; "
                    "profile every window against the same reference profile"
                )
            _, mine_counts, mine_offsets = self.bins()
            _, their_counts, their_offsets = other.bins()
            out.edges = self.edges
            out._binner = self._binner or other._binner
            out.bin_counts = mine_counts + their_counts
            out.bin_offsets = mine_offsets + their_offsets
        if self.sketch is not None and other.sketch is not None:
            from datasketches import kll_doubles_sketch

            out.sketch = kll_doubles_sketch.deserialize(self.sketch.serialize())
            out.sketch.merge(other.sketch)
        return out

    def quantiles(self, ranks: Sequence[float]) -> list[float]:
        """Approximate quantiles from the KLL sketch (rank error about 0.3%)."""
        if self.sketch is None or self.sketch.is_empty():
            return [math.nan] * len(ranks)
        return [float(v) for v in self.sketch.get_quantiles(list(ranks))]

    def to_dict(self) -> dict[str, Any]:
        def arr(a: np.ndarray | None) -> str | None:
            return None if a is None else base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()

        return {
            "kind": NUMERIC,
            "count": self.count,
            "missing": self.missing,
            "mean": self.mean,
            "m2": self.m2,
            "minimum": self.minimum if self.count else None,
            "maximum": self.maximum if self.count else None,
            "edges": arr(self.edges),
            "bin_counts": arr(self.bin_counts),
            "bin_offsets": arr(self.bin_offsets),
            "sketch": None if self.sketch is None else base64.b64encode(self.sketch.serialize()).decode(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NumericProfile:
        def arr(s: str | None, dtype: type) -> np.ndarray | None:
            return None if s is None else np.frombuffer(base64.b64decode(s), dtype=dtype).copy()

        sketch = None
        if d["sketch"] is not None:
            from datasketches import kll_doubles_sketch

            sketch = kll_doubles_sketch.deserialize(base64.b64decode(d["sketch"]))
        return cls(
            count=int(d["count"]),
            missing=int(d["missing"]),
            mean=float(d["mean"]),
            m2=float(d["m2"]),
            minimum=math.inf if d["minimum"] is None else float(d["minimum"]),
            maximum=-math.inf if d["maximum"] is None else float(d["maximum"]),
            edges=arr(d["edges"], np.float64),
            bin_counts=arr(d["bin_counts"], np.int64),
            bin_offsets=arr(d["bin_offsets"], np.float64),
            sketch=sketch,
        )


@dataclass(eq=False)
class CategoricalProfile:
    """Counts per category and of missing values; merges exactly."""

    counts: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    kind: ColumnKind = CATEGORICAL

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def from_column(cls, column: pa.ChunkedArray | pa.Array) -> CategoricalProfile:
        counts, missing = cols.category_counts(column)
        return cls(counts=counts, missing=missing)

    def merge(self, other: CategoricalProfile) -> CategoricalProfile:
        counts = dict(self.counts)
        for k, v in other.counts.items():
            counts[k] = counts.get(k, 0) + v
        return CategoricalProfile(counts=counts, missing=self.missing + other.missing)

    def with_missing(self) -> dict[str, int]:
        """Counts with missing values as a category of their own."""
        if not self.missing:
            return self.counts
        out = dict(self.counts)
        out[MISSING_LABEL] = out.get(MISSING_LABEL, 0) + self.missing
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": CATEGORICAL, "counts": self.counts, "missing": self.missing}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalProfile:
        return cls(counts={str(k): int(v) for k, v in d["counts"].items()}, missing=int(d["missing"]))


ColumnProfile = NumericProfile | CategoricalProfile


@dataclass(eq=False)
class Profile:
    """Per-column profiles of one table or window; ``a.merge(b)`` (or ``a + b``) combines windows.

    >>> import pyarrow as pa
    >>> ref = Profile.from_table(pa.table({"x": [1.0, 2.0, 3.0, None], "c": ["a", "b", "a", "a"]}))
    >>> ref.columns["x"].count, ref.columns["x"].missing, ref.columns["c"].counts
    (3, 1, {'a': 3, 'b': 1})
    """

    columns: dict[str, ColumnProfile]
    n_rows: int
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def kinds(self) -> dict[str, ColumnKind]:
        return {name: p.kind for name, p in self.columns.items()}

    @classmethod
    def from_table(
        cls,
        table: Any,
        *,
        reference: Profile | None = None,
        columns: Sequence[str] | None = None,
        numeric: Iterable[str] | None = None,
        categorical: Iterable[str] | None = None,
        bins: int = FINE_BINS,
        sketch: bool = True,
        kll_k: int = DEFAULT_KLL_K,
        role: str = "table",
        threads: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Profile:
        """Profile a pyarrow, pandas or polars table, or a :class:`~evertrain.monitor.columns.ColumnReader`.

        With ``reference``, the columns and kinds are the reference's and numeric values
        are counted in the reference's bins, so the result can be compared with it and
        merged with other windows profiled against it. ``threads`` columns are profiled
        at once (default: the CPU count, at most :data:`MAX_THREADS`); from a column
        reader, each thread reads its column, profiles it and lets it go. ``progress`` is
        told ``(columns done, columns in all)`` after each column.
        """
        t = cols.as_columns(table, role)
        if reference is not None:
            missing = [c for c in reference.columns if c not in t.column_names]
            if missing:
                raise DataValidationError(
                    f"{role}: no column named {', '.join(repr(c) for c in missing)}, which the reference has"
                )
            kinds = reference.kinds
            for name, kind in kinds.items():
                cols.check_compatible(name, kind, t, role)
            skipped: dict[str, str] = {}
        else:
            kinds, skipped = cols.resolve_kinds(
                t, columns=columns, numeric=numeric, categorical=categorical, role=role
            )
        numeric_cols = [c for c, k in kinds.items() if k == NUMERIC]
        ref_binners: dict[str, Binner] = {}
        if reference is not None:
            for name in numeric_cols:
                ref_col = reference.columns[name]
                if isinstance(ref_col, NumericProfile) and ref_col.edges is not None:
                    ref_binners[name] = ref_col.binner()  # built here, not raced for in threads

        def one(name: str, work: Workspace | None) -> ColumnProfile:
            column = t.column(name)
            if kinds[name] != NUMERIC:
                return CategoricalProfile.from_column(column)
            values = cols.numeric_values(column)
            k = kll_k if sketch else None
            if name in ref_binners:
                binner = ref_binners[name]
                return NumericProfile.from_values(
                    values, edges=binner.edges, binner=binner, sketch_k=k, work=work
                )
            return NumericProfile.from_values(values, bins=bins, sketch_k=k, work=work)

        names = list(kinds)
        tick = _counter(len(names), progress)

        def run(names: list[str]) -> list[tuple[str, ColumnProfile]]:
            work = Workspace(t.num_rows) if any(kinds[n] == NUMERIC for n in names) else None
            out = []
            for n in names:
                out.append((n, one(n, work)))
                tick()
            return out

        n_threads = max(1, min(threads if threads is not None else _default_threads(), len(names)))
        if n_threads == 1 or t.num_rows < _THREADS_MIN_ROWS:
            done = run(names)
        else:
            # numpy and Arrow release the GIL in the heavy loops, so columns profile in parallel.
            groups = [names[i::n_threads] for i in range(n_threads)]
            with ThreadPoolExecutor(max_workers=n_threads) as pool:
                done = [item for part in pool.map(run, groups) for item in part]
        got = dict(done)
        out: dict[str, ColumnProfile] = {n: got[n] for n in names}
        return cls(columns=out, n_rows=t.num_rows, skipped=skipped)

    def merge(self, other: Profile) -> Profile:
        differ = sorted(set(self.columns) ^ set(other.columns))
        if differ:
            raise UsageError(f"cannot merge profiles of different columns: {differ}")
        merged: dict[str, ColumnProfile] = {}
        for name, mine in self.columns.items():
            theirs = other.columns[name]
            if isinstance(mine, NumericProfile) and isinstance(theirs, NumericProfile):
                merged[name] = mine.merge(theirs)
                continue
            if isinstance(mine, CategoricalProfile) and isinstance(theirs, CategoricalProfile):
                merged[name] = mine.merge(theirs)
                continue
            raise UsageError(
                f"cannot merge profiles: column {name!r} is {mine.kind} in one, {theirs.kind} in the other"
            )
        return Profile(
            columns=merged, n_rows=self.n_rows + other.n_rows, skipped={**self.skipped, **other.skipped}
        )

    __add__ = merge

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "evertrain-profile",
            "version": FORMAT_VERSION,
            "n_rows": self.n_rows,
            "skipped": self.skipped,
            "columns": {name: p.to_dict() for name, p in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        if d.get("format") != "evertrain-profile" or d.get("version") != FORMAT_VERSION:
            raise DataValidationError(
                f"not an evertrain profile of format version {FORMAT_VERSION}: "
                f"format={d.get('format')!r}, version={d.get('version')!r}"
            )
        out: dict[str, ColumnProfile] = {}
        for name, c in d["columns"].items():
            out[name] = (
                NumericProfile.from_dict(c) if c["kind"] == NUMERIC else CategoricalProfile.from_dict(c)
            )
        return cls(columns=out, n_rows=int(d["n_rows"]), skipped=dict(d.get("skipped", {})))

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Profile:
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise DataValidationError(f"profile is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise DataValidationError("profile is not a JSON object")
        return cls.from_dict(parsed)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        p = Path(path)
        if not p.is_file():
            raise DataValidationError(f"profile file {p} does not exist")
        return cls.from_bytes(p.read_bytes())


def profile(table: Any, *, reference: Profile | None = None, **kwargs: Any) -> Profile:
    """Shorthand for :meth:`Profile.from_table`."""
    return Profile.from_table(table, reference=reference, **kwargs)


def _counter(total: int, progress: Callable[[int, int], None] | None) -> Callable[[], None]:
    """A thread-safe tick that tells ``progress`` how many of ``total`` items are done."""
    if progress is None:
        return lambda: None
    lock = threading.Lock()
    done = [0]

    def tick() -> None:
        with lock:
            done[0] += 1
            progress(done[0], total)

    return tick


__all__ = [
    "DEFAULT_KLL_K",
    "CategoricalProfile",
    "ColumnProfile",
    "NumericProfile",
    "Profile",
    "profile",
]
