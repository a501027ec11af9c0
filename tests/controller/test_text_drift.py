"""The controller on a text model: served tickets from a new domain trigger a LoRA retrain through
the text drift tests; tickets like those it was trained on trigger nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evertrain.controller.clock import ManualClock
from evertrain.controller.loop import Controller
from evertrain.data.logs import PREDICTIONS
from evertrain.data.logs.layout import partition_date, partition_folder
from evertrain.data.tickets import make_support_tickets
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.train.pipeline import train_model
from evertrain.train.predictor import load_version
from lorakit import lora_trainer, text_project

pytest.importorskip("peft")

NAME = "tickets"
CHANGE_AT = 600


def _spec(base: Path) -> Spec:
    return text_project(
        NAME,
        lora_trainer(base, seed=3, epochs=2, max_length=40),
        window={"kind": "sliding", "rows": 300},
        gates=[{"kind": "threshold", "metric": "accuracy", "min": 0.5}],
        # Drift alone decides here: one window is enough, without waiting for labels.
        triggers={
            "drift": {"consecutive": 1, "min_labels_after": 0, "confirm": False},
            "performance": {"enabled": False},
        },
    )


@pytest.fixture(scope="module")
def tickets() -> pd.DataFrame:
    return make_support_tickets(1000, seed=5, change_at=CHANGE_AT)


@pytest.fixture(scope="module")
def champion_project(
    tiny_base: Path, tickets: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A project whose champion, version 1, was fine-tuned on the first 300 tickets."""
    project = tmp_path_factory.mktemp("text-drift") / "project"
    project.mkdir()
    spec = _spec(tiny_base)
    tickets[:300].to_csv(project / "tickets.csv", index=False)
    store = Store.for_project(project, clock=lambda: float(tickets["label_ts"][:300].max()) + 1).open()
    result = train_model(store, spec, project)
    assert result.version == 1 and result.passed, result.report
    store.registry.promote(NAME, 1, actor="test", expected=None, reason="first version")
    store.close()
    return project


def _serve(store: Store, spec: Spec, rows: pd.DataFrame) -> None:
    """Score ``rows`` with the champion as a replica does and write them to the prediction log."""
    preds, _ = load_version(store, NAME, 1, spec=spec.model).predict({"text": list(rows["text"])})
    table = pa.table(
        {
            "request_id": [f"r{i}" for i in rows.index],
            "ts": rows["ts"].to_numpy(),
            "model_version": [1] * len(rows),
            "arm": ["champion"] * len(rows),
            "latency_ms": pa.nulls(len(rows), pa.float64()),
            "prediction": preds,
            "score": pa.nulls(len(rows), pa.float64()),
            "text": list(rows["text"]),
        }
    )
    assert store.logs_url is not None
    day = partition_date(float(rows["ts"].min()))
    folder = Path(partition_folder(store.logs_url, PREDICTIONS, NAME, day))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-served.parquet")


def _cycle(project: Path, tiny_base: Path, tickets: pd.DataFrame, served: slice) -> tuple[Store, Any]:
    """One controller cycle after the tickets of ``served`` were served and labelled."""
    rows = tickets[served]
    spec = _spec(tiny_base)
    clock = ManualClock(float(rows["label_ts"].max()) + 1)
    store = Store.for_project(project, clock=clock).open()
    _serve(store, spec, rows)
    pd.concat([tickets[:300], rows]).to_csv(project / "tickets.csv", index=False)
    return store, Controller(store, spec, project, clock=clock, holder="test").cycle()


def test_tickets_from_a_new_domain_trigger_a_retrain_by_text_drift(
    champion_project: Path, tiny_base: Path, tickets: pd.DataFrame, tmp_path: Path
) -> None:
    project = shutil.copytree(champion_project, tmp_path / "project")
    store, cycle = _cycle(project, tiny_base, tickets, slice(CHANGE_AT + 100, CHANGE_AT + 400))
    drift = cycle["monitor"]["drift"]
    assert drift["drifted_columns"] == ["text"] and drift["share_drifted"] == 1.0
    assert drift["columns"]["text"]["method"] == "text"
    evidence = cycle["monitor"]["text_drift"]["text"]
    # the new product names are what changed, and the tests say so
    new_words = {word for word, _ in evidence["unknown_tokens"]["top_new"]}
    assert {"zephyrix", "quasarro", "kestrelle"} <= new_words, new_words
    assert evidence["domain_classifier"]["auc"] > evidence["domain_classifier"]["threshold"]
    decision = cycle["decide"]
    assert decision["action"] == "retrain" and decision["triggers"] == ["drift"], decision
    assert "text drifted" in decision["reasons"][0]
    trained = cycle["train"]
    assert trained["status"] == "trained" and trained["version"] == 2
    version = store.registry.get_version(NAME, 2)
    assert version.trigger == "drift" and version.framework == "lora"
    store.close()


def test_tickets_like_the_training_ones_trigger_nothing(
    champion_project: Path, tiny_base: Path, tickets: pd.DataFrame, tmp_path: Path
) -> None:
    project = shutil.copytree(champion_project, tmp_path / "project")
    store, cycle = _cycle(project, tiny_base, tickets, slice(300, CHANGE_AT))
    drift = cycle["monitor"]["drift"]
    assert drift["drifted_columns"] == [] and not drift["dataset_drift"]
    assert not cycle["monitor"]["text_drift"]["text"]["drifted"]
    assert cycle["decide"]["action"] == "none", cycle["decide"]
    assert cycle["train"] == {"status": "skipped"}
    assert [v.version for v in store.registry.list_versions(NAME)] == [1]
    store.close()
