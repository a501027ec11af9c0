"""Text drift: lengths, unknown and new tokens, and the char n-gram domain classifier."""

from __future__ import annotations

import pytest

from evertrain.data.tickets import NEW_PRODUCTS, make_support_tickets
from evertrain.exceptions import DataValidationError
from evertrain.monitor.text import text_drift


def test_new_products_and_intent_drift_and_same_stream_does_not() -> None:
    rows = make_support_tickets(1600, seed=5, change_at=800)
    before, later_before, after = rows["text"][:400], rows["text"][400:800], rows["text"][800:1200]
    calm = text_drift(before, later_before, n_permutations=300)
    assert not calm.drifted, calm.to_dict()
    assert calm.unknown["rate"] < calm.unknown["threshold"]
    moved = text_drift(before, after, n_permutations=300)
    assert moved.drifted and moved.unknown["drifted"] and moved.domain["drifted"], moved.to_dict()
    assert {p.lower() for p in NEW_PRODUCTS} <= {w for w, _ in moved.unknown["top_new"][:5]}
    assert moved.new_tokens["n_new"] >= len(NEW_PRODUCTS)
    assert moved.domain["auc"] > moved.domain["threshold"] >= moved.domain["chance_auc"]


def test_longer_texts_drift_in_length_only() -> None:
    rows = make_support_tickets(800, seed=2)
    before = list(rows["text"][:400])
    longer = [f"{t}. {t}" for t in rows["text"][400:]]
    report = text_drift(before, longer, n_permutations=200)
    assert report.length["drifted"] and report.length["current_mean"] > 1.5 * report.length["reference_mean"]
    assert not report.unknown["drifted"]


def test_a_model_tokenizer_counts_its_unknown_token() -> None:
    pieces = {"my", "order", "is", "late"}

    def tokenize(text: str) -> list[str]:
        return [w if w in pieces else "<unk>" for w in text.split()]

    report = text_drift(
        ["my order is late"] * 60,
        ["my Zephyrix order is late"] * 60,
        tokenize=tokenize,
        unknown_token="<unk>",
        n_permutations=100,
    )
    assert report.unknown["rate"] == pytest.approx(0.2) and report.unknown["drifted"]


def test_too_few_texts_are_refused() -> None:
    with pytest.raises(DataValidationError, match="reference holds 1 text"):
        text_drift(["one"], ["a", "b"])
