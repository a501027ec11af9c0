"""Verdicts that hold at any sample size: effect size x significance, one false-alarm budget.

A column drifts when its shift is both *statistically real* (its significance test's
p-value, corrected across every hypothesis of the report, is at most ``alpha``) and
*material* (its effect size is at least the effect test's threshold).

* Significance alone flags everything on large samples: at a million rows a KS test
  finds shifts of a thousandth of a standard deviation, which no model notices.
* An effect size alone flags noise on small samples: at a hundred rows two samples of
  one distribution differ by a Wasserstein distance of about 0.15 sd.

The correction spends one budget ``alpha`` (default 0.01) on the whole report, whatever the number
of columns. Bonferroni (the default) bounds the chance of *any* false flag in a report
(the family-wise error rate): what a retraining trigger needs, since one false flag
costs a retrain. Benjamini-Hochberg bounds the expected share of false flags among
the flags (false discovery rate) instead; it finds more when many columns truly drift
but, for the same reason, lets a clean column through more easily beside them (with
5 of 25 columns drifting, a clean column needs p < 0.012 instead of 0.002).
The method and the number of hypotheses are written into every report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evertrain.exceptions import UsageError
from evertrain.monitor.corrections import benjamini_hochberg, bonferroni

#: Default family-wise false-alarm budget of one report. A trigger runs every window:
#: at one report a day, 0.01 allows about three false alarms a year where 0.05 would
#: allow eighteen, and at 10,000 rows a side a 0.1-sd shift still has p near 1e-7.
DEFAULT_ALPHA = 0.01
BONFERRONI = "bonferroni"
BENJAMINI_HOCHBERG = "benjamini-hochberg"
NO_CORRECTION = "none"
CORRECTIONS = (BONFERRONI, BENJAMINI_HOCHBERG, NO_CORRECTION)
_ALIASES = {"bh": BENJAMINI_HOCHBERG, "fdr": BENJAMINI_HOCHBERG, "fwer": BONFERRONI}
DEFAULT_CORRECTION = BONFERRONI


def correction_name(method: str) -> str:
    """The canonical name of a correction method (accepts ``bh`` and ``fwer`` aliases)."""
    name = _ALIASES.get(method.lower(), method.lower())
    if name not in CORRECTIONS:
        raise UsageError(f"correction must be one of {', '.join(CORRECTIONS)} (or bh), got {method!r}")
    return name


def check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    return float(alpha)


def adjust_p_values(p_values: Sequence[float], method: str = DEFAULT_CORRECTION) -> np.ndarray:
    """Adjusted p-values: reject hypothesis i at level alpha when ``adjusted[i] <= alpha``.

    >>> adjust_p_values([0.01, 0.04, 0.03], "benjamini-hochberg").round(3).tolist()
    [0.03, 0.04, 0.04]
    >>> adjust_p_values([0.01, 0.04, 0.03], "bonferroni").round(3).tolist()
    [0.03, 0.12, 0.09]
    """
    method = correction_name(method)
    if method == BONFERRONI:
        return np.asarray(bonferroni(p_values), dtype=np.float64)
    if method == BENJAMINI_HOCHBERG:
        return np.asarray(benjamini_hochberg(p_values), dtype=np.float64)
    return np.array(p_values, dtype=np.float64)


@dataclass(frozen=True)
class Verdict:
    """One hypothesis' decision, with both halves of the rule shown."""

    p_value: float | None
    p_value_adjusted: float | None
    significant: bool
    effect_size: float
    threshold: float
    material: bool

    @property
    def drifted(self) -> bool:
        return self.significant and self.material


def decide(
    p_values: Sequence[float | None],
    effect_sizes: Sequence[float],
    thresholds: Sequence[float],
    *,
    alpha: float = DEFAULT_ALPHA,
    correction: str = DEFAULT_CORRECTION,
) -> list[Verdict]:
    """Verdicts for a family of hypotheses sharing one false-alarm budget.

    A hypothesis without a p-value (an effect-only rule) is judged on its effect alone
    and is not counted in the family.
    """
    check_alpha(alpha)
    if not len(p_values) == len(effect_sizes) == len(thresholds):
        raise UsageError("decide: p_values, effect_sizes and thresholds must have the same length")
    tested = [i for i, p in enumerate(p_values) if p is not None]
    adjusted = adjust_p_values([float(p_values[i]) for i in tested], correction)  # type: ignore[arg-type]
    adj: dict[int, float] = {i: float(a) for i, a in zip(tested, adjusted, strict=True)}
    out = []
    for i, (p, e, t) in enumerate(zip(p_values, effect_sizes, thresholds, strict=True)):
        pa = adj.get(i)
        significant = True if pa is None else pa <= alpha
        out.append(Verdict(p, pa, significant, float(e), float(t), bool(e >= t)))
    return out


__all__ = [
    "BENJAMINI_HOCHBERG",
    "BONFERRONI",
    "CORRECTIONS",
    "DEFAULT_ALPHA",
    "DEFAULT_CORRECTION",
    "NO_CORRECTION",
    "Verdict",
    "adjust_p_values",
    "correction_name",
    "decide",
]
