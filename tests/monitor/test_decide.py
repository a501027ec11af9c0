"""One false-alarm budget per report: the corrections and the effect x significance rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from evertrain.exceptions import UsageError
from evertrain.monitor.decide import adjust_p_values, correction_name, decide

p_lists = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=40)


def _step_up(p: np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini-Hochberg by its textbook definition.

    Reject the k smallest p-values, k the largest i with p_(i) <= i * alpha / m.
    """
    m = p.size
    order = np.argsort(p)
    ok = np.flatnonzero(p[order] <= alpha * np.arange(1, m + 1) / m)
    reject = np.zeros(m, dtype=bool)
    if ok.size:
        reject[order[: ok.max() + 1]] = True
    return reject


@settings(max_examples=200, deadline=None)
@given(p_lists, st.sampled_from([0.01, 0.05, 0.1]))
def test_benjamini_hochberg_matches_the_step_up_rule(p: list[float], alpha: float) -> None:
    arr = np.array(p)
    ranks = np.arange(1, arr.size + 1)
    # Exactly on a boundary, p * m / i and alpha * i / m may round apart: not a BH question.
    assume(not np.isclose(np.sort(arr) * arr.size / ranks, alpha, rtol=1e-9, atol=0).any())
    assert np.array_equal(adjust_p_values(arr, "benjamini-hochberg") <= alpha, _step_up(arr, alpha))


@settings(max_examples=200, deadline=None)
@given(p_lists)
def test_bonferroni_and_monotonicity(p: list[float]) -> None:
    arr = np.array(p)
    bonf = adjust_p_values(arr, "bonferroni")
    assert np.allclose(bonf, np.minimum(arr * arr.size, 1.0))
    bh = adjust_p_values(arr, "bh")
    assert (bh >= arr - 1e-15).all() and (bh <= bonf + 1e-15).all()


def test_effect_and_significance_both_needed() -> None:
    v = decide([1e-30, 0.5, 1e-30, None], [0.01, 0.5, 0.5, 0.2], [0.05, 0.05, 0.05, 0.1])
    assert [x.drifted for x in v] == [False, False, True, True]
    assert v[0].significant and not v[0].material  # huge sample, tiny shift
    assert v[1].material and not v[1].significant  # small sample, noise
    assert v[3].p_value_adjusted is None  # effect-only rules are not in the family


def test_bad_arguments() -> None:
    with pytest.raises(UsageError, match="correction must be one of"):
        correction_name("holm-ish")
    with pytest.raises(UsageError, match="alpha must be strictly between 0 and 1"):
        decide([0.1], [0.1], [0.1], alpha=1.5)
