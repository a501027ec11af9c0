"""Multivariate tests catch a changed correlation that no single column shows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from evertrain.monitor import domain_classifier_test, drift, pca_reconstruction_test


def _table(rho: float, seed: int, n: int = 2_000) -> pa.Table:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    cols = {"a": z[:, 0], "b": rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1]}
    for i in range(3):
        cols[f"n{i}"] = rng.normal(size=n)
    cols["c"] = np.array(["x", "y", "z"])[rng.integers(0, 3, n)]
    return pa.table(cols)


def test_changed_correlation_is_found_by_both_and_by_no_single_column() -> None:
    ref, same, broken = _table(0.9, 1), _table(0.9, 2), _table(0.0, 3)
    kw = {"max_rows": 1_500, "n_permutations": 200}
    assert not domain_classifier_test(ref, same, **kw).drifted
    found = domain_classifier_test(ref, broken, **kw)
    assert found.drifted and found.statistic > found.threshold >= 0.55
    assert not pca_reconstruction_test(ref, same).drifted
    assert pca_reconstruction_test(ref, broken).drifted
    report = drift(ref, broken, multivariate=True)
    assert report.drifted_columns == []  # the marginals did not move
    assert report.dataset_drift  # the joint distribution did
    assert {m["method"] for m in report.to_dict()["multivariate"]} == {
        "domain_classifier",
        "pca_reconstruction",
    }
