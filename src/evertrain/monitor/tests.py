"""Univariate drift tests, registered by name and column kind.

A test never sees rows. It reads a *comparison*: a small summary of one column on
the reference side and the current side, built either exactly from the two samples
(:func:`compare_numeric`, :func:`compare_categorical`) or from mergeable profiles
(:mod:`evertrain.monitor.profiles`), in which case the comparison carries a stated
bound on how far each distance can be from the exact one. So one implementation of
each test serves raw tables, precomputed reference profiles and days of merged
serving-log profiles alike.

Each test has a *role*:

``significance``
    returns a p-value; its default threshold is the family-wide false-alarm rate
    (alpha), shared by every column of a report through the correction in
    :mod:`evertrain.monitor.decide`.
``effect``
    returns a distance; its default threshold is the smallest shift called
    material. A column drifts only when both say so, so that huge samples of one
    distribution flag nothing and small samples with a large shift still do.

Registered tests (kind, name, role, default threshold):

======== =============== ============ ===== =====================================================
numeric  ks              significance 0.01  Kolmogorov-Smirnov two-sample test
numeric  wasserstein     effect       0.05  Wasserstein-1 distance / reference standard deviation
numeric  psi             effect       0.1   population stability index on reference deciles
numeric  jensen_shannon  effect       0.1   Jensen-Shannon distance (base 2) on reference deciles
categ.   chi_square      significance 0.01  chi-square test of the 2 x K table of counts
categ.   psi             effect       0.1   population stability index on category shares
categ.   jensen_shannon  effect       0.05  Jensen-Shannon distance (base 2) on category shares
categ.   new_categories  effect       0.01  share of rows in categories seen on one side only
======== =============== ============ ===== =====================================================

Add your own with :func:`register_test`; a conformance test runs every registered
test on the same inputs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from evertrain.exceptions import UsageError
from evertrain.monitor.kolmogorov import kstwo_sf

ColumnKind = Literal["numeric", "categorical"]
Role = Literal["significance", "effect"]
NUMERIC: ColumnKind = "numeric"
CATEGORICAL: ColumnKind = "categorical"
KINDS: tuple[ColumnKind, ...] = (NUMERIC, CATEGORICAL)

#: Label under which missing values of a categorical column are counted: missing is a
#: category of its own, so a rise in missing values moves the distribution.
MISSING_LABEL = "(missing)"

#: Number of equal-mass reference bins for PSI and Jensen-Shannon on numeric columns.
#: Ten (deciles) is the convention under which PSI's usual 0.1 / 0.25 rules were set.
COARSE_BINS = 10

#: Share given to an empty bin before taking logarithms in PSI. Without a floor one
#: empty bin makes PSI infinite; 1e-4 is the customary floor and keeps a bin that is
#: empty on one side and holds 1% on the other at a PSI term of about 0.05.
PSI_EMPTY_SHARE = 1e-4

#: Up to this many rows on the larger side, KS p-values are exact (as scipy's
#: ``method="auto"`` does); above it the asymptotic Kolmogorov distribution is
#: within 1e-3 of the exact one and costs nothing.
KS_EXACT_MAX_N = 10_000


# --------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class NumericComparison:
    """What the numeric tests need to know about one column on both sides.

    ``ks_error`` and ``wasserstein_error`` bound how far ``ks_distance`` and
    ``wasserstein`` may lie below the exact values (0 when built from samples).
    ``reference_bins`` / ``current_bins`` are counts in equal-mass reference bins with
    inner edges ``bin_edges`` (bins are ``[edge_i, edge_i+1)``).
    """

    n_reference: int
    n_current: int
    ks_distance: float
    wasserstein: float
    spread: float
    reference_bins: np.ndarray
    current_bins: np.ndarray
    bin_edges: np.ndarray
    ks_error: float = 0.0
    wasserstein_error: float = 0.0
    ks_p_value: float | None = None

    @property
    def exact(self) -> bool:
        return self.ks_error == 0.0 and self.wasserstein_error == 0.0


@dataclass(frozen=True)
class CategoricalComparison:
    """Counts per category on both sides, over the union of categories seen.

    Missing values are counted under :data:`MISSING_LABEL`.
    """

    categories: tuple[str, ...]
    reference_counts: np.ndarray
    current_counts: np.ndarray

    @property
    def n_reference(self) -> int:
        return int(self.reference_counts.sum())

    @property
    def n_current(self) -> int:
        return int(self.current_counts.sum())


Comparison = NumericComparison | CategoricalComparison


@dataclass(frozen=True)
class TestResult:
    """One test's answer: a statistic, a p-value for significance tests, and details."""

    __test__ = False  # not a pytest test class, despite the name

    statistic: float
    p_value: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftTest:
    """A registered univariate test: its name, column kind, role and default threshold."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    kind: ColumnKind
    role: Role
    default_threshold: float
    reason: str
    compute: Callable[[Any], TestResult]

    def __call__(self, comparison: Comparison) -> TestResult:
        return self.compute(comparison)


_REGISTRY: dict[tuple[ColumnKind, str], DriftTest] = {}


def register_test(test: DriftTest, *, replace: bool = False) -> DriftTest:
    """Add ``test`` to the registry under ``(test.kind, test.name)``."""
    if test.kind not in KINDS:
        raise UsageError(f"drift test {test.name!r}: kind must be one of {KINDS}, got {test.kind!r}")
    if test.role not in ("significance", "effect"):
        raise UsageError(f"drift test {test.name!r}: role must be significance or effect, got {test.role!r}")
    key = (test.kind, test.name)
    if key in _REGISTRY and not replace:
        raise UsageError(f"drift test {test.name!r} for {test.kind} columns is already registered")
    _REGISTRY[key] = test
    return test


def get_test(name: str, kind: ColumnKind) -> DriftTest:
    """The registered test ``name`` for columns of ``kind``; the error lists the known ones."""
    try:
        return _REGISTRY[(kind, name)]
    except KeyError:
        known = ", ".join(sorted(t.name for t in _REGISTRY.values() if t.kind == kind))
        raise UsageError(f"no drift test {name!r} for {kind} columns; known: {known}") from None


def available_tests(kind: ColumnKind | None = None) -> list[DriftTest]:
    """Registered tests, optionally only those of one column kind, sorted by kind and name."""
    return sorted(
        (t for t in _REGISTRY.values() if kind is None or t.kind == kind), key=lambda t: (t.kind, t.name)
    )


# --------------------------------------------------------------------------- exact comparisons


def finite_values(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite values of a float array and how many were missing (NaN) or infinite."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    if finite.all():
        return x, 0
    return x[finite], int(x.size - np.count_nonzero(finite))


def spread_of(reference_std: float, pooled_std: float) -> float:
    """The scale that normalises a numeric distance.

    The reference standard deviation; when the reference is constant, the pooled one;
    when both sides are the same constant, 1 (the distance is then 0 anyway).
    """
    if reference_std > 0 and math.isfinite(reference_std):
        return reference_std
    if pooled_std > 0 and math.isfinite(pooled_std):
        return pooled_std
    return 1.0


def coarse_edges(reference_sorted: np.ndarray, n_bins: int = COARSE_BINS) -> np.ndarray:
    """Inner edges of ``n_bins`` equal-mass bins of a sorted reference (ties merged)."""
    if reference_sorted.size == 0:
        return np.empty(0)
    qs = np.quantile(reference_sorted, np.arange(1, n_bins) / n_bins)
    return np.unique(qs)


def bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of sorted values in the bins ``(-inf, e0), [e0, e1), ..., [e_last, inf)``."""
    cuts = np.searchsorted(sorted_values, edges, side="left")
    bounds = np.concatenate(([0], cuts, [sorted_values.size]))
    return np.diff(bounds).astype(np.int64)


def _pooled_std(a: np.ndarray, b: np.ndarray) -> float:
    n = a.size + b.size
    if n == 0:
        return 0.0
    mean = (a.sum() + b.sum()) / n
    return float(math.sqrt((np.square(a - mean).sum() + np.square(b - mean).sum()) / n))


def ks_exact_p_value(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> float:
    """Exact two-sided KS p-value through scipy (which falls back to asymptotic if it must)."""
    from scipy import stats  # exact samples are small; scipy.stats is not imported for profiles

    with warnings.catch_warnings():
        # scipy warns when it switches from exact to asymptotic; that switch is what we want.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ks_2samp(reference_sorted, current_sorted, method="exact").pvalue)


def ks_asymptotic_p_value(d: float, n1: int, n2: int) -> float:
    """Two-sided KS p-value from Smirnov's limit distribution (scipy's ``method="asymp"``).

    ``scipy.stats.kstwo.sf``, evaluated by :func:`~evertrain.monitor.kolmogorov.kstwo_sf`.
    """
    if n1 == 0 or n2 == 0:
        return 1.0
    m, n = sorted((float(n1), float(n2)), reverse=True)
    en = m * n / (m + n)
    return float(np.clip(kstwo_sf(d, float(np.round(en))), 0.0, 1.0))


def compare_numeric(reference: np.ndarray, current: np.ndarray) -> NumericComparison:
    """Exact comparison of two numeric samples (non-finite values are dropped; count them first).

    The KS distance and Wasserstein-1 distance come from one merge of the two sorted
    samples: both empirical CDFs are evaluated at every value of either sample, the
    way scipy evaluates them, so the results equal scipy's.
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    cur = np.sort(np.asarray(current, dtype=np.float64))
    n1, n2 = ref.size, cur.size
    ref_std = float(ref.std()) if n1 else 0.0
    spread = spread_of(ref_std, _pooled_std(ref, cur))
    edges = coarse_edges(ref)
    if n1 == 0 or n2 == 0:
        return NumericComparison(
            n1, n2, 0.0, 0.0, spread, bin_counts(ref, edges), bin_counts(cur, edges), edges, ks_p_value=1.0
        )
    # Two sorted runs: a stable sort (timsort) merges them in linear time.
    merged = np.sort(np.concatenate((ref, cur)), kind="stable")
    cdf_diff = (
        np.searchsorted(ref, merged, side="right") / n1 - np.searchsorted(cur, merged, side="right") / n2
    )
    abs_diff = np.abs(cdf_diff)
    d = float(abs_diff.max())
    w = float(np.sum(np.multiply(abs_diff[:-1], np.diff(merged))))
    p = ks_exact_p_value(ref, cur) if max(n1, n2) <= KS_EXACT_MAX_N else ks_asymptotic_p_value(d, n1, n2)
    return NumericComparison(
        n_reference=n1,
        n_current=n2,
        ks_distance=d,
        wasserstein=w,
        spread=spread,
        reference_bins=bin_counts(ref, edges),
        current_bins=bin_counts(cur, edges),
        bin_edges=edges,
        ks_p_value=p,
    )


def compare_categorical(
    reference_counts: Mapping[str, int], current_counts: Mapping[str, int]
) -> CategoricalComparison:
    """Comparison from category counts on both sides (missing under :data:`MISSING_LABEL`).

    Categories are ordered by reference count (largest first), then new ones by
    current count, so reports and plots read naturally.
    """
    ref_order = sorted((k for k, v in reference_counts.items() if v > 0), key=lambda k: -reference_counts[k])
    new = sorted(
        (k for k, v in current_counts.items() if v > 0 and reference_counts.get(k, 0) == 0),
        key=lambda k: -current_counts[k],
    )
    cats = tuple(ref_order + new)
    ref = np.array([reference_counts.get(c, 0) for c in cats], dtype=np.int64)
    cur = np.array([current_counts.get(c, 0) for c in cats], dtype=np.int64)
    return CategoricalComparison(cats, ref, cur)


# --------------------------------------------------------------------------- distances


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(counts.shape, dtype=np.float64)


def jensen_shannon_distance(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2 (in [0, 1]), between two count vectors."""
    p, q = _shares(np.asarray(p_counts, float)), _shares(np.asarray(q_counts, float))
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    js = 0.5 * (kl(p) + kl(q))
    return float(math.sqrt(max(js, 0.0)))


def population_stability_index(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """PSI = sum (q - p) ln(q / p) over bins, empty shares floored at :data:`PSI_EMPTY_SHARE`."""
    p = np.maximum(_shares(np.asarray(p_counts, float)), PSI_EMPTY_SHARE)
    q = np.maximum(_shares(np.asarray(q_counts, float)), PSI_EMPTY_SHARE)
    return float(np.sum((q - p) * np.log(q / p)))


def chi_square(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int]:
    """Pearson's chi-square test of homogeneity on the 2 x K table (no continuity correction)."""
    table = np.vstack((ref_counts, cur_counts)).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    from scipy import special  # chdtrc is what scipy.stats.chi2.sf evaluates

    return stat, float(special.chdtrc(dof, stat)), dof


# --------------------------------------------------------------------------- the tests


def _ks(c: NumericComparison) -> TestResult:
    p = c.ks_p_value
    if p is None:
        p = ks_asymptotic_p_value(c.ks_distance, c.n_reference, c.n_current)
    details = {"error_bound": c.ks_error} if c.ks_error else {}
    return TestResult(c.ks_distance, p, details)


def _wasserstein(c: NumericComparison) -> TestResult:
    details: dict[str, Any] = {"distance": c.wasserstein, "spread": c.spread}
    if c.wasserstein_error:
        details["error_bound"] = c.wasserstein_error / c.spread
    return TestResult(c.wasserstein / c.spread, None, details)


def _psi_numeric(c: NumericComparison) -> TestResult:
    return TestResult(population_stability_index(c.reference_bins, c.current_bins))


def _js_numeric(c: NumericComparison) -> TestResult:
    return TestResult(jensen_shannon_distance(c.reference_bins, c.current_bins))


def _chi_square(c: CategoricalComparison) -> TestResult:
    stat, p, dof = chi_square(c.reference_counts, c.current_counts)
    return TestResult(stat, p, {"dof": dof})


def _psi_categorical(c: CategoricalComparison) -> TestResult:
    return TestResult(population_stability_index(c.reference_counts, c.current_counts))


def _js_categorical(c: CategoricalComparison) -> TestResult:
    return TestResult(jensen_shannon_distance(c.reference_counts, c.current_counts))


#: How many category names a report lists for new or vanished categories.
MAX_LISTED_CATEGORIES = 10


def _new_categories(c: CategoricalComparison) -> TestResult:
    ref, cur = c.reference_counts, c.current_counts
    new = (ref == 0) & (cur > 0)
    vanished = (ref > 0) & (cur == 0)
    new_share = float(cur[new].sum() / cur.sum()) if cur.sum() else 0.0
    vanished_share = float(ref[vanished].sum() / ref.sum()) if ref.sum() else 0.0
    names = np.array(c.categories, dtype=object)
    return TestResult(
        new_share + vanished_share,
        None,
        {
            "new": [str(x) for x in names[new][:MAX_LISTED_CATEGORIES]],
            "vanished": [str(x) for x in names[vanished][:MAX_LISTED_CATEGORIES]],
            "new_share": new_share,
            "vanished_share": vanished_share,
        },
    )


for _test in (
    DriftTest(
        "ks",
        NUMERIC,
        "significance",
        0.01,
        "family-wide false-alarm rate of a report (decide.DEFAULT_ALPHA), split across columns by "
        "the correction. KS is distribution-free and sensitive to shifts in location and in spread.",
        _ks,
    ),
    DriftTest(
        "wasserstein",
        NUMERIC,
        "effect",
        0.05,
        "a shift of one twentieth of the reference standard deviation. Half the 0.1 used elsewhere "
        "as the only rule, because a true 0.1-sd shift is estimated below 0.1 about half the time; "
        "two samples of one distribution stay near 0.015 at 10,000 rows and 0.0015 at 1,000,000.",
        _wasserstein,
    ),
    DriftTest(
        "psi",
        NUMERIC,
        "effect",
        0.1,
        "the industry convention for PSI on ten equal-mass bins: below 0.1 no significant change.",
        _psi_numeric,
    ),
    DriftTest(
        "jensen_shannon",
        NUMERIC,
        "effect",
        0.1,
        "on reference deciles a mean shift of a normal feature by 0.1 sd gives 0.042 and by 0.25 sd "
        "about 0.1 (base 2): the rule commonly used with it, for comparable reports.",
        _js_numeric,
    ),
    DriftTest(
        "chi_square",
        CATEGORICAL,
        "significance",
        0.01,
        "family-wide false-alarm rate of a report, as for ks.",
        _chi_square,
    ),
    DriftTest(
        "psi",
        CATEGORICAL,
        "effect",
        0.1,
        "the industry convention for PSI: below 0.1 no significant change.",
        _psi_categorical,
    ),
    DriftTest(
        "jensen_shannon",
        CATEGORICAL,
        "effect",
        0.05,
        "about the distance (base 2) that a 0.1-sd mean shift gives a normal feature (0.042), so "
        "categorical and numeric columns share one notion of material; a new category at 5% of rows "
        "gives 0.16, moving 10% of rows between two of four categories about 0.1.",
        _js_categorical,
    ),
    DriftTest(
        "new_categories",
        CATEGORICAL,
        "effect",
        0.01,
        "one row in a hundred in a category that the other side never had: small enough to catch a "
        "new code early, large enough to ignore a stray typo.",
        _new_categories,
    ),
):
    register_test(_test)

__all__ = [
    "CATEGORICAL",
    "KINDS",
    "MISSING_LABEL",
    "NUMERIC",
    "CategoricalComparison",
    "ColumnKind",
    "Comparison",
    "DriftTest",
    "NumericComparison",
    "TestResult",
    "available_tests",
    "chi_square",
    "compare_categorical",
    "compare_numeric",
    "finite_values",
    "get_test",
    "jensen_shannon_distance",
    "population_stability_index",
    "register_test",
]
