"""Comparing a challenger (canary or shadow) with the champion over a window of the serving logs.

The analysis takes the evidence of each arm in one window of the logs
(:mod:`evertrain.rollout.evidence`) and runs four checks on it, in the spirit
of Kayenta's canary judge: a minimum sample per step, then a test per metric with both
a statistical and a practical threshold (a difference must be significant *and* larger
than the spec allows before it counts against the challenger):

=============  =====================================================  ======================
check          test                                                   fails when
=============  =====================================================  ======================
error rate     Fisher's exact test, one-sided                         p < alpha and the rate
                                                                      rose by more than
                                                                      ``max_error_rate_increase``
latency        Mann-Whitney U on per-request model time, one-sided    p < alpha and the median
                                                                      rose by more than
                                                                      ``max_latency_increase``
quality        labelled rows only; classification: z-test of          the challenger is
               accuracy against a non-inferiority margin;             confidently worse than
               regression: Mann-Whitney U on absolute errors          the champion by more
               against the champion's inflated by the margin          than ``quality_margin``
predictions    Mann-Whitney U on scores or numbers, chi-square on     never (reported: a new
               classes                                                model is meant to differ)
=============  =====================================================  ======================

Errors are judged at any sample size, so a broken canary is rolled back at once; the
other checks wait for ``min_samples``. The tests are re-run on the growing window at
each tick; that repeated look raises the false-alarm rate a little above ``alpha``, a
price paid, as in Kayenta, for rolling back a bad version early.

**Sequential mode** (``rollout.sequential``; by default for a version trained for a
confirmed decay, when every cycle on the stale champion costs, and for one tried on more
data that the gate showed better, whose canary would otherwise hold the loop): quality is judged by an
always-valid confidence sequence on the accuracy difference (Robbins' normal mixture over
the difference's information, valid at every look, so looking each tick costs nothing).
As soon as it shows the challenger not worse than the champion by more than
``quality_margin`` the canary is promoted, whatever step it is on; as soon as it shows it
worse, it is rolled back; while it is undecided the plan runs as usual but the last step
holds for the evidence (up to the step's limit), so a close call takes longer. If the
limit comes first (labels late, a close call), the step gets the plain plan's verdict on
its fixed-sample checks: sequential mode adds early stops, it is never stricter.
When the gate already showed the challenger *better* than the champion on the newest
labelled rows (its whole interval above zero; the plan's ``proven``), that offline
evidence stands for the labels: the canary is promoted at its first look that served
rows with no failed check, and the watch after promotion judges the labels when they come.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from evertrain.rollout.evidence import Evidence, label_text
from evertrain.spec import AnalysisSpec

Status = Literal["pass", "fail", "wait", "info"]
Action = Literal["advance", "promote", "hold", "rollback"]

MIN_LATENCY_REQUESTS = 20
"""Fewest requests per arm before latency is compared: below it a rank test has little power."""
MIN_DISTRIBUTION_ROWS = 20
CLASS_LIKE_MAX_VALUES = 20
"""Numeric predictions with at most this many distinct integer values are taken as classes."""


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    champion: float | None = None
    challenger: float | None = None
    p_value: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


@dataclass(frozen=True)
class Verdict:
    action: Action
    reasons: list[str]
    checks: list[Check]
    n_champion: int
    n_challenger: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
            "n_champion": self.n_champion,
            "n_challenger": self.n_challenger,
        }


def is_classification(task: str | None, *predictions: np.ndarray) -> bool:
    """Classification from the spec's task, else from the predictions themselves."""
    if task in ("binary", "multiclass"):
        return True
    if task == "regression":
        return False
    values = (
        np.concatenate([np.asarray(p, dtype=object) for p in predictions]) if predictions else np.array([])
    )
    if any(isinstance(v, str) for v in values):
        return True
    numbers = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if numbers.size == 0:
        return True
    return bool(np.all(numbers == np.round(numbers))) and np.unique(numbers).size <= CLASS_LIKE_MAX_VALUES


def check_errors(champion: Evidence, challenger: Evidence, analysis: AnalysisSpec) -> Check:
    total_ch = challenger.n + challenger.errors
    total_cp = champion.n + champion.errors
    if total_ch == 0:
        return Check("error_rate", "wait", f"no {challenger.arm} traffic yet")
    rate_ch = challenger.errors / total_ch
    rate_cp = champion.errors / total_cp if total_cp else 0.0
    if challenger.errors == 0:
        return Check("error_rate", "pass", f"{challenger.arm} had no errors in {total_ch} rows", rate_cp, 0.0)
    table = [[challenger.errors, challenger.n], [champion.errors, champion.n]]
    p = float(stats.fisher_exact(table, alternative="greater").pvalue) if total_cp else 0.0
    increase = rate_ch - rate_cp
    failed = p < analysis.alpha and increase > analysis.max_error_rate_increase
    detail = (
        f"error rate {rate_ch:.2%} vs champion {rate_cp:.2%} (+{increase:.2%}, allowed "
        f"+{analysis.max_error_rate_increase:.2%}, p={p:.3g})"
    )
    return Check(
        "error_rate",
        "fail" if failed else "pass",
        detail,
        rate_cp,
        rate_ch,
        p,
        analysis.max_error_rate_increase,
    )


def check_latency(champion: Evidence, challenger: Evidence, analysis: AnalysisSpec) -> Check:
    a, b = challenger.latency_ms, champion.latency_ms
    if a.size < MIN_LATENCY_REQUESTS or b.size < MIN_LATENCY_REQUESTS:
        return Check(
            "latency",
            "wait",
            f"latency needs {MIN_LATENCY_REQUESTS} requests per arm (have {a.size} and {b.size})",
        )
    med_a, med_b = float(np.median(a)), float(np.median(b))
    p = float(stats.mannwhitneyu(a, b, alternative="greater").pvalue)
    increase = med_a / med_b - 1.0 if med_b > 0 else (math.inf if med_a > 0 else 0.0)
    failed = p < analysis.alpha and increase > analysis.max_latency_increase
    detail = (
        f"median model time {med_a:.3g} ms vs champion {med_b:.3g} ms ({increase:+.0%}, allowed "
        f"+{analysis.max_latency_increase:.0%}, Mann-Whitney p={p:.3g})"
    )
    return Check(
        "latency", "fail" if failed else "pass", detail, med_b, med_a, p, analysis.max_latency_increase
    )


def check_quality(
    champion: Evidence, challenger: Evidence, analysis: AnalysisSpec, classification: bool
) -> Check:
    n_a, n_b = challenger.labels.size, champion.labels.size
    if n_a < analysis.min_labels or n_b < analysis.min_labels:
        return Check(
            "quality", "wait", f"quality needs {analysis.min_labels} labels per arm (have {n_a} and {n_b})"
        )
    margin = analysis.quality_margin
    if classification:
        acc_a = float(
            np.mean(
                [
                    label_text(p) == label_text(y)
                    for p, y in zip(challenger.labelled, challenger.labels, strict=True)
                ]
            )
        )
        acc_b = float(
            np.mean(
                [
                    label_text(p) == label_text(y)
                    for p, y in zip(champion.labelled, champion.labels, strict=True)
                ]
            )
        )
        diff = acc_a - acc_b
        se = math.sqrt(acc_a * (1 - acc_a) / n_a + acc_b * (1 - acc_b) / n_b)
        return _noninferiority("accuracy", acc_a, acc_b, diff, se, n_a, n_b, analysis)
    err_a = np.abs(floats(challenger.labelled) - floats(challenger.labels))
    err_b = np.abs(floats(champion.labelled) - floats(champion.labels))
    err_a, err_b = err_a[np.isfinite(err_a)], err_b[np.isfinite(err_b)]
    if err_a.size == 0 or err_b.size == 0:
        return Check("quality", "wait", "no numeric labels to compare")
    p = float(stats.mannwhitneyu(err_a, err_b * (1.0 + margin), alternative="greater").pvalue)
    mae_a, mae_b = float(err_a.mean()), float(err_b.mean())
    failed = p < analysis.alpha
    detail = (
        f"mean absolute error {mae_a:.4g} vs champion {mae_b:.4g} on {n_a} and {n_b} labels "
        f"(worse by more than {margin:.0%} with Mann-Whitney p={p:.3g})"
    )
    return Check("quality", "fail" if failed else "pass", detail, mae_b, mae_a, p, margin)


def _one_sided(shift: float, se: float) -> tuple[float, float]:
    """p-values that ``shift`` (an estimate with standard error ``se``) is below zero and above it."""
    if se == 0.0:
        return (0.0 if shift < 0 else 1.0), (0.0 if shift > 0 else 1.0)
    z = shift / se
    return float(stats.norm.cdf(z)), float(stats.norm.sf(z))


def _noninferiority(
    metric: str,
    value: float,
    champion: float,
    diff: float,
    se: float,
    n_a: int,
    n_b: int,
    analysis: AnalysisSpec,
    paired: bool = False,
) -> Check:
    """Judge ``diff`` (challenger - champion, higher is better) against ``-quality_margin``.

    Two one-sided z-tests: *fail* when the challenger is shown worse by more than the
    margin, *pass* when it is shown not worse by more than the margin, and *wait* when
    the labels so far show neither; a promotion needs evidence, not its absence.
    """
    margin = analysis.quality_margin
    p_worse, p_fine = _one_sided(diff + margin, se)
    on = f"on the same {n_a} labelled rows" if paired else f"on {n_a} and {n_b} labels"
    if p_worse < analysis.alpha:
        detail = (
            f"{metric} {value:.3f} vs champion {champion:.3f} {on} ({diff:+.3f}; "
            f"worse by more than {margin:g} with p={p_worse:.3g})"
        )
        return Check("quality", "fail", detail, champion, value, p_worse, margin)
    if p_fine < analysis.alpha:
        detail = (
            f"{metric} {value:.3f} vs champion {champion:.3f} {on} ({diff:+.3f}; "
            f"not worse by more than {margin:g}, p={p_fine:.3g})"
        )
        return Check("quality", "pass", detail, champion, value, p_fine, margin)
    detail = (
        f"{metric} {value:.3f} vs champion {champion:.3f} {on} ({diff:+.3f}): "
        f"not yet enough labels to tell (p={min(p_worse, p_fine):.3g})"
    )
    return Check("quality", "wait", detail, champion, value, min(p_worse, p_fine), margin)


#: Fewest labels per arm before the confidence sequence is read: its width uses the
#: observed variance of each arm's correctness, which a normal approximation trusts from
#: about 30 rows on (the usual rule for a sample mean).
SEQUENTIAL_MIN_LABELS = 30


def confidence_sequence_halfwidth(information: float, rho: float, alpha: float) -> float:
    """Half-width of a (1 - alpha) always-valid confidence sequence for a mean difference.

    Robbins' two-sided normal mixture: for S_t with variance t (here t is the information
    1/Var of the estimate), P(exists t: |S_t| >= sqrt((t + rho) log((t + rho) / (rho alpha^2))))
    <= alpha. Dividing by the information gives the half-width on the difference; ``rho``
    sets where the sequence is tightest.

    >>> round(confidence_sequence_halfwidth(400.0, 400.0, 0.05), 3)
    0.183
    """
    total = information + rho
    return math.sqrt(total * math.log(total / (rho * alpha**2))) / information


def sequential_quality(
    champion: Evidence, challenger: Evidence, analysis: AnalysisSpec, min_labels: int
) -> Check:
    """Challenger vs champion accuracy by an always-valid confidence sequence (see the module doc).

    Pass when the whole sequence interval of (challenger - champion) lies above
    ``-quality_margin``, fail when it lies below, wait otherwise. The mixture is tuned to be
    tightest at ``min_labels`` labels per arm (the evidence the plan asks for anyway).
    """
    n_a, n_b = challenger.labels.size, champion.labels.size
    if n_a < SEQUENTIAL_MIN_LABELS or n_b < SEQUENTIAL_MIN_LABELS:
        return Check(
            "quality",
            "wait",
            f"sequential quality needs {SEQUENTIAL_MIN_LABELS} labels per arm (have {n_a} and {n_b})",
        )
    acc_a = _accuracy(challenger)
    acc_b = _accuracy(champion)
    # variances from smoothed rates, so an arm that is right on every row still counts as uncertain
    pa, pb = (acc_a * n_a + 1) / (n_a + 2), (acc_b * n_b + 1) / (n_b + 2)
    var_a, var_b = pa * (1 - pa), pb * (1 - pb)
    information = 1.0 / (var_a / n_a + var_b / n_b)
    rho = 1.0 / (var_a / min_labels + var_b / min_labels)
    half = confidence_sequence_halfwidth(information, rho, analysis.alpha)
    diff = acc_a - acc_b
    low, high = diff - half, diff + half
    margin = analysis.quality_margin
    interval = f"always-valid {1 - analysis.alpha:.0%} interval [{low:+.3f}, {high:+.3f}]"
    head = f"accuracy {acc_a:.3f} vs champion {acc_b:.3f} on {n_a} and {n_b} labels ({diff:+.3f}; {interval})"
    if low > -margin:
        return Check(
            "quality", "pass", f"{head}: not worse by more than {margin:g}", acc_b, acc_a, None, margin
        )
    if high < -margin:
        return Check("quality", "fail", f"{head}: worse by more than {margin:g}", acc_b, acc_a, None, margin)
    return Check("quality", "wait", f"{head}: not yet decided", acc_b, acc_a, None, margin)


def _accuracy(arm: Evidence) -> float:
    return float(
        np.mean([label_text(p) == label_text(y) for p, y in zip(arm.labelled, arm.labels, strict=True)])
    )


def paired_quality(correct_new: np.ndarray, correct_old: np.ndarray, analysis: AnalysisSpec) -> Check:
    """Quality of a promoted version against its predecessor scored on the same labelled rows.

    After a promotion only the new champion serves, so comparing it with the old one's
    earlier traffic would mix a change of model with a change of data (drift, load). The
    old champion is scored again on the very rows the new one answered; the per-row
    differences in correctness give a paired test that drift cannot fool.
    """
    n = int(correct_new.size)
    if n < analysis.min_labels:
        return Check("quality", "wait", f"quality needs {analysis.min_labels} labelled rows (have {n})")
    d = correct_new.astype(np.float64) - correct_old.astype(np.float64)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return _noninferiority(
        "accuracy",
        float(correct_new.mean()),
        float(correct_old.mean()),
        float(d.mean()),
        se,
        n,
        n,
        analysis,
        paired=True,
    )


def paired_errors(err_new: np.ndarray, err_old: np.ndarray, analysis: AnalysisSpec) -> Check:
    """A promoted regression model against its predecessor, by absolute errors on the same rows.

    As :func:`paired_quality`, but a prediction of a number is never exactly right: the
    per-row differences of absolute errors, the old one allowed ``quality_margin`` more,
    give the paired test (*fail* when the new model is shown worse by more than the margin).
    """
    keep = np.isfinite(err_new) & np.isfinite(err_old)
    err_new, err_old = err_new[keep], err_old[keep]
    n = int(err_new.size)
    if n < analysis.min_labels:
        return Check("quality", "wait", f"quality needs {analysis.min_labels} labelled rows (have {n})")
    margin = analysis.quality_margin
    d = err_old * (1.0 + margin) - err_new  # above zero: not worse by more than the margin
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    p_worse, p_fine = _one_sided(float(d.mean()), se)
    mae_new, mae_old = float(err_new.mean()), float(err_old.mean())
    said = f"mean absolute error {mae_new:.4g} vs champion {mae_old:.4g} on the same {n} labelled rows"
    if p_worse < analysis.alpha:
        detail = f"{said} (worse by more than {margin:.0%} with p={p_worse:.3g})"
        return Check("quality", "fail", detail, mae_old, mae_new, p_worse, margin)
    if p_fine < analysis.alpha:
        detail = f"{said} (not worse by more than {margin:.0%}, p={p_fine:.3g})"
        return Check("quality", "pass", detail, mae_old, mae_new, p_fine, margin)
    detail = f"{said}: not yet enough labels to tell (p={min(p_worse, p_fine):.3g})"
    return Check("quality", "wait", detail, mae_old, mae_new, min(p_worse, p_fine), margin)


def floats(values: np.ndarray) -> np.ndarray:
    out = np.full(values.size, np.nan)
    for i, v in enumerate(values):
        with contextlib.suppress(TypeError, ValueError):
            out[i] = float(v)
    return out


def check_predictions(champion: Evidence, challenger: Evidence, classification: bool) -> Check:
    if challenger.n < MIN_DISTRIBUTION_ROWS or champion.n < MIN_DISTRIBUTION_ROWS:
        return Check("predictions", "info", "too few rows to compare prediction distributions")
    if challenger.scores.size >= MIN_DISTRIBUTION_ROWS and champion.scores.size >= MIN_DISTRIBUTION_ROWS:
        a, b, what = challenger.scores, champion.scores, "scores"
    elif not classification:
        a, b, what = floats(challenger.predictions), floats(champion.predictions), "predictions"
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    else:
        classes = sorted(
            {label_text(v) for v in np.concatenate([challenger.predictions, champion.predictions])}
        )
        counts = np.array(
            [
                [sum(1 for v in arr if label_text(v) == c) for c in classes]
                for arr in (challenger.predictions, champion.predictions)
            ]
        )
        if len(classes) < 2:
            return Check(
                "predictions", "info", f"both arms predict only {classes[0] if classes else 'nothing'}"
            )
        p = float(stats.chi2_contingency(counts).pvalue)
        shares = counts / counts.sum(axis=1, keepdims=True)
        gap = float(np.abs(shares[0] - shares[1]).max())
        return Check(
            "predictions", "info", f"class shares differ by up to {gap:.1%} (chi-square p={p:.3g})", p_value=p
        )
    if a.size < MIN_DISTRIBUTION_ROWS or b.size < MIN_DISTRIBUTION_ROWS:
        return Check("predictions", "info", "too few numeric predictions to compare")
    p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    med_a, med_b = float(np.median(a)), float(np.median(b))
    return Check(
        "predictions",
        "info",
        f"median {what} {med_a:.4g} vs champion {med_b:.4g} (Mann-Whitney p={p:.3g})",
        med_b,
        med_a,
        p,
    )


def compare(
    champion: Evidence,
    challenger: Evidence,
    analysis: AnalysisSpec,
    *,
    min_samples: int,
    elapsed: float,
    duration: float,
    final: bool,
    task: str | None = None,
    sequential: bool = False,
    proven: str | None = None,
) -> Verdict:
    """The verdict on one step: roll back on any failed check, hold until the sample and time are
    there, then advance (or promote after the last step). ``sequential`` (classification
    only): quality by a confidence sequence that promotes or rolls back as soon as it decides.
    ``proven`` (sequential only): the offline evidence, on the newest labelled rows, that the
    challenger is better than the champion; it stands for the labels the sequence waits
    for, so the canary is promoted at the first look where it served rows and no check
    failed (the canary's own labels, when they come first, can still roll it back)."""
    classification = is_classification(task, challenger.predictions, champion.predictions)
    sequential = sequential and classification
    errors = check_errors(champion, challenger, analysis)
    checks = [errors]
    enough = challenger.n >= min_samples
    if sequential:
        checks += [
            check_latency(champion, challenger, analysis),
            sequential_quality(champion, challenger, analysis, analysis.min_labels),
            check_predictions(champion, challenger, classification),
        ]
    elif enough:
        checks += [
            check_latency(champion, challenger, analysis),
            check_quality(champion, challenger, analysis, classification),
            check_predictions(champion, challenger, classification),
        ]
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        return Verdict("rollback", [c.detail for c in failed], checks, champion.n, challenger.n)
    quality = next((c for c in checks if c.name == "quality"), None)
    if sequential and proven and challenger.n > 0 and (quality is None or quality.status != "pass"):
        return Verdict(
            "promote",
            [
                f"{challenger.arm} v{challenger.version} served {challenger.n} rows without errors and "
                f"{proven}: promoted without waiting for its labels; the watch "
                "after promotion judges them"
            ],
            checks,
            champion.n,
            challenger.n,
        )
    if sequential and quality is not None and quality.status == "pass":
        return Verdict(
            "promote",
            [f"{challenger.arm} v{challenger.version} passed the sequential test early: {quality.detail}"],
            checks,
            champion.n,
            challenger.n,
        )
    waits = []
    if not enough:
        waits.append(f"{challenger.arm} has {challenger.n} of the {min_samples} rows this step needs")
    if elapsed < duration:
        waits.append(f"the step has run {elapsed:.0f}s of {duration:.0f}s")
    if enough and (analysis.require_labels or (sequential and final)):
        # a sequential canary's last step waits for the sequence to decide: close calls take longer
        waits += [c.detail for c in checks if c.name == "quality" and c.status == "wait"]
    if waits:
        return Verdict("hold", waits, checks, champion.n, challenger.n)
    passed = ", ".join(c.name for c in checks if c.status == "pass") or "nothing failed"
    action: Action = "promote" if final else "advance"
    return Verdict(
        action, [f"{challenger.arm} v{challenger.version} passed: {passed}"], checks, champion.n, challenger.n
    )
