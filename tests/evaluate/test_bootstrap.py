"""The paired bootstrap: coverage of its interval, pairing, and the multiple-comparison helpers."""

from __future__ import annotations

import numpy as np
import pytest

from evertrain.evaluate import bootstrap as bootstrap_module
from evertrain.evaluate.bootstrap import p_value_below, paired_bootstrap, resample_counts
from evertrain.evaluate.metrics import Outputs, get_metric
from evertrain.exceptions import UsageError
from evertrain.monitor.corrections import bonferroni, holm

REPETITIONS = 400
ROWS = 600
N_BOOT = 1000
P_CHAMPION, P_CHALLENGER = 0.80, 0.83
#: Both models err on the same hard rows this often: pairing must exploit that.
SHARED_ERRORS = 0.6


def _pair(rng: np.random.Generator, rows: int = ROWS) -> tuple[Outputs, Outputs]:
    """Simulated holdout rows scored by two correlated models with known accuracies."""
    u = rng.uniform(size=rows)
    v = np.where(rng.uniform(size=rows) < SHARED_ERRORS, u, rng.uniform(size=rows))
    champion_right, challenger_right = u < P_CHAMPION, v < P_CHALLENGER
    y = rng.integers(0, 2, rows)

    def outputs(right: np.ndarray) -> Outputs:
        return Outputs.classification(y, np.where(right == (y == 1), 0.9, 0.1))

    return outputs(challenger_right), outputs(champion_right)


#: The true difference of each metric in the simulation: accuracy directly; Brier, with
#: probabilities 0.9 or 0.1 on the true class, is 0.01 per right row and 0.81 per wrong one.
TRUE_DIFFERENCE = {
    "accuracy": P_CHALLENGER - P_CHAMPION,
    "brier": -0.8 * (P_CHALLENGER - P_CHAMPION),
}


def coverage(metric_name: str, seed: int, rows: int = ROWS) -> float:
    """Share of REPETITIONS simulated holdouts whose 95% interval holds the true difference."""
    rng = np.random.default_rng(seed)
    metric = get_metric(metric_name)
    covered = 0
    for repetition in range(REPETITIONS):
        challenger, champion = _pair(rng)
        result = paired_bootstrap(
            metric, challenger, champion, n_boot=N_BOOT, confidence=0.95, seed=repetition
        )
        covered += result.low <= TRUE_DIFFERENCE[metric_name] <= result.high
    return covered / REPETITIONS


# accuracy is resampled by (label, class, class) combination, brier by rows: both paths are
# checked; the row path on fewer rows, since its cost grows with them.
@pytest.mark.parametrize(("metric_name", "rows"), [("accuracy", ROWS), ("brier", ROWS // 2)])
def test_interval_covers_the_true_difference_about_95_percent_of_the_time(
    metric_name: str, rows: int
) -> None:
    assert 0.93 <= coverage(metric_name, seed=20260101, rows=rows) <= 0.97


def test_grouped_and_row_resampling_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    challenger, champion = _pair(np.random.default_rng(6))
    accuracy = get_metric("accuracy")
    grouped = paired_bootstrap(accuracy, challenger, champion, n_boot=4000, confidence=0.95, seed=1)
    monkeypatch.setattr(bootstrap_module, "GROUP_MAX_SHARE", 0.0)
    rows = paired_bootstrap(accuracy, challenger, champion, n_boot=4000, confidence=0.95, seed=1)
    assert grouped.estimate == rows.estimate
    assert abs(grouped.low - rows.low) < 0.004 and abs(grouped.high - rows.high) < 0.004


@pytest.mark.parametrize("classes", [2, 5])
def test_combinations_counted_or_sorted_give_the_same_interval(
    classes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, 3000)
    # Two models right about 70% and 60% of the time, wrong at random otherwise.
    proba = [
        np.eye(classes)[np.where(rng.uniform(size=3000) < p, y, rng.integers(0, classes, 3000))]
        for p in (0.7, 0.6)
    ]
    challenger, champion = (Outputs.classification(y, 0.5 * q + 0.5 / classes) for q in proba)
    f1 = get_metric("f1")
    counted = paired_bootstrap(f1, challenger, champion, n_boot=500, confidence=0.95, seed=3)
    monkeypatch.setattr(bootstrap_module, "COUNTED_KEYS", 0)
    sorted_ = paired_bootstrap(f1, challenger, champion, n_boot=500, confidence=0.95, seed=3)
    assert (counted.low, counted.high, counted.estimate) == (sorted_.low, sorted_.high, sorted_.estimate)
    assert np.array_equal(counted.samples, sorted_.samples) and counted.low < counted.estimate < counted.high


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
