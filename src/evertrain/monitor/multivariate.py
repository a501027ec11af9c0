"""Multivariate drift: changes that no single column shows, such as a changed correlation.

Two tests, both returning a :class:`MultivariateResult` with the same effect x
significance rule as the univariate ones:

domain classifier
    A gradient-boosted classifier learns to tell reference rows from current rows,
    cross-fitted so every row is scored by a model that did not see it. Its ROC AUC is
    0.5 when the two sets cannot be told apart. The threshold is calibrated by
    permutation: the labels are shuffled against the out-of-fold scores many times,
    and the (1 - alpha) quantile of those AUCs is what chance reaches at this sample
    size. The set drifts when the AUC is above that *and* above :data:`MIN_AUC`.
PCA reconstruction error
    Principal components fitted on half the (standardised) reference keep
    :data:`PCA_VARIANCE` of its variance. Rows whose columns no longer co-vary as they
    did reconstruct worse. The set drifts when the current rows' mean error exceeds
    the held-out reference rows' by :data:`MIN_ERROR_RATIO` and a one-sided
    Mann-Whitney test agrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import stats

from evertrain.exceptions import DataValidationError
from evertrain.monitor import columns as cols
from evertrain.monitor.tests import NUMERIC

#: Rows sampled from each side. The AUC's standard error at 5,000 + 5,000 rows is about
#: 0.006, well below the material size, and fitting stays under a second or two.
MAX_ROWS = 5_000
#: Label permutations for the null distribution of the AUC; 1,000 resolve alpha = 0.01
#: to about +-0.003.
N_PERMUTATIONS = 1_000
#: Smallest AUC called material. A 0.1-sd mean shift of one normal feature allows at
#: best an AUC of 0.528 and a 0.2-sd shift 0.556; so 0.55 is about the separability of a
#: 0.2-sd shift, twice the univariate material size, as befits a test over all columns.
MIN_AUC = 0.55
#: Boosting rounds of the domain classifier: 50 small trees find interactions such as a
#: changed correlation while a fit on 10,000 rows stays around a second on one core.
DOMAIN_CLASSIFIER_ROUNDS = 50
DOMAIN_CLASSIFIER_THREADS = 1
#: Share of the reference variance the principal components keep.
PCA_VARIANCE = 0.9
#: Smallest rise of the mean reconstruction error called material (10%).
MIN_ERROR_RATIO = 1.1
#: Categories per column kept as codes for the domain classifier; the rest share one.
MAX_CODES = 50


@dataclass(frozen=True)
class MultivariateResult:
    """A multivariate test's verdict."""

    method: str
    statistic: float
    threshold: float
    p_value: float | None
    drifted: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "p_value": self.p_value,
            "drifted": self.drifted,
            **self.details,
        }


def _sample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=limit, replace=False)) if n > limit else np.arange(n)


def _matrices(
    ref: pa.Table, cur: pa.Table, names: Sequence[str], rng: np.random.Generator, limit: int
) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Float feature matrices (NaN for missing; categories as reference-ordered codes)."""
    ri, ci = _sample(ref.num_rows, limit, rng), _sample(cur.num_rows, limit, rng)
    ref_s, cur_s = ref.take(pa.array(ri)), cur.take(pa.array(ci))
    xr, xc, is_cat = [], [], []
    for name in names:
        kind = cols.kind_of(ref.schema.field(name).type)
        if kind == NUMERIC:
            xr.append(cols.numeric_values(ref_s.column(name)))
            xc.append(cols.numeric_values(cur_s.column(name)))
            is_cat.append(False)
        else:
            counts, _ = cols.category_counts(ref_s.column(name))
            top = sorted(counts, key=lambda k: -counts[k])[:MAX_CODES]
            code = {k: float(i) for i, k in enumerate(top)}
            other = float(len(top))

            def encode(
                column: pa.ChunkedArray, code: dict[str, float] = code, other: float = other
            ) -> np.ndarray:
                arr = column.combine_chunks()
                enc = arr if pa.types.is_dictionary(arr.type) else arr.dictionary_encode()
                labels = enc.dictionary.cast(pa.string()).to_pylist()  # one entry per distinct value
                lookup = np.array([code.get(v, other) for v in labels] + [np.nan])
                index = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
                return lookup[index]  # -1 (missing) picks the trailing NaN

            xr.append(encode(ref_s.column(name)))
            xc.append(encode(cur_s.column(name)))
            is_cat.append(True)
    return np.column_stack(xr), np.column_stack(xc), is_cat


def permutation_threshold(
    scores: np.ndarray, y: np.ndarray, auc: float, rng: np.random.Generator, n_permutations: int, alpha: float
) -> tuple[float, float]:
    """The AUC chance reaches at this sample size (the ``1 - alpha`` quantile) and ``auc``'s p-value.

    The null is the same AUC under shuffled labels: the Mann-Whitney rank sum of the rows
    drawn as "current", so the scores are ranked once rather than sorted per draw.
    """
    ranks = stats.rankdata(scores)
    n1 = int(y.sum())
    n0 = y.size - n1
    null = np.empty(n_permutations)
    for i in range(n_permutations):
        pick = rng.permutation(y.size)[:n1]
        null[i] = (ranks[pick].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    chance = float(np.quantile(null, 1 - alpha))
    return chance, float((1 + np.count_nonzero(null >= auc)) / (1 + n_permutations))


def domain_classifier_test(
    reference: Any,
    current: Any,
    *,
    columns: Sequence[str] | None = None,
    max_rows: int = MAX_ROWS,
    n_permutations: int = N_PERMUTATIONS,
    alpha: float = 0.01,
    min_auc: float = MIN_AUC,
    seed: int = 0,
) -> MultivariateResult:
    """Can a classifier tell current rows from reference rows? See the module docstring."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    ref, cur = cols.as_table(reference, "reference"), cols.as_table(current, "current")
    names = [
        c
        for c in (columns if columns is not None else ref.column_names)
        if c in cur.column_names and cols.kind_of(ref.schema.field(c).type) is not None
    ]
    if not names:
        raise DataValidationError("domain classifier: no column to compare")
    rng = np.random.default_rng(seed)
    xr, xc, is_cat = _matrices(ref, cur, names, rng, max_rows)
    x = np.vstack((xr, xc))
    y = np.concatenate((np.zeros(len(xr)), np.ones(len(xc))))
    scores = np.empty(y.size)
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    # At most 5,000 rows a side, one OpenMP thread fits about as fast as several and
    # does not fight the rest of the process (or its neighbours) for the cores.
    with threadpool_limits(limits=DOMAIN_CLASSIFIER_THREADS, user_api="openmp"):
        for train, test in folds.split(x, y):
            model = HistGradientBoostingClassifier(
                max_iter=DOMAIN_CLASSIFIER_ROUNDS,
                max_leaf_nodes=15,
                early_stopping=False,
                random_state=seed,
                categorical_features=is_cat,
            )
            model.fit(x[train], y[train])
            scores[test] = model.predict_proba(x[test])[:, 1]
    auc = float(roc_auc_score(y, scores))  # both sides have rows: the AUC is defined
    chance, p_value = permutation_threshold(scores, y, auc, rng, n_permutations, alpha)
    threshold = max(chance, min_auc)
    return MultivariateResult(
        "domain_classifier",
        auc,
        threshold,
        p_value,
        bool(auc > threshold),
        {"chance_auc": chance, "min_auc": min_auc, "n_reference": len(xr), "n_current": len(xc)},
    )


def pca_reconstruction_test(
    reference: Any,
    current: Any,
    *,
    columns: Sequence[str] | None = None,
    variance: float = PCA_VARIANCE,
    max_rows: int = MAX_ROWS * 2,
    alpha: float = 0.01,
    min_ratio: float = MIN_ERROR_RATIO,
    seed: int = 0,
) -> MultivariateResult | None:
    """Do current rows reconstruct worse from the reference's principal components?

    Numeric columns only; returns None when fewer than two are given.
    """
    ref, cur = cols.as_table(reference, "reference"), cols.as_table(current, "current")
    names = [
        c
        for c in (columns if columns is not None else ref.column_names)
        if c in cur.column_names and cols.kind_of(ref.schema.field(c).type) == NUMERIC
    ]
    if len(names) < 2:
        return None
    rng = np.random.default_rng(seed)
    xr, xc, _ = _matrices(ref, cur, names, rng, max_rows)
    mean = np.nanmean(xr, axis=0)
    std = np.nanstd(xr, axis=0)
    std[~(std > 0)] = 1.0
    zr = np.nan_to_num((xr - mean) / std)  # missing -> the reference mean
    zc = np.nan_to_num((xc - mean) / std)
    order = rng.permutation(len(zr))
    fit, held = zr[order[: len(zr) // 2]], zr[order[len(zr) // 2 :]]
    if len(fit) < len(names) or len(held) == 0:
        return None
    _, s, vt = np.linalg.svd(fit - fit.mean(axis=0), full_matrices=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(share, variance) + 1)
    basis = vt[:k]
    center = fit.mean(axis=0)

    def error(z: np.ndarray) -> np.ndarray:
        d = z - center
        return np.sum((d - (d @ basis.T) @ basis) ** 2, axis=1)

    err_ref, err_cur = error(held), error(zc)
    base = float(err_ref.mean())
    ratio = float(err_cur.mean() / base) if base > 0 else (1.0 if err_cur.mean() == 0 else float("inf"))
    p_value = float(stats.mannwhitneyu(err_cur, err_ref, alternative="greater").pvalue)
    return MultivariateResult(
        "pca_reconstruction",
        ratio,
        min_ratio,
        p_value,
        bool(ratio >= min_ratio and p_value < alpha),
        {
            "components": k,
            "columns": len(names),
            "reference_error": base,
            "current_error": float(err_cur.mean()),
        },
    )


__all__ = ["MultivariateResult", "domain_classifier_test", "pca_reconstruction_test"]
