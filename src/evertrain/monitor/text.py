"""Drift of a text column: lengths, unknown and new tokens, and a domain classifier on character n-grams.

Text has no bins and no categories worth counting (nearly every text is unique), so a
text column is compared by what changes when its domain does:

length
    The token counts of the texts, compared by a two-sample Kolmogorov-Smirnov test; the
    shift matters when the KS distance is at least :data:`MIN_LENGTH_KS` and significant.
unknown tokens
    The share of the current texts' tokens never seen in the reference (a product name
    that did not exist, a new error code), against the same share between the two halves
    of the reference, which is what chance gives at this size. It matters when it rose by
    :data:`MIN_UNKNOWN_RISE` and a one-sided two-proportion z-test agrees. The new tokens
    seen most often are listed: they are usually what changed.
new tokens
    The share of distinct current tokens that are new (a type rate rather than a token
    rate: a few new names repeated often, or many rare new words).
domain classifier
    A logistic regression on character 2-4-gram TF-IDF learns to tell current texts from
    reference texts, cross-fitted so every text is scored by a model that did not see it;
    its ROC AUC against the permutation threshold, as for tables
    (:func:`evertrain.monitor.multivariate.permutation_threshold`).

``tokenize`` defaults to lower-cased words; pass a model's tokenizer (``tokenizer.tokenize``)
to count the sub-word pieces the model sees, and ``unknown_token`` to count its unknown
token instead of unseen ones.

>>> before = ["my order has not arrived", "refund my order please"] * 50
>>> after = ["my Zephyrix order has not arrived", "refund my Zephyrix order"] * 50
>>> report = text_drift(before, after, n_permutations=200)
>>> report.drifted, report.unknown["top_new"]
(True, [('zephyrix', 100)])
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from evertrain.exceptions import DataValidationError
from evertrain.monitor.multivariate import permutation_threshold

MIN_LENGTH_KS = 0.1
MIN_UNKNOWN_RISE = 0.02
MIN_AUC = 0.55
#: Texts sampled from each side for the domain classifier.
MAX_TEXTS = 5_000
#: Character n-gram features the domain classifier keeps (the most frequent).
MAX_NGRAMS = 20_000
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (the default tokenizer)."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class TextDrift:
    """The text column's verdict and each test's evidence."""

    column: str
    n_reference: int
    n_current: int
    length: dict[str, Any]
    unknown: dict[str, Any]
    new_tokens: dict[str, Any]
    domain: dict[str, Any]

    @property
    def drifted(self) -> bool:
        return bool(self.length["drifted"] or self.unknown["drifted"] or self.domain["drifted"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "drifted": self.drifted,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "length": self.length,
            "unknown_tokens": self.unknown,
            "new_tokens": self.new_tokens,
            "domain_classifier": self.domain,
        }


#: How a text column's verdict is named in a drift report's columns.
TEXT_METHOD = "text"


def column_entry(report: TextDrift) -> dict[str, Any]:
    """A text column's line in a drift report's ``columns`` (DESIGN.md's drift JSON).

    The statistic is the domain classifier's AUC and the effect size its distance from
    chance (``2 * AUC - 1``: 0 when current and reference texts cannot be told apart, 1
    when always); the p-value is the smallest of the three tests', and ``tests`` names
    those that found a shift.
    """
    tests = {"length": report.length, "unknown_tokens": report.unknown, "domain_classifier": report.domain}
    return {
        "kind": TEXT_METHOD,
        "method": TEXT_METHOD,
        "statistic": float(report.domain["auc"]),
        "p_value": float(min(t["p_value"] for t in tests.values())),
        "effect_size": max(0.0, 2.0 * float(report.domain["auc"]) - 1.0),
        "threshold": float(report.domain["threshold"]),
        "drifted": report.drifted,
        "tests": [name for name, t in tests.items() if t["drifted"]],
    }


def with_text_columns(summary: Mapping[str, Any] | None, reports: Sequence[TextDrift]) -> dict[str, Any]:
    """A drift summary (``share_drifted``, ``drifted_columns``, ``dataset_drift``, ``columns``)
    with the text columns' verdicts counted in beside the other columns'.

    ``summary`` is that of the other columns (None when the model reads text alone). The
    dataset drifts when any column does, as :func:`evertrain.monitor.drift` decides.

    >>> before = ["my order has not arrived", "refund my order please"] * 50
    >>> after = ["my Zephyrix order has not arrived", "refund my Zephyrix order"] * 50
    >>> merged = with_text_columns(None, [text_drift(before, after, n_permutations=200)])
    >>> merged["drifted_columns"], merged["share_drifted"], merged["columns"]["text"]["tests"]
    (['text'], 1.0, ['length', 'unknown_tokens', 'domain_classifier'])
    """
    columns = dict((summary or {}).get("columns", {}))
    drifted = list((summary or {}).get("drifted_columns", []))
    for report in reports:
        columns[report.column] = column_entry(report)
        if report.drifted:
            drifted.append(report.column)
    return {
        "share_drifted": len(drifted) / len(columns) if columns else 0.0,
        "drifted_columns": drifted,
        "dataset_drift": bool(drifted) or bool((summary or {}).get("dataset_drift")),
        "columns": columns,
    }


def _texts(values: Sequence[Any], what: str) -> list[str]:
    texts = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]
    if len(texts) < 2:
        raise DataValidationError(f"text drift: the {what} holds {len(texts)} text(s); at least 2 are needed")
    return texts


def _unknown_rate(
    tokens: list[list[str]], vocabulary: set[str], unknown_token: str | None
) -> tuple[int, int]:
    total = sum(len(t) for t in tokens)
    if unknown_token is not None:
        return sum(t.count(unknown_token) for t in tokens), total
    return sum(1 for text in tokens for tok in text if tok not in vocabulary), total


def text_drift(
    reference: Sequence[Any],
    current: Sequence[Any],
    *,
    column: str = "text",
    tokenize: Callable[[str], list[str]] = words,
    unknown_token: str | None = None,
    alpha: float = 0.01,
    n_permutations: int = 1_000,
    max_texts: int = MAX_TEXTS,
    seed: int = 0,
) -> TextDrift:
    """Compare the ``current`` texts with the ``reference`` texts (see the module docstring)."""
    ref, cur = _texts(reference, "reference"), _texts(current, "current")
    rng = np.random.default_rng(seed)
    ref_tokens, cur_tokens = [tokenize(t) for t in ref], [tokenize(t) for t in cur]

    ref_len = np.array([len(t) for t in ref_tokens], dtype=float)
    cur_len = np.array([len(t) for t in cur_tokens], dtype=float)
    ks = stats.ks_2samp(ref_len, cur_len)
    length = {
        "statistic": float(ks.statistic),
        "p_value": float(ks.pvalue),
        "reference_mean": float(ref_len.mean()),
        "current_mean": float(cur_len.mean()),
        "threshold": MIN_LENGTH_KS,
        "drifted": bool(ks.statistic >= MIN_LENGTH_KS and ks.pvalue < alpha),
    }

    vocabulary = {tok for text in ref_tokens for tok in text}
    half = len(ref_tokens) // 2
    first_half = {tok for text in ref_tokens[:half] for tok in text}
    base_unknown, base_total = _unknown_rate(ref_tokens[half:], first_half, unknown_token)
    unknown, total = _unknown_rate(cur_tokens, vocabulary, unknown_token)
    base_rate = base_unknown / max(base_total, 1)
    rate = unknown / max(total, 1)
    pooled = (base_unknown + unknown) / max(base_total + total, 1)
    se = np.sqrt(pooled * (1 - pooled) * (1 / max(base_total, 1) + 1 / max(total, 1)))
    p_unknown = (
        float(stats.norm.sf((rate - base_rate) / se)) if se > 0 else (0.0 if rate > base_rate else 1.0)
    )
    new_counts = Counter(tok for text in cur_tokens for tok in text if tok not in vocabulary)
    unknown_part = {
        "rate": rate,
        "baseline_rate": base_rate,
        "p_value": p_unknown,
        "threshold": base_rate + MIN_UNKNOWN_RISE,
        "drifted": bool(rate - base_rate >= MIN_UNKNOWN_RISE and p_unknown < alpha),
        "top_new": new_counts.most_common(10),
    }
    distinct = {tok for text in cur_tokens for tok in text}
    new_part = {
        "rate": len(new_counts) / max(len(distinct), 1),
        "n_new": len(new_counts),
        "n_distinct": len(distinct),
    }
    return TextDrift(
        column,
        len(ref),
        len(cur),
        length,
        unknown_part,
        new_part,
        _domain(ref, cur, rng, n_permutations, alpha, max_texts, seed),
    )


def _domain(
    ref: list[str],
    cur: list[str],
    rng: np.random.Generator,
    n_permutations: int,
    alpha: float,
    limit: int,
    seed: int,
) -> dict[str, Any]:
    """Cross-fitted AUC of a char n-gram TF-IDF classifier telling current from reference texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    ri = rng.choice(len(ref), size=min(limit, len(ref)), replace=False)
    ci = rng.choice(len(cur), size=min(limit, len(cur)), replace=False)
    texts = [ref[i] for i in ri] + [cur[i] for i in ci]
    y = np.concatenate((np.zeros(len(ri)), np.ones(len(ci))))
    scores = np.empty(y.size)
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    for train, test in folds.split(np.zeros(y.size), y):
        # Fitted on the training fold only, so no n-gram statistics leak from the scored texts.
        vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 4), max_features=MAX_NGRAMS, sublinear_tf=True
        )
        x_train = vectorizer.fit_transform([texts[i] for i in train])
        model = LogisticRegression(C=1.0, max_iter=500, random_state=seed).fit(x_train, y[train])
        scores[test] = model.predict_proba(vectorizer.transform([texts[i] for i in test]))[:, 1]
    auc = float(roc_auc_score(y, scores))
    chance, p_value = permutation_threshold(scores, y, auc, rng, n_permutations, alpha)
    threshold = max(chance, MIN_AUC)
    return {
        "auc": auc,
        "chance_auc": chance,
        "threshold": threshold,
        "p_value": p_value,
        "drifted": bool(auc > threshold),
        "n_reference": len(ri),
        "n_current": len(ci),
    }
