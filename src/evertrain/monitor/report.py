"""The drift report: :func:`drift` builds it from two tables or profiles (its types are in
:mod:`evertrain.monitor.verdicts`).

The JSON form follows DESIGN.md (``columns``, ``drifted_columns``, ``share_drifted``,
``dataset_drift``, ``n_reference``, ``n_current``) and adds what a reader needs to
trust a verdict: the correction and its budget, every registered test's statistic per
column, missing counts, and whether distances are exact or from profiles (with their
error bounds).

Two ways through, chosen by size unless ``exact`` says otherwise:

* **exact** (both sides raw, at most :data:`EXACT_MAX_ROWS` rows together): sorted
  samples, the same numbers as scipy.
* **profiled** (larger data, or a precomputed reference :class:`Profile`): the
  reference is profiled once into fine equal-mass bins, the current window is counted
  in the same bins, and the tests read the counts. Costs about two passes over the
  data and keeps KS within ~0.002 of exact (the bound is in the report).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from evertrain.exceptions import DataValidationError, UsageError
from evertrain.monitor import columns as cols
from evertrain.monitor.decide import (
    DEFAULT_ALPHA,
    DEFAULT_CORRECTION,
    check_alpha,
    correction_name,
    decide,
)
from evertrain.monitor.profile_compare import (
    coarse_groups,
    compare_categorical_profiles,
    compare_numeric_profiles,
)
from evertrain.monitor.profiles import CategoricalProfile, NumericProfile, Profile
from evertrain.monitor.tests import (
    CATEGORICAL,
    NUMERIC,
    CategoricalComparison,
    ColumnKind,
    Comparison,
    NumericComparison,
    TestResult,
    available_tests,
    chi_square,
    compare_categorical,
    compare_numeric,
    finite_values,
    get_test,
)
from evertrain.monitor.verdicts import MISSING_SHARE_THRESHOLD, ColumnDrift, DriftReport, MissingCheck

if TYPE_CHECKING:
    pass

#: Above this many rows (reference and current together) the profiled path is used:
#: exact sorting costs ~75 ms per million values per column here, binning ~12 ms. At
#: 25,000 rows a side, the binned KS error (about 0.002) is a sixth of the KS statistic's
#: own sampling noise (about 0.012), so nothing a verdict rests on is lost.
EXACT_MAX_ROWS = 50_000
#: The default pair of tests per kind: (significance, effect).
DEFAULT_METHODS: dict[ColumnKind, tuple[str, str]] = {
    NUMERIC: ("ks", "wasserstein"),
    CATEGORICAL: ("chi_square", "jensen_shannon"),
}
#: Bars drawn per numeric column in the HTML report, and categories per categorical one.
PLOT_BINS = 40
PLOT_CATEGORIES = 20
#: Share of the reference left outside the plotted range on each side.
PLOT_TAIL = 0.005


# --------------------------------------------------------------------------- building


def _methods(methods: Mapping[str, tuple[str, str]] | None) -> dict[ColumnKind, tuple[str, str]]:
    out = dict(DEFAULT_METHODS)
    for kind, pair in (methods or {}).items():
        if kind not in out:
            raise UsageError(f"methods: kind must be numeric or categorical, got {kind!r}")
        if len(pair) != 2:
            raise UsageError(f"methods[{kind!r}]: expected (significance test, effect test), got {pair!r}")
        sig, eff = (get_test(pair[0], kind), get_test(pair[1], kind))
        if sig.role != "significance" or eff.role != "effect":
            raise UsageError(
                f"methods[{kind!r}]: {sig.name!r} must be a significance test and {eff.name!r} an effect test"
            )
        out[kind] = (sig.name, eff.name)
    return out


def _numeric_plot_exact(ref: np.ndarray, cur: np.ndarray) -> dict[str, Any]:
    if ref.size == 0:
        return {}
    # The range covers both sides, so a shifted current is drawn, not piled up at an end.
    r_lo, r_hi = np.quantile(ref, [PLOT_TAIL, 1 - PLOT_TAIL])
    c_lo, c_hi = np.quantile(cur, [PLOT_TAIL, 1 - PLOT_TAIL]) if cur.size else (r_lo, r_hi)
    lo, hi = min(r_lo, c_lo), max(r_hi, c_hi)
    if not hi > lo:
        lo, hi = float(ref.min()) - 0.5, float(ref.max()) + 0.5
    bounds = np.linspace(lo, hi, PLOT_BINS + 1)
    rc = np.histogram(np.clip(ref, lo, hi), bounds)[0]
    cc = np.histogram(np.clip(cur, lo, hi), bounds)[0]
    return {"bounds": bounds, "reference": rc / max(ref.size, 1), "current": cc / max(cur.size, 1)}


def _numeric_plot_binned(ref: NumericProfile, cur: NumericProfile) -> dict[str, Any]:
    edges, r, _ = ref.bins()
    _, c, _ = cur.bins()
    if edges.size < 2 or ref.count == 0:
        return {}
    groups = coarse_groups(r, PLOT_BINS)
    starts = np.concatenate(([0], groups + 1))
    bounds = np.concatenate(([edges[0]], edges[groups], [edges[-1]]))
    keep = np.diff(bounds) > 0
    rc = np.add.reduceat(r, starts) / ref.count
    cc = np.add.reduceat(c, starts) / max(cur.count, 1)
    if not keep.all():  # an outer group of zero width: fold it into its neighbour
        return {}
    return {"bounds": bounds, "reference": rc, "current": cc}


def _categorical_plot(comp: CategoricalComparison) -> dict[str, Any]:
    n_r, n_c = max(comp.n_reference, 1), max(comp.n_current, 1)
    order = np.argsort(-(comp.reference_counts / n_r + comp.current_counts / n_c), kind="stable")[
        :PLOT_CATEGORIES
    ]
    return {
        "categories": [comp.categories[i] for i in order],
        "reference": (comp.reference_counts[order] / n_r),
        "current": (comp.current_counts[order] / n_c),
    }


def _missing_p_value(miss_r: int, n_r: int, miss_c: int, n_c: int) -> float:
    """Chi-square test of the 2 x 2 table (missing, present) x (reference, current)."""
    return chi_square(np.array([miss_r, n_r - miss_r]), np.array([miss_c, n_c - miss_c]))[1]


@dataclass
class _Column:
    name: str
    kind: ColumnKind
    comparison: Comparison
    missing_ref: int
    missing_cur: int
    plot: dict[str, Any]


def _all_missing(name: str, role: str, n: int) -> DataValidationError:
    return DataValidationError(
        f"column {name!r} in {role}: all {n} values are missing; exclude it (columns=...) or fix the source"
    )


def _exact_columns(
    ref: pa.Table | cols.ColumnReader,
    cur: pa.Table | cols.ColumnReader,
    kinds: Mapping[str, ColumnKind],
    labels: tuple[str, str],
    progress: Callable[[int, int], None] | None = None,
) -> list[_Column]:
    out = []
    for name, kind in kinds.items():
        if kind == NUMERIC:
            r, miss_r = finite_values(cols.numeric_values(ref.column(name)))
            c, miss_c = finite_values(cols.numeric_values(cur.column(name)))
            if r.size == 0:
                raise _all_missing(name, labels[0], ref.num_rows)
            if c.size == 0:
                raise _all_missing(name, labels[1], cur.num_rows)
            comp: Comparison = compare_numeric(r, c)
            plot = _numeric_plot_exact(r, c)
        else:
            rc, miss_r = cols.category_counts(ref.column(name))
            cc, miss_c = cols.category_counts(cur.column(name))
            if not rc:
                raise _all_missing(name, labels[0], ref.num_rows)
            if not cc:
                raise _all_missing(name, labels[1], cur.num_rows)
            comp = compare_categorical(
                CategoricalProfile(rc, miss_r).with_missing(), CategoricalProfile(cc, miss_c).with_missing()
            )
            plot = _categorical_plot(comp)
        out.append(_Column(name, kind, comp, miss_r, miss_c, plot))
        if progress is not None:
            progress(len(out), len(kinds))
    return out


def _profiled_columns(
    ref: Profile, cur: Profile, names: Sequence[str], labels: tuple[str, str]
) -> list[_Column]:
    out = []
    for name in names:
        rp, cp = ref.columns[name], cur.columns[name]
        if rp.count == 0:
            raise _all_missing(name, labels[0], ref.n_rows)
        if cp.count == 0:
            raise _all_missing(name, labels[1], cur.n_rows)
        if isinstance(rp, NumericProfile) and isinstance(cp, NumericProfile):
            comp: Comparison = compare_numeric_profiles(rp, cp)
            plot = _numeric_plot_binned(rp, cp)
        elif isinstance(rp, CategoricalProfile) and isinstance(cp, CategoricalProfile):
            comp = compare_categorical_profiles(rp, cp)
            plot = _categorical_plot(comp)
        else:
            raise DataValidationError(
                f"column {name!r}: {rp.kind} in {labels[0]}, {cp.kind} in {labels[1]}; profiles must agree"
            )
        out.append(_Column(name, rp.kind, comp, rp.missing, cp.missing, plot))
    return out


def _told(progress: Callable[[str, int, int], None] | None, what: str) -> Callable[[int, int], None] | None:
    """``progress`` for one pass over the columns, named ``what``."""
    if progress is None:
        return None
    return lambda done, total: progress(what, done, total)


def drift(
    reference: Any,
    current: Any,
    *,
    columns: Sequence[str] | None = None,
    target: str | None = None,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    methods: Mapping[str, tuple[str, str]] | None = None,
    thresholds: Mapping[str, float] | None = None,
    alpha: float = DEFAULT_ALPHA,
    correction: str = DEFAULT_CORRECTION,
    drift_share: float | None = None,
    exact: bool | None = None,
    multivariate: bool = False,
    seed: int = 0,
    labels: tuple[str, str] = ("reference", "current"),
    progress: Callable[[str, int, int], None] | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference`` column by column and decide what drifted.

    ``reference`` and ``current`` are pyarrow, pandas or polars tables, column readers
    (:func:`evertrain.data.tables.open_table`: a Parquet file read column by column), or
    :class:`~evertrain.monitor.profiles.Profile` objects (a reference profile computed
    once and reused for every later window; a current profile built against it).

    Each column drifts when its significance test (KS or chi-square), corrected across
    the report (``correction``: Bonferroni by default, or Benjamini-Hochberg), is below
    ``alpha`` *and* its effect size (Wasserstein / reference sd, or Jensen-Shannon) is
    at least the threshold. ``methods`` picks other registered tests per kind, e.g.
    ``{"numeric": ("ks", "psi")}``; ``thresholds`` overrides effect thresholds by test
    name. The dataset drifts when any column does, or when at least ``drift_share`` of
    them do if given. ``target`` is reported apart and does not count in that share.
    ``progress`` is told ``(what, columns done, columns in all)`` as the columns are read:
    ``what`` is ``"columns compared"``, or ``"profiling <label>"`` for each side profiled.

    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    >>> cur = pd.DataFrame({"x": rng.normal(0.5, 1, size=5000), "c": rng.choice(["a", "b"], 5000)})
    >>> report = drift(ref, cur)
    >>> report.drifted_columns, report.dataset_drift
    (['x'], True)
    """
    check_alpha(alpha)
    correction = correction_name(correction)
    if drift_share is not None and not 0.0 < drift_share <= 1.0:
        raise UsageError(f"drift_share must be in (0, 1], got {drift_share!r}")
    pairs = _methods(methods)
    overrides = dict(thresholds or {})
    for name, value in overrides.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise UsageError(f"thresholds[{name!r}] must be a non-negative number, got {value!r}")

    ref_profile = reference if isinstance(reference, Profile) else None
    cur_profile = current if isinstance(current, Profile) else None
    ref_table = None if ref_profile is not None else cols.as_columns(reference, labels[0])
    cur_table = None if cur_profile is not None else cols.as_columns(current, labels[1])
    if ref_table is not None:
        cols.require_rows(ref_table, labels[0])
    if cur_table is not None:
        cols.require_rows(cur_table, labels[1])
    if ref_profile is None and cur_profile is not None:
        raise UsageError(
            "current is a Profile but reference is a table: profile the reference first and build "
            "the current profile against it"
        )

    # Columns and kinds come from the reference.
    skipped: dict[str, str] = {}
    if ref_profile is not None:
        kinds = ref_profile.kinds
        if columns is not None:
            unknown = [c for c in columns if c not in kinds]
            if unknown:
                raise DataValidationError(
                    f"{labels[0]} profile has no column {', '.join(map(repr, unknown))}"
                )
            kinds = {c: kinds[c] for c in columns}
        skipped = dict(ref_profile.skipped)
    else:
        assert ref_table is not None  # narrowed: exactly one of table/profile is set
        wanted = None if columns is None else list(dict.fromkeys([*columns, *([target] if target else [])]))
        kinds, skipped = cols.resolve_kinds(
            ref_table, columns=wanted, numeric=numeric, categorical=categorical, role=labels[0]
        )
    if target is not None and target not in kinds:
        raise DataValidationError(f"{labels[0]}: no monitored column named {target!r} (the target)")
    if not kinds:
        raise DataValidationError(f"{labels[0]}: no column to monitor (skipped: {skipped})")

    if cur_table is not None:
        absent = [c for c in kinds if c not in cur_table.column_names]
        if absent:
            raise DataValidationError(
                f"{labels[1]}: no column named {', '.join(map(repr, absent))}, which {labels[0]} has"
            )
        for name, kind in kinds.items():
            cols.check_compatible(name, kind, cur_table, labels[1])
    elif cur_profile is not None:
        absent = [c for c in kinds if c not in cur_profile.columns]
        if absent:
            raise DataValidationError(f"{labels[1]} profile has no column {', '.join(map(repr, absent))}")

    use_exact = ref_table is not None and cur_table is not None
    if use_exact and exact is None:
        assert ref_table is not None and cur_table is not None
        use_exact = ref_table.num_rows + cur_table.num_rows <= EXACT_MAX_ROWS
    elif exact and not use_exact:
        raise UsageError("exact=True needs raw tables on both sides, not profiles")
    elif exact is False:
        use_exact = False

    if use_exact:
        assert ref_table is not None and cur_table is not None
        built = _exact_columns(ref_table, cur_table, kinds, labels, _told(progress, "columns compared"))
        n_ref, n_cur = ref_table.num_rows, cur_table.num_rows
    else:
        if ref_profile is None:
            assert ref_table is not None
            ref_profile = Profile.from_table(
                ref_table,
                columns=list(kinds),
                numeric=[c for c, k in kinds.items() if k == NUMERIC],
                categorical=[c for c, k in kinds.items() if k == CATEGORICAL],
                sketch=False,
                role=labels[0],
                progress=_told(progress, f"profiling {labels[0]}"),
            )
        sub_ref = Profile({c: ref_profile.columns[c] for c in kinds}, ref_profile.n_rows)
        if cur_profile is None:
            assert cur_table is not None
            cur_profile = Profile.from_table(
                cur_table,
                reference=sub_ref,
                sketch=False,
                role=labels[1],
                progress=_told(progress, f"profiling {labels[1]}"),
            )
        built = _profiled_columns(ref_profile, cur_profile, list(kinds), labels)
        n_ref, n_cur = ref_profile.n_rows, cur_profile.n_rows

    # Every hypothesis of the report shares one budget.
    p_values: list[float | None] = []
    effects: list[float] = []
    limits: list[float] = []
    results: list[dict[str, TestResult]] = []
    for col in built:
        sig_name, eff_name = pairs[col.kind]
        res = {t.name: t(col.comparison) for t in available_tests(col.kind)}
        results.append(res)
        p_values.append(res[sig_name].p_value)
        effects.append(res[eff_name].statistic)
        limits.append(overrides.get(eff_name, get_test(eff_name, col.kind).default_threshold))
    missing_index: dict[int, int] = {}
    for i, col in enumerate(built):
        if col.kind == NUMERIC and (col.missing_ref or col.missing_cur):
            n_r = col.comparison.n_reference + col.missing_ref
            n_c = col.comparison.n_current + col.missing_cur
            missing_index[i] = len(p_values)
            p_values.append(_missing_p_value(col.missing_ref, n_r, col.missing_cur, n_c))
            effects.append(abs(col.missing_cur / n_c - col.missing_ref / n_r))
            limits.append(overrides.get("missing", MISSING_SHARE_THRESHOLD))
    verdicts = decide(p_values, effects, limits, alpha=alpha, correction=correction)

    out: dict[str, ColumnDrift] = {}
    target_drift: ColumnDrift | None = None
    for i, col in enumerate(built):
        sig_name, eff_name = pairs[col.kind]
        v = verdicts[i]
        n_r = col.comparison.n_reference + (col.missing_ref if col.kind == NUMERIC else 0)
        n_c = col.comparison.n_current + (col.missing_cur if col.kind == NUMERIC else 0)
        mv = verdicts[missing_index[i]] if i in missing_index else None
        missing = MissingCheck(
            col.missing_ref,
            col.missing_cur,
            col.missing_ref / n_r if n_r else 0.0,
            col.missing_cur / n_c if n_c else 0.0,
            p_value=None if mv is None else mv.p_value,
            p_value_adjusted=None if mv is None else mv.p_value_adjusted,
            threshold=overrides.get("missing", MISSING_SHARE_THRESHOLD),
            drifted=bool(mv is not None and mv.drifted),
        )
        comp = col.comparison
        is_exact = not isinstance(comp, NumericComparison) or comp.exact
        cd = ColumnDrift(
            name=col.name,
            kind=col.kind,
            significance_test=sig_name,
            effect_test=eff_name,
            statistic=results[i][sig_name].statistic,
            p_value=v.p_value,
            p_value_adjusted=v.p_value_adjusted,
            effect_size=v.effect_size,
            threshold=v.threshold,
            drifted=v.drifted or missing.drifted,
            tests=results[i],
            missing=missing,
            n_reference=comp.n_reference,
            n_current=comp.n_current,
            exact=is_exact,
            plot=col.plot,
        )
        if col.name == target:
            target_drift = cd
        else:
            out[col.name] = cd

    report = DriftReport(
        columns=out,
        n_reference=n_ref,
        n_current=n_cur,
        alpha=alpha,
        correction=correction,
        hypotheses=sum(p is not None for p in p_values),
        drift_share=drift_share,
        target=target_drift,
        skipped=skipped,
    )
    if multivariate:
        if ref_table is None or cur_table is None:
            raise UsageError("multivariate=True needs raw tables on both sides, not profiles")
        from evertrain.monitor.multivariate import domain_classifier_test, pca_reconstruction_test

        feats = [c for c in out]
        if isinstance(ref_table, cols.ColumnReader):
            ref_table = ref_table.read_all()
        if isinstance(cur_table, cols.ColumnReader):
            cur_table = cur_table.read_all()
        mv_results = [
            domain_classifier_test(ref_table, cur_table, columns=feats, alpha=alpha, seed=seed),
            pca_reconstruction_test(
                ref_table,
                cur_table,
                columns=[c for c in feats if out[c].kind == NUMERIC],
                alpha=alpha,
                seed=seed,
            ),
        ]
        report = DriftReport(
            **{**report.__dict__, "multivariate": tuple(r for r in mv_results if r is not None)}
        )
    return report


__all__ = ["EXACT_MAX_ROWS", "drift"]
