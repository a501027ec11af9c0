"""The paired bootstrap: coverage of its interval, pairing, and the multiple-comparison helpers."""

from __future__ import annotations

import numpy as np
import pytest

from evertrain.evaluate.bootstrap import bonferroni, holm, p_value_below, paired_bootstrap, resample_counts
from evertrain.evaluate.metrics import Outputs, get_metric
from evertrain.exceptions import UsageError

REPETITIONS = 400
ROWS = 600
N_BOOT = 1000
P_CHAMPION, P_CHALLENGER = 0.80, 0.83
#: Both models err on the same hard rows this often: pairing must exploit that.
SHARED_ERRORS = 0.6


def _pair(rng: np.random.Generator) -> tuple[Outputs, Outputs]:
    """Simulated holdout rows scored by two correlated models with known accuracies."""
    u = rng.uniform(size=ROWS)
    v = np.where(rng.uniform(size=ROWS) < SHARED_ERRORS, u, rng.uniform(size=ROWS))
    champion_right, challenger_right = u < P_CHAMPION, v < P_CHALLENGER
    y = rng.integers(0, 2, ROWS)

    def outputs(right: np.ndarray) -> Outputs:
        return Outputs.classification(y, np.where(right == (y == 1), 0.9, 0.1))

    return outputs(challenger_right), outputs(champion_right)


def test_interval_covers_the_true_difference_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(20260101)
    true_difference = P_CHALLENGER - P_CHAMPION
    accuracy = get_metric("accuracy")
    covered = 0
    for repetition in range(REPETITIONS):
        challenger, champion = _pair(rng)
        result = paired_bootstrap(
            accuracy, challenger, champion, n_boot=N_BOOT, confidence=0.95, seed=repetition
        )
        covered += result.low <= true_difference <= result.high
    coverage = covered / REPETITIONS
    assert 0.93 <= coverage <= 0.97, coverage


def test_pairing_gives_a_tighter_interval_than_ignoring_it() -> None:
    challenger, champion = _pair(np.random.default_rng(3))
    accuracy = get_metric("accuracy")
    paired = paired_bootstrap(accuracy, challenger, champion, n_boot=N_BOOT, confidence=0.95, seed=1)
    shuffled = champion.take(np.random.default_rng(4).permutation(ROWS))
    unpaired_width = (
        2 * 1.96 * np.sqrt(sum(accuracy(o) * (1 - accuracy(o)) / ROWS for o in (challenger, shuffled)))
    )
    assert paired.high - paired.low < unpaired_width


def test_same_seed_same_interval_and_blocks_cover_every_resample() -> None:
    challenger, champion = _pair(np.random.default_rng(5))
    auc = get_metric("roc_auc")
    a = paired_bootstrap(auc, challenger, champion, n_boot=300, confidence=0.9, seed=9)
    b = paired_bootstrap(auc, challenger, champion, n_boot=300, confidence=0.9, seed=9)
    assert (a.low, a.high) == (b.low, b.high) and a.n_valid == 300
    blocks = list(resample_counts(5, 7, seed=0))
    assert sum(len(b) for b in blocks) == 7 and all((b.sum(axis=1) == 5).all() for b in blocks)


def test_pairs_must_share_rows() -> None:
    a = Outputs.classification([0, 1], [0.2, 0.8])
    b = Outputs.classification([1, 1], [0.2, 0.8])
    with pytest.raises(UsageError, match="same rows"):
        paired_bootstrap(get_metric("accuracy"), a, b, n_boot=10, confidence=0.95, seed=0)


def test_holm_bonferroni_and_p_values() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert bonferroni([0.01, 0.5]) == [0.02, 1.0]
    assert p_value_below(np.array([-3.0, -2.0, -1.0]), 0.0) == pytest.approx(1 / 4)
    assert p_value_below(np.array([1.0, 2.0, 3.0]), 0.0) == 1.0
