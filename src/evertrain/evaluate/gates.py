"""Gates as data, evaluated into checks with their evidence.

A gate is an entry of the spec's ``gates`` list (see :mod:`evertrain.spec`); checking it
is a pure function of the scored holdout rows, so the spec file, the stored report and
the audit log all show the same thing. Each check returns ``passed``, a one-line
``reason`` and the ``evidence`` behind it (values, intervals, per-slice tables).

Defined behaviour at the edges:

- **No champion** (the first version, or the champion is the version being judged):
  ``non_inferiority``, ``superiority`` and ``slices`` pass with the reason
  "no champion ...": there is nothing to be inferior to. Absolute gates (threshold,
  fairness, latency, size) still apply, so a first version is not waved through blind.
- **No gates** in the spec: the report passes with the reason "no gates configured";
  a challenger then needs only to have trained and been registered.
- A metric that is undefined on the rows (e.g. ROC AUC with one class) fails a
  threshold gate: a gate that cannot be checked does not pass.

>>> from evertrain.spec import ThresholdGate
>>> from evertrain.evaluate.metrics import Outputs
>>> out = Outputs.classification([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.3])
>>> [c.passed for c in evaluate_gates([ThresholdGate(metric="accuracy", min=0.9)], GateInputs(out))]
[True]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from scipy import stats

from evertrain.evaluate.bootstrap import p_value_below, paired_bootstrap
from evertrain.evaluate.metrics import Metric, Outputs, get_metric
from evertrain.monitor.corrections import bonferroni, holm

#: Size gates count megabytes of 10^6 bytes, like the artifact sizes people read in tools.
BYTES_PER_MB = 1_000_000
#: A numeric slice column with more distinct values than this is cut into quantile bins,
#: since slicing on every distinct value of a continuous column would test noise.
MAX_SLICE_VALUES = 20
SLICE_QUANTILE_BINS = 4
#: In fairness checks, a group needs this many true positives for its true-positive rate
#: to be compared (equal opportunity); fewer would make the rate mostly noise.
MIN_GROUP_POSITIVES = 10
#: The power at which a champion gate states its minimum detectable difference: 80%, the
#: convention of power analysis (a 1-in-5 chance of missing a real difference that size).
MDE_POWER = 0.8
#: What an ``auto`` gate's superiority test also reads, for a label metric of two classifiers
#: that give probabilities: log-loss scores every row by the probability given to its true
#: class, so a model that knows more shows it on far fewer rows than on the rows where two
#: models' labels differ (see :func:`check_champion`).
PROBABILITY_EVIDENCE = "log_loss"
#: Resamples per slice: slices are many and small, so a fixed 1000 each keeps the gate
#: fast while still resolving p-values down to 1/1001, enough for Holm over 40+ slices.
SLICE_BOOT = 1000

NO_CHAMPION = "no champion to compare with (first version): champion-relative gates pass"


class CheckDict(TypedDict):
    """``CheckResult.to_dict()``: one gate's outcome as stored in the evaluation report."""

    kind: str
    name: str
    passed: bool
    reason: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one gate: passed or not, why, and the numbers behind it."""

    kind: str
    name: str
    passed: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> CheckDict:
        return {
            "kind": self.kind,
            "name": self.name,
            "passed": self.passed,
            "reason": self.reason,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class MinGain:
    """The least improvement of ``metric`` (in its units) a champion gate wants, beyond being
    shown better, and why (see ``evaluation.min_gain``)."""

    metric: str
    value: float
    why: str


@dataclass(frozen=True)
class GateInputs:
    """Everything the gates look at, for one challenger on one set of holdout rows."""

    challenger: Outputs
    champion: Outputs | None = None
    champion_version: int | None = None
    frame: pd.DataFrame | None = None
    latency_ms_per_row: float | None = None
    #: Gives the latency instead when it is still being measured (by the training worker);
    #: the latency gates are checked after the others, so that it goes on meanwhile.
    latency_later: Callable[[], float | None] | None = None
    size_bytes: int | None = None
    no_champion_reason: str = NO_CHAMPION
    #: Why the champion is known to be stale (the challenger was trained for a confirmed
    #: decay), else None; ``auto`` gates then judge non-inferiority instead of superiority.
    confirmed_decay: str | None = None
    #: A gain the challenger's estimate must reach on top of a superiority test, else None.
    min_gain: MinGain | None = None


def _fmt(value: float | None) -> str:
    return "undefined" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _signed(value: float) -> str:
    return f"{value:+.4g}" if np.isfinite(value) else "undefined"


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def check_threshold(gate: Any, inputs: GateInputs, seed: int) -> CheckResult:
    metric = get_metric(gate.metric)
    value = metric(inputs.challenger)
    bounds = []
    if gate.min is not None:
        bounds.append(f">= {gate.min:g}")
    if gate.max is not None:
        bounds.append(f"<= {gate.max:g}")
    name = f"threshold({metric.name} {' and '.join(bounds)})"
    evidence = {
        "metric": metric.name,
        "value": _finite(value),
        "min": gate.min,
        "max": gate.max,
        "n_rows": inputs.challenger.n,
    }
    if not np.isfinite(value):
        return CheckResult("threshold", name, False, f"{metric.name} is undefined on these rows", evidence)
    passed = (gate.min is None or value >= gate.min) and (gate.max is None or value <= gate.max)
    verdict = "within" if passed else "outside"
    return CheckResult(
        "threshold", name, passed, f"{metric.name} = {value:.4g}, {verdict} {' and '.join(bounds)}", evidence
    )


def _oriented(metric: Metric, low: float, high: float) -> tuple[float, float]:
    """The interval of the improvement (positive = challenger better) whatever the metric's direction."""
    return (low, high) if metric.higher_is_better else (-high, -low)


def _test_of(gate: Any, inputs: GateInputs) -> tuple[str, float, str | None]:
    """The test a champion gate runs: its kind, the bound on the improvement, and for an
    ``auto`` gate the rule that chose it."""
    if gate.kind == "non_inferiority":
        return "non_inferiority", -gate.margin, None
    if gate.kind == "superiority":
        return "superiority", gate.margin, None
    if inputs.confirmed_decay is not None:
        return (
            "non_inferiority",
            -gate.margin,
            f"freshness: {inputs.confirmed_decay}, so a challenger not worse by more than "
            f"{gate.margin:g} on the newest rows is promoted for being fresher",
        )
    return "superiority", 0.0, "no confirmed decay: the challenger must beat the champion"


def minimum_detectable(samples: np.ndarray, confidence: float, power: float = MDE_POWER) -> float | None:
    """The smallest true difference the test would find with ``power``, from the bootstrap's
    standard error: (z of the one-sided level + z of the power) x SE.

    >>> round(minimum_detectable(np.random.default_rng(0).normal(0, 0.01, 5000), 0.95), 3)
    0.025
    """
    finite = samples[np.isfinite(samples)]
    if finite.size < 2:
        return None
    se = float(finite.std(ddof=1))
    return float((stats.norm.ppf(confidence) + stats.norm.ppf(power)) * se)


def _by_probabilities(gate: Any, metric: Metric, inputs: GateInputs, test: str) -> Metric | None:
    """The probability metric that may show an ``auto`` gate's challenger better when its
    label metric cannot: log-loss, for a superiority test of a label metric (accuracy, F1,
    ...) between two classifiers that both give probabilities; None otherwise."""
    challenger, champion = inputs.challenger, inputs.champion
    if gate.kind != "auto" or test != "superiority" or metric.needs_proba or champion is None:
        return None
    if challenger.task not in ("binary", "multiclass") or challenger.proba is None or champion.proba is None:
        return None
    return get_metric(PROBABILITY_EVIDENCE)


def _agreement(inputs: GateInputs) -> float | None:
    """The share of rows on which the challenger gives the champion's answer (its label, or
    its value for regression); None without a champion or for generation."""
    champion = inputs.champion
    if champion is None or inputs.challenger.task == "generation" or inputs.challenger.n == 0:
        return None
    return float(np.mean(inputs.challenger.pred == champion.pred))


def _wanted_gain(gate: Any, metric: Metric, inputs: GateInputs, test: str) -> MinGain | None:
    """The least gain an ``auto`` gate's superiority test also wants of the estimate (see
    ``GateInputs.min_gain``), when it is in this gate's metric; None otherwise."""
    wanted = inputs.min_gain
    if gate.kind != "auto" or test != "superiority" or wanted is None or wanted.metric != metric.name:
        return None
    return wanted


def _probability_evidence(
    metric: Metric,
    inputs: GateInputs,
    label_difference: float,
    label_metric: Metric,
    confidence: float,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The paired test of ``metric`` (log-loss) on the same rows: the challenger is shown better
    when the improvement interval lies above zero and the label metric's estimate is not worse."""
    assert inputs.champion is not None
    result = paired_bootstrap(
        metric, inputs.challenger, inputs.champion, n_boot=n_boot, confidence=confidence, seed=seed
    )
    low, high = _oriented(metric, result.low, result.high)
    not_worse = (label_difference if label_metric.higher_is_better else -label_difference) >= 0
    better = bool(np.isfinite(low) and low > 0)
    passed = better and not_worse
    if passed:
        verdict = f"shown better, and no worse on {label_metric.name}"
    elif better:
        verdict = f"better, but worse on {label_metric.name}"
    else:
        verdict = f"improvement lower bound {_signed(low)} is not above +0"
    return {
        "metric": metric.name,
        "challenger": _finite(metric(inputs.challenger)),
        "champion": _finite(metric(inputs.champion)),
        "difference": _finite(result.estimate),
        "interval": [_finite(result.low), _finite(result.high)],
        "improvement_interval": [_finite(low), _finite(high)],
        "higher_is_better": metric.higher_is_better,
        "passed": passed,
        "reason": f"on its probabilities, {metric.name} difference {_signed(result.estimate)}, "
        f"CI [{_signed(result.low)}, {_signed(result.high)}]: {verdict}",
    }


def check_champion(gate: Any, inputs: GateInputs, seed: int) -> CheckResult:
    metric = get_metric(gate.metric)
    name = f"{gate.kind}({metric.name}, margin {gate.margin:g})"
    if inputs.champion is None:
        return CheckResult(
            gate.kind, name, True, inputs.no_champion_reason, {"metric": metric.name, "champion": None}
        )
    test, bound, rule = _test_of(gate, inputs)
    also = _by_probabilities(gate, metric, inputs, test)
    # two ways to show superiority, each at half the error rate: together no more than the gate's
    confidence = gate.confidence if also is None else 1 - (1 - gate.confidence) / 2
    result = paired_bootstrap(
        metric, inputs.challenger, inputs.champion, n_boot=gate.n_boot, confidence=confidence, seed=seed
    )
    low, high = _oriented(metric, result.low, result.high)
    passed = bool(np.isfinite(low) and low > bound)
    mde = minimum_detectable(result.samples, confidence)
    challenger_value, champion_value = metric(inputs.challenger), metric(inputs.champion)
    pct = f"{confidence * 100:.4g}%"  # 95%, 97.5%, 98.75%
    if passed:
        verdict = f"improvement interval lies above {bound:+g}"
    elif np.isfinite(high) and high <= bound:
        verdict = f"whole improvement interval lies at or below {bound:+g}"
    else:
        verdict = f"improvement lower bound {_signed(low)} is not above {bound:+g}"
    probabilities = None
    if also is not None:
        probabilities = _probability_evidence(
            also, inputs, result.estimate, metric, confidence, gate.n_boot, seed
        )
        passed = passed or probabilities["passed"]
    agreement = _agreement(inputs)
    if rule is not None and test == "non_inferiority" and agreement == 1.0:
        # not worse, and no different: a retrain that learned nothing from the change it was
        # made for leaves the decay in place, and its canary would only hold the next retrain up
        verdict += (
            f", but it gives the champion's answer on all {inputs.challenger.n} rows: it learned "
            "nothing from the change, so it is not fresher"
        )
        passed = False
    wanted = _wanted_gain(gate, metric, inputs, test)
    short = None
    if wanted is not None:
        gain = result.estimate if metric.higher_is_better else -result.estimate
        if not (np.isfinite(gain) and gain >= wanted.value):
            short = (
                f"estimated gain {_signed(gain)} is below {wanted.value:+g}, the least wanted: {wanted.why}"
            )
            passed = False
    reason = (
        f"{metric.name}: challenger {_fmt(challenger_value)} vs champion {_fmt(champion_value)} "
        f"(v{inputs.champion_version}), difference {_signed(result.estimate)}, "
        f"{pct} CI [{_signed(result.low)}, {_signed(result.high)}]: {verdict}"
        + ("" if mde is None else f" (smallest difference this holdout detects: {mde:.3g})")
        + ("" if probabilities is None else f"; {probabilities['reason']}")
        + ("" if rule is None else f"; {test} by the auto rule ({rule.split(':')[0]})")
        + ("" if short is None else f"; {short}")
    )
    evidence = {
        "test": test,
        "rule": rule,
        "minimum_detectable_difference": mde,
        "power": MDE_POWER,
        "metric": metric.name,
        "higher_is_better": metric.higher_is_better,
        "champion_version": inputs.champion_version,
        "challenger": _finite(challenger_value),
        "champion": _finite(champion_value),
        "difference": _finite(result.estimate),
        "interval": [_finite(result.low), _finite(result.high)],
        "improvement_interval": [_finite(low), _finite(high)],
        "bound": bound,
        "margin": gate.margin,
        "confidence": gate.confidence,
        "test_confidence": confidence,
        "by_probabilities": probabilities,
        "agreement": agreement,
        "min_gain": None if wanted is None else {"value": wanted.value, "why": wanted.why},
        "n_boot": gate.n_boot,
        "n_valid_resamples": result.n_valid,
        "n_rows": inputs.challenger.n,
        "seed": seed,
    }
    return CheckResult(gate.kind, name, passed, reason, evidence)


def slice_labels(values: pd.Series) -> pd.Series:
    """The slice of each row: the value itself, or a quantile bin for a many-valued numeric column."""
    if (
        pd.api.types.is_numeric_dtype(values)
        and not pd.api.types.is_bool_dtype(values)
        and values.nunique() > MAX_SLICE_VALUES
    ):
        return pd.qcut(values, SLICE_QUANTILE_BINS, duplicates="drop").astype(str)
    return values.astype(str).where(values.notna(), "<missing>")


def _column(inputs: GateInputs, column: str, gate_kind: str) -> pd.Series:
    if inputs.frame is None or column not in inputs.frame.columns:
        have = "" if inputs.frame is None else f" (columns: {', '.join(map(str, inputs.frame.columns))})"
        raise KeyError(f"{gate_kind} gate: column {column!r} is not in the holdout rows{have}")
    return inputs.frame[column].reset_index(drop=True)


def check_slices(gate: Any, inputs: GateInputs, seed: int) -> CheckResult:
    """Per-slice regression tests, corrected for testing many slices at once.

    For each slice with at least ``min_rows`` rows, a paired bootstrap gives the interval
    of the improvement and a one-sided p-value for "the challenger is worse than the
    champion by more than ``margin`` here". The p-values are adjusted across slices
    (Holm or Bonferroni); a slice whose adjusted p-value is below 1 - confidence has
    regressed, and one regressed slice fails the gate.
    """
    metric = get_metric(gate.metric)
    name = f"slices({gate.column}, {metric.name}, margin {gate.margin:g})"
    if inputs.champion is None:
        return CheckResult(
            "slices", name, True, inputs.no_champion_reason, {"metric": metric.name, "champion": None}
        )
    try:
        labels = slice_labels(_column(inputs, gate.column, "slices"))
    except KeyError as exc:
        return CheckResult("slices", name, False, str(exc.args[0]), {"column": gate.column})
    rows: list[dict[str, Any]] = []
    tested: list[tuple[dict[str, Any], float]] = []
    codes, values = pd.factorize(labels, sort=True)
    for index, value in enumerate(values):
        mask = codes == index
        n = int(mask.sum())
        entry: dict[str, Any] = {"slice": value, "n_rows": n}
        rows.append(entry)
        if n < gate.min_rows:
            entry["tested"] = False
            entry["note"] = f"fewer than min_rows={gate.min_rows} rows"
            continue
        challenger, champion = inputs.challenger.take(mask), inputs.champion.take(mask)
        result = paired_bootstrap(
            metric, challenger, champion, n_boot=SLICE_BOOT, confidence=gate.confidence, seed=seed + index
        )
        improvement = result.samples if metric.higher_is_better else -result.samples
        low, high = _oriented(metric, result.low, result.high)
        entry.update(
            tested=True,
            challenger=_finite(metric(challenger)),
            champion=_finite(metric(champion)),
            difference=_finite(result.estimate),
            improvement_interval=[_finite(low), _finite(high)],
        )
        # H0: the improvement is at least -margin; small p = evidence of a regression beyond the margin.
        tested.append((entry, p_value_below(improvement, -gate.margin)))
    adjust: Callable[[list[float]], list[float]] = holm if gate.correction == "holm" else bonferroni
    alpha = 1.0 - gate.confidence
    adjusted = adjust([p for _, p in tested]) if tested else []
    regressed = []
    for (entry, p), p_adj in zip(tested, adjusted, strict=True):
        entry.update(p_value=p, p_adjusted=p_adj, regressed=p_adj < alpha)
        if p_adj < alpha:
            regressed.append(entry)
    evidence = {
        "metric": metric.name,
        "column": gate.column,
        "margin": gate.margin,
        "confidence": gate.confidence,
        "correction": gate.correction,
        "n_slices_tested": len(tested),
        "slices": rows,
        "champion_version": inputs.champion_version,
        "seed": seed,
    }
    if not tested:
        return CheckResult(
            "slices", name, True, f"no slice of {gate.column!r} has min_rows={gate.min_rows} rows", evidence
        )
    if regressed:
        worst = ", ".join(
            f"{e['slice']!r} ({_signed(e['difference'])}, p_adj={e['p_adjusted']:.3g})" for e in regressed
        )
        return CheckResult(
            "slices",
            name,
            False,
            f"{metric.name} regressed beyond {gate.margin:g} on {len(regressed)} of {len(tested)} "
            f"slices of {gate.column!r} ({gate.correction}-corrected): {worst}",
            evidence,
        )
    return CheckResult(
        "slices",
        name,
        True,
        f"no slice of {gate.column!r} regressed beyond {gate.margin:g} "
        f"({len(tested)} tested, {gate.correction}-corrected at alpha {alpha:.3g})",
        evidence,
    )


def _group_rates(o: Outputs, groups: pd.Series, min_rows: int) -> dict[str, dict[str, Any]]:
    positive_pred = o.pred == 1
    positive_true = o.y == 1
    out: dict[str, dict[str, Any]] = {}
    for value in sorted(groups.unique()):
        mask = (groups == value).to_numpy()
        n = int(mask.sum())
        n_pos = int(positive_true[mask].sum())
        out[value] = {
            "n_rows": n,
            "compared": n >= min_rows,
            "positive_rate": float(positive_pred[mask].mean()) if n else None,
            "n_positives": n_pos,
            "true_positive_rate": float(positive_pred[mask & positive_true].mean())
            if n_pos >= MIN_GROUP_POSITIVES
            else None,
        }
    return out


def _spread(rates: dict[str, dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rates.values() if r["compared"] and r[key] is not None]
    return float(max(values) - min(values)) if len(values) >= 2 else None


def check_fairness(gate: Any, inputs: GateInputs, seed: int) -> CheckResult:
    """Demographic parity and equal-opportunity differences across the groups of a sensitive column.

    Demographic parity difference: the largest gap in positive-prediction rate between
    groups; equal-opportunity difference: the largest gap in true-positive rate. Each is
    capped by the gate; groups under ``min_rows`` rows are reported but not compared.
    """
    name = f"fairness({gate.sensitive})"
    if inputs.challenger.task != "binary":
        return CheckResult(
            "fairness",
            name,
            False,
            f"fairness gates need a binary model, this one is {inputs.challenger.task}",
            {},
        )
    try:
        groups = _column(inputs, gate.sensitive, "fairness").astype(str)
    except KeyError as exc:
        return CheckResult("fairness", name, False, str(exc.args[0]), {"sensitive": gate.sensitive})
    rates = _group_rates(inputs.challenger, groups, gate.min_rows)
    dp, eo = _spread(rates, "positive_rate"), _spread(rates, "true_positive_rate")
    evidence: dict[str, Any] = {
        "sensitive": gate.sensitive,
        "groups": rates,
        "min_rows": gate.min_rows,
        "demographic_parity_diff": dp,
        "max_demographic_parity_diff": gate.max_demographic_parity_diff,
        "equal_opportunity_diff": eo,
        "max_equal_opportunity_diff": gate.max_equal_opportunity_diff,
    }
    if inputs.champion is not None:
        champ_rates = _group_rates(inputs.champion, groups, gate.min_rows)
        evidence["champion"] = {
            "demographic_parity_diff": _spread(champ_rates, "positive_rate"),
            "equal_opportunity_diff": _spread(champ_rates, "true_positive_rate"),
        }
    problems, notes = [], []
    for label, value, cap in (
        ("demographic parity difference", dp, gate.max_demographic_parity_diff),
        ("equal-opportunity difference", eo, gate.max_equal_opportunity_diff),
    ):
        if cap is None:
            continue
        if value is None:
            notes.append(f"{label}: fewer than two groups to compare")
        elif value > cap:
            problems.append(f"{label} {value:.3g} > cap {cap:g}")
        else:
            notes.append(f"{label} {value:.3g} <= cap {cap:g}")
    if problems:
        return CheckResult("fairness", name, False, "; ".join(problems), evidence)
    return CheckResult("fairness", name, True, "; ".join(notes) or "no caps set", evidence)


def check_latency(gate: Any, inputs: GateInputs, seed: int) -> CheckResult:
    name = f"latency(<= {gate.max_ms_per_row:g} ms/row)"
    value = inputs.latency_ms_per_row if inputs.latency_later is None else inputs.latency_later()
    evidence = {"ms_per_row": value, "max_ms_per_row": gate.max_ms_per_row}
    if value is None:
        return CheckResult("latency", name, False, "prediction latency was not measured", evidence)
    passed = value <= gate.max_ms_per_row
    sign = "<=" if passed else ">"
    return CheckResult(
        "latency", name, passed, f"{value:.4g} ms per row {sign} {gate.max_ms_per_row:g}", evidence
    )


def check_size(gate: Any, inputs: GateInputs, seed: int) -> CheckResult:
    name = f"size(<= {gate.max_mb:g} MB)"
    if inputs.size_bytes is None:
        return CheckResult("size", name, False, "model size is unknown", {"max_mb": gate.max_mb})
    mb = inputs.size_bytes / BYTES_PER_MB
    passed = mb <= gate.max_mb
    evidence = {"size_bytes": inputs.size_bytes, "size_mb": mb, "max_mb": gate.max_mb}
    return CheckResult(
        "size",
        name,
        passed,
        f"model is {mb:.3g} MB, {'within' if passed else 'over'} {gate.max_mb:g} MB",
        evidence,
    )


CHECKS: dict[str, Callable[[Any, GateInputs, int], CheckResult]] = {
    "threshold": check_threshold,
    "non_inferiority": check_champion,
    "superiority": check_champion,
    "auto": check_champion,
    "slices": check_slices,
    "fairness": check_fairness,
    "latency": check_latency,
    "size": check_size,
}


#: Gates that look only at the two models' scores and the holdout's columns: they can be
#: checked before the version is registered (latency and size wait for it).
SCORE_GATES = frozenset({"threshold", "non_inferiority", "superiority", "auto", "slices", "fairness"})


def check_gate(gates: Sequence[Any], position: int, inputs: GateInputs, seed: int = 0) -> CheckResult:
    """Check gate ``position`` of ``gates``, with seed ``seed + position`` (see :func:`evaluate_gates`)."""
    gate = gates[position]
    return CHECKS[gate.kind](gate, inputs, seed + position)


def evaluate_gates(
    gates: Sequence[Any], inputs: GateInputs, *, seed: int = 0, done: Mapping[int, CheckResult] | None = None
) -> list[CheckResult]:
    """Check every gate; gate i gets seed ``seed + i``, so adding a gate changes no other's resamples.

    The checks come back in the gates' order; the latency gates are checked last (see
    :attr:`GateInputs.latency_later`). ``done``: checks already made, by position, on these
    same inputs and seed (:func:`check_gate` made them ahead); they are taken as they are.
    """
    done = done or {}
    order = sorted(range(len(gates)), key=lambda position: gates[position].kind == "latency")
    checks = {
        position: done[position] if position in done else check_gate(gates, position, inputs, seed)
        for position in order
    }
    return [checks[position] for position in range(len(gates))]
