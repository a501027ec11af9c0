"""Multiple-testing corrections agree with their textbook rules, and NaN stays out of the way."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from evertrain.monitor.corrections import benjamini_hochberg, bonferroni, holm

p_lists = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=40)


def _holm_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm by its textbook definition: step down through the sorted p-values while
    p_(k) <= alpha / (m - k + 1), rejecting each one passed."""
    m = p.size
    reject = np.zeros(m, dtype=bool)
    for k, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - k):
            break
        reject[i] = True
    return reject


@settings(max_examples=200, deadline=None)
@given(p_lists, st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_matches_the_step_down_rule(p: list[float], alpha: float) -> None:
    arr = np.array(p)
    # Exactly on a boundary, p * (m - k) and alpha may round apart: not a Holm question.
    assume(not np.isclose(np.sort(arr) * (arr.size - np.arange(arr.size)), alpha, rtol=1e-9, atol=0).any())
    assert np.array_equal(np.array(holm(p)) <= alpha, _holm_rejects(arr, alpha))


@settings(max_examples=200, deadline=None)
@given(p_lists)
def test_holm_lies_between_the_p_values_and_bonferroni(p: list[float]) -> None:
    h, b = np.array(holm(p)), np.array(bonferroni(p))
    assert (h >= np.array(p) - 1e-12).all() and (h <= b + 1e-12).all()
    bh = np.array(benjamini_hochberg(p))
    assert (bh <= h + 1e-12).all()  # the false discovery rate is the looser promise


def test_known_values_and_edge_cases() -> None:
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert bonferroni([0.01, 0.5]) == [0.02, 1.0]
    assert benjamini_hochberg([0.5, 0.6, 0.1, 0.001]) == pytest.approx([0.6, 0.6, 0.2, 0.004])
    assert holm([]) == bonferroni([]) == benjamini_hochberg([]) == []
    # a NaN p-value stays NaN and counts in the family, so the others are not made looser
    for correct in (holm, bonferroni, benjamini_hochberg):
        out = correct([0.01, math.nan])
        assert math.isnan(out[1]) and out[0] == pytest.approx(0.02), correct.__name__
