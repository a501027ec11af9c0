"""LoRA fine-tuning of a causal language model on prompt/response pairs (task generation), on a tiny
base built offline: what it learns, its perplexity, exact match and token F1, its adapter, its limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evertrain.data.tickets import make_ticket_replies
from evertrain.evaluate.gates import GateInputs, evaluate_gates
from evertrain.evaluate.metrics import DEFAULT_METRICS, compute_many
from evertrain.evaluate.scoring import Scored, predict_outputs
from evertrain.exceptions import SpecError, UsageError
from evertrain.spec import ChampionGate, TrainerSpec, parse_spec
from evertrain.store.adapters import GeneratorModel, load_adapter
from evertrain.store.formats import AdapterArtifact, get_format
from evertrain.train.context import TrainContext
from evertrain.train.trainers import get_trainer, model_bytes
from lorakit import lora_trainer

pytest.importorskip("peft")


def _spec(base: Path, **lora: Any) -> TrainerSpec:
    settings = {"epochs": 3, "max_length": 48, "max_new_tokens": 12, **lora}
    return TrainerSpec.model_validate(lora_trainer(base, **settings))


def _context() -> TrainContext:
    return TrainContext(
        task="generation",
        target="response",
        features=["prompt"],
        seed=1,
        log=lambda line: None,
        num_threads=1,
    )


@pytest.fixture(scope="module")
def replies() -> pd.DataFrame:
    return make_ticket_replies(600, seed=4)


@pytest.fixture(scope="module")
def generator(tiny_causal_base: Path, replies: pd.DataFrame) -> tuple[Any, TrainContext]:
    """A generator fine-tuned on 400 pairs (the next 80 for its valid loss), shared by the tests here."""
    context = _context()
    model = get_trainer(_spec(tiny_causal_base)).fit(replies[:400], replies[400:480], context)
    return model, context


def test_fine_tuning_teaches_the_replies(
    tiny_causal_base: Path, replies: pd.DataFrame, generator: tuple[Any, TrainContext]
) -> None:
    model, context = generator
    holdout = replies[480:]
    tuned_out, _ = predict_outputs(model, holdout, ["prompt"], "generation", "response")
    tuned = compute_many(DEFAULT_METRICS["generation"], tuned_out)
    # One step at a negligible rate: the base as it was, the same adapter shape at (almost) zero.
    untouched = get_trainer(_spec(tiny_causal_base, max_steps=1, learning_rate=1e-8)).fit(
        replies[:16], replies[16:32], _context()
    )
    before_out, _ = predict_outputs(untouched, holdout, ["prompt"], "generation", "response")
    before = compute_many(DEFAULT_METRICS["generation"], before_out)
    # the gates compare two generators on the same rows with the paired bootstrap
    gates = [
        ChampionGate(kind="superiority", metric="perplexity"),
        ChampionGate(kind="superiority", metric="token_f1"),
        ChampionGate(kind="non_inferiority", metric="exact_match", margin=0.05),
    ]
    checks = evaluate_gates(gates, GateInputs(tuned_out, before_out, champion_version=1), seed=3)
    assert all(c.passed for c in checks), [c.reason for c in checks]
    backwards = evaluate_gates(gates[:2], GateInputs(before_out, tuned_out, champion_version=1), seed=3)
    assert not any(c.passed for c in backwards), [c.reason for c in backwards]
    assert tuned["perplexity"] is not None and before["perplexity"] is not None
    assert tuned["perplexity"] < before["perplexity"] / 5, (tuned, before)
    assert tuned["token_f1"] is not None and tuned["token_f1"] > 0.5, tuned
    assert before["token_f1"] is not None and before["token_f1"] < 0.3, before
    # the valid loss is the negative log-likelihood per response token, and it fell
    assert context.curves["valid_loss"][-1] < context.curves["valid_loss"][0]
    assert context.info["steps_run"] == 3 * 25 and context.info["stopped"] == "epochs"
    answers = model.predict(holdout[:8])
    assert sum(" desk" in a for a in answers) >= 6, answers  # it routes (the tiny base errs on words)


def test_the_adapter_round_trips_and_generates_the_same_answers(
    replies: pd.DataFrame, generator: tuple[Any, TrainContext]
) -> None:
    model, _ = generator
    framework, blob = model_bytes(model)
    assert framework == "lora" and len(blob) < 100_000  # the LoRA weights, no head, never the base
    artifact = get_format("lora").loads(blob)
    assert isinstance(artifact, AdapterArtifact)
    assert artifact.meta["kind"] == "causal_lm" and artifact.meta["max_new_tokens"] == 12
    assert not any(k.startswith("head.") for k in artifact.tensors)
    again = load_adapter(artifact)
    assert isinstance(again, GeneratorModel)
    rows = replies[500:506]
    assert list(again.predict(rows)) == list(model.predict(rows))
    nll, tokens = again.likelihood(rows, list(rows["response"]))
    mine, counted = model.likelihood(rows, list(rows["response"]))
    assert np.allclose(nll, mine, rtol=1e-4) and (tokens == counted).all() and (tokens > 3).all()
    # the scores a training hands to the gates survive the trip through their file
    outputs, _ = predict_outputs(model, rows, ["prompt"], "generation", "response")
    back = Scored.from_arrays(Scored(outputs).arrays(), None, None).outputs
    assert compute_many(["perplexity", "token_f1"], back) == compute_many(["perplexity", "token_f1"], outputs)


def test_answers_stop_at_the_token_limit(replies: pd.DataFrame, generator: tuple[Any, TrainContext]) -> None:
    model, _ = generator
    rows = replies[520:526]
    short = model.predict(rows, max_new_tokens=2)
    tokenizer = model.base.tokenizer
    assert all(len(tokenizer(a, add_special_tokens=False)["input_ids"]) <= 3 for a in short), short
    full = model.predict(rows, max_new_tokens=500)  # more than its own limit: its own limit (12)
    assert list(full) == list(model.predict(rows))
    assert all(f.startswith(s[:3]) for s, f in zip(short, full, strict=True))  # greedy: the same start


def test_generation_settings_are_checked(tiny_causal_base: Path, replies: pd.DataFrame) -> None:
    text = "model: {name: m, target: response, task: generation}\ndata: {source: {kind: csv, path: x.csv}}\n"
    with pytest.raises(SpecError, match="task generation needs a lora trainer"):
        parse_spec(text)
    # the tiny base reads 64 tokens: an answer of 64 new tokens leaves no room for its prompt
    with pytest.raises(UsageError, match="max_new_tokens is 64"):
        get_trainer(_spec(tiny_causal_base, max_new_tokens=64)).fit(replies[:16], replies[16:32], _context())
