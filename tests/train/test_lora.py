"""The LoRA trainer on a tiny base built offline: learning, early stopping, warm start, settings, refusals."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evertrain.data.tickets import NEW_INTENT, make_support_tickets
from evertrain.exceptions import DataValidationError, TrainingFailed, UsageError
from evertrain.spec import Spec, TrainerSpec
from evertrain.store.adapters import load_adapter
from evertrain.store.bases import LOADS, base_digest, resolve_location, store_base
from evertrain.store.formats import AdapterArtifact, get_format
from evertrain.train.context import TrainContext
from evertrain.train.trainers import get_trainer, model_bytes
from lorakit import lora_trainer

pytest.importorskip("peft")


def _spec(base: Path, **lora: Any) -> TrainerSpec:
    return TrainerSpec.model_validate(lora_trainer(base, **{"epochs": 2, "max_length": 40, **lora}))


def _context(**overrides: Any) -> TrainContext:
    values: dict[str, Any] = {
        "task": "multiclass",
        "target": "intent",
        "features": ["text"],
        "seed": 1,
        "log": lambda line: None,
        "num_threads": 1,
    }
    values.update(overrides)
    return TrainContext(**values)


@pytest.fixture(scope="module")
def tickets() -> pd.DataFrame:
    return make_support_tickets(900, seed=4, change_at=500)


@pytest.fixture(scope="module")
def trained(tiny_base: Path, tickets: pd.DataFrame) -> tuple[Any, TrainContext]:
    """One adapter fine-tuned on the tickets from before the change, shared by the tests here."""
    context = _context()
    return get_trainer(_spec(tiny_base)).fit(tickets[:320], tickets[320:400], context), context


def test_fine_tuning_learns_the_intents_and_the_adapter_round_trips(
    tiny_base: Path, tickets: pd.DataFrame, trained: tuple[Any, TrainContext]
) -> None:
    train, holdout = tickets[:320], tickets[400:500]
    model, context = trained
    accuracy = float((model.predict(holdout) == holdout["intent"].to_numpy()).mean())
    majority = float(holdout["intent"].value_counts(normalize=True).iloc[0])
    assert accuracy > majority + 0.3, (accuracy, majority)
    assert context.info["base_model_sha256"] == base_digest(str(tiny_base))
    assert context.curves["train_loss"][-1] < context.curves["train_loss"][0]
    assert context.info["steps_run"] == 2 * math.ceil(320 / 16)
    framework, blob = model_bytes(model)
    assert framework == "lora" and len(blob) < 200_000  # the adapter, never the base
    artifact = get_format("lora").loads(blob)
    assert isinstance(artifact, AdapterArtifact) and artifact.meta["classes"] == sorted(
        train["intent"].unique()
    )
    again = load_adapter(artifact)  # from where it was trained, checked against the hash
    np.testing.assert_allclose(again.predict_proba(holdout), model.predict_proba(holdout), atol=1e-5)
    with pytest.raises(DataValidationError, match="not a LoRA adapter"):
        get_format("lora").loads(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")


def test_passes_that_score_whole_texts_build_no_key_value_cache(
    tiny_base: Path, tickets: pd.DataFrame, trained: tuple[Any, TrainContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training, the valid loss and a classifier's answers never read a decoder's cache back, so
    they ask for none; the answers are the ones a pass that built it gives."""
    import torch
    from transformers.models.gpt2 import modeling_gpt2

    from evertrain.store.adapters import TokenIds, text_logits

    model = trained[0]
    rows = tickets[400:440]
    batch = TokenIds.of(model.base.tokenizer, list(rows["text"]), 40).batch(np.arange(len(rows)))
    with torch.inference_mode(), model.base.using(model.adapter_name) as peft:
        cached = peft(**batch, use_cache=True)
        assert cached.past_key_values is not None  # the base builds one when not told otherwise
        hidden = cached.last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        expected = torch.nn.functional.linear(pooled, model._weight, model._bias)
        np.testing.assert_allclose(text_logits(peft, model._weight, model._bias, batch), expected, atol=1e-5)
    built: list[int] = []

    class Counted(modeling_gpt2.DynamicCache):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(modeling_gpt2, "DynamicCache", Counted)
    model.predict(rows)
    get_trainer(_spec(tiny_base, epochs=1, max_steps=2)).fit(tickets[:64], tickets[64:96], _context())
    assert built == []


def test_adapters_share_one_base_and_switch_in_place(
    tiny_base: Path, tickets: pd.DataFrame, trained: tuple[Any, TrainContext]
) -> None:
    train, valid = tickets[:200], tickets[200:260]
    first = get_format("lora").loads(model_bytes(trained[0])[1])
    second = get_format("lora").loads(
        model_bytes(get_trainer(_spec(tiny_base, epochs=1, r=4)).fit(train, valid, _context(seed=2)))[1]
    )
    digest = first.meta["base_model_sha256"]
    models = [load_adapter(first), load_adapter(second), load_adapter(first)]
    assert LOADS[digest] == 1 and len({id(m.base) for m in models}) == 1
    rows = tickets[300:340]
    answers = [m.predict_proba(rows) for m in models]
    np.testing.assert_allclose(answers[0], answers[2], atol=1e-6)  # same adapter, same answers
    assert not np.allclose(answers[0], answers[1])
    name = models[1].adapter_name
    del models[1]
    assert name not in next(iter({m.base for m in models})).adapters  # dropped with its model


def test_early_stopping_on_the_valid_loss(tiny_base: Path, tickets: pd.DataFrame) -> None:
    train = tickets[:240]
    # Labels with no relation to the text: the valid loss can only get worse while training fits noise.
    valid = tickets[240:320].assign(
        intent=np.random.default_rng(0).permutation(tickets["intent"][240:320].to_numpy())
    )
    context = _context()
    get_trainer(_spec(tiny_base, epochs=8, eval_every=3, patience=2, learning_rate=3e-2)).fit(
        train, valid, context
    )
    assert context.info["stopped"] == "early_stopping"
    assert context.info["steps_run"] < 8 * math.ceil(240 / 16)
    curve = context.curves["valid_loss"]
    assert context.info["valid_loss"] == min(curve) and len(curve) >= 3


def test_warm_start_continues_from_the_parent_adapter_and_learns_a_new_intent(
    tiny_base: Path, tickets: pd.DataFrame, trained: tuple[Any, TrainContext]
) -> None:
    parent_artifact = get_format("lora").loads(model_bytes(trained[0])[1])
    after = tickets[500:]
    assert NEW_INTENT in set(after["intent"])
    context = _context(parent=parent_artifact)
    child = get_trainer(_spec(tiny_base, warm_start=True, epochs=1)).fit(after[:250], after[250:320], context)
    assert context.info["warm_start_classes"] == 4 and NEW_INTENT in list(child.classes_)
    holdout = after[320:]
    assert (child.predict(holdout) == holdout["intent"].to_numpy()).mean() > 0.6
    # A fresh adapter from the same few rows and steps starts from nothing: higher first valid loss.
    fresh = _context()
    get_trainer(_spec(tiny_base, epochs=1)).fit(after[:250], after[250:320], fresh)
    assert context.curves["valid_loss"][0] < fresh.curves["valid_loss"][0]


def test_accumulation_precision_and_time_limit(tiny_base: Path, tickets: pd.DataFrame) -> None:
    train, valid = tickets[:128], tickets[128:160]
    context = _context()
    get_trainer(_spec(tiny_base, epochs=1, batch_size=8, grad_accum_steps=4, precision="bf16")).fit(
        train, valid, context
    )
    assert context.info["steps_run"] == 128 // 8 // 4
    with pytest.raises(TrainingFailed, match="time limit"):
        get_trainer(_spec(tiny_base, epochs=1)).fit(train, valid, _context(deadline=time.monotonic() - 1))
    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        get_trainer(_spec(tiny_base, precision="fp16", device="cpu")).fit(train, valid, _context())


def test_bad_settings_and_bases_are_refused_by_name(tiny_base: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="never from a model hub"):
        resolve_location("meta-llama/Llama-3-8B")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(DataValidationError, match="pickled weights"):
        base_digest(str(pickled))
    with pytest.raises(ValueError, match="needs 'lora"):
        TrainerSpec(kind="lora")
    with pytest.raises(ValueError, match="task must be binary, multiclass or generation"):
        Spec.model_validate(
            {
                "model": {
                    "name": "t",
                    "task": "regression",
                    "target": "y",
                    "trainer": _spec(tiny_base).model_dump(),
                },
                "data": {"source": {"kind": "csv", "path": "t.csv"}},
            }
        )


def test_a_base_is_stored_once(tiny_base: Path, tmp_path: Path) -> None:
    from evertrain.store.artifacts import ArtifactStore

    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    digest = store_base(artifacts, str(tiny_base))
    files = sorted(p for p in (tmp_path / "artifacts" / "sha256").rglob("*") if p.is_file())
    assert store_base(artifacts, str(tiny_base), digest) == digest
    assert sorted(p for p in (tmp_path / "artifacts" / "sha256").rglob("*") if p.is_file()) == files
    assert len(files) == len([p for p in tiny_base.iterdir() if not p.name.startswith(".")]) + 1
