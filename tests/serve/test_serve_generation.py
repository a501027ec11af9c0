"""A generator end to end: LoRA fine-tuning on prompt/response pairs -> register -> perplexity, token
F1 and exact-match gates -> served over KServe V1, prompts in and answers out, with a token limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from servekit import LiveServer, client, wait_until

from evertrain.data.logs import FEEDBACK, PREDICTIONS, read_log
from evertrain.data.tickets import make_ticket_replies
from evertrain.serve import create_app
from evertrain.spec import LogSpec, ServingSpec, Spec
from evertrain.store import Store
from evertrain.train.pipeline import train_model
from lorakit import lora_trainer, text_project

pytest.importorskip("peft")
NAME = "replies"


def _spec(base: Path) -> Spec:
    return text_project(
        NAME,
        lora_trainer(base, epochs=3, max_length=48, max_new_tokens=12),
        task="generation",
        target="response",
        feature="prompt",
        csv="replies.csv",
        window={"kind": "sliding", "rows": 600},
        holdout=0.2,
        gates=[
            {"kind": "threshold", "metric": "perplexity", "max": 10.0},
            {"kind": "threshold", "metric": "token_f1", "min": 0.4},
            {"kind": "non_inferiority", "metric": "exact_match", "margin": 0.05},
        ],
    )


def test_a_generator_is_trained_gated_and_served(
    tiny_causal_base: Path, project: Path, project_store: Store, clock: Any
) -> None:
    store, spec = project_store, _spec(tiny_causal_base)
    rows = make_ticket_replies(640, seed=8)
    rows[:600].to_csv(project / "replies.csv", index=False)
    clock.now = float(rows["label_ts"][:600].max()) + 1.0

    result = train_model(store, spec, project)
    assert result.outcome == "accepted", result.report
    report = result.report
    assert report is not None
    checks = {c["evidence"]["metric"]: c for c in report["checks"]}
    assert set(checks) == {"perplexity", "token_f1", "exact_match"}, report["checks"]
    assert all(c["passed"] for c in checks.values()), report["checks"]
    version = store.registry.get_version(NAME, 1)
    assert version.framework == "lora" and version.size_bytes < 100_000
    assert version.metrics["perplexity"] < 10 and version.metrics["token_f1"] > 0.4, version.metrics
    assert version.params["base_model_sha256"] and store.artifacts.exists(version.params["base_model_sha256"])
    store.registry.promote(NAME, 1, actor="test")

    app = create_app(store, spec, serving=ServingSpec(poll_seconds=0.05, log=LogSpec(flush_seconds=0.2)))
    prompts = list(rows["prompt"][600:608])
    with LiveServer(app) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 60)
        r = c.post(f"/v1/models/{NAME}:predict", json={"instances": [{"prompt": p} for p in prompts]})
        assert r.status_code == 200, r.text
        answers = r.json()["predictions"]
        assert len(answers) == 8 and all(isinstance(a, str) for a in answers)
        assert sum(" desk" in a for a in answers) >= 6, answers
        ids = r.json()["request_ids"]

        short = c.post(
            f"/v1/models/{NAME}:predict",
            json={"instances": [{"prompt": prompts[0]}], "parameters": {"max_new_tokens": 2}},
        )
        assert short.status_code == 200, short.text
        assert len(short.json()["predictions"][0]) < len(answers[0]), (short.json(), answers[0])
        too_long = c.post(
            f"/v1/models/{NAME}:predict",
            json={"instances": [{"prompt": prompts[0]}], "parameters": {"max_new_tokens": 13}},
        )
        assert too_long.status_code == 422 and "parameters.max_new_tokens" in too_long.text, too_long.text
        assert "12 tokens" in too_long.text
        no_classes = c.post(
            f"/v1/models/{NAME}:predict",
            json={"instances": [{"prompt": prompts[0]}], "parameters": {"return": "probabilities"}},
        )
        assert no_classes.status_code == 422 and "generation model" in no_classes.text, no_classes.text

        # the reference answers come back as labels, as any text
        labels = [
            {"request_id": i, "label": str(y)} for i, y in zip(ids, rows["response"][600:608], strict=True)
        ]
        fed = c.post(f"/v1/models/{NAME}:feedback", json={"labels": labels})
        assert fed.status_code == 200 and fed.json()["accepted"] == 8, fed.text
        bad = c.post(f"/v1/models/{NAME}:feedback", json={"labels": [{"request_id": ids[0], "label": 3}]})
        assert bad.status_code == 422 and "reference answer" in bad.text, bad.text

    assert store.logs_url is not None
    wait_until(lambda: read_log(store.logs_url or "", PREDICTIONS, NAME).num_rows >= 9, 30)
    logged = read_log(store.logs_url, PREDICTIONS, NAME)
    assert set(logged["prediction"].to_pylist()) >= set(answers)  # answers logged as text
    assert logged["prompt"].to_pylist()[:8] == prompts or set(prompts) <= set(logged["prompt"].to_pylist())
    wait_until(lambda: read_log(store.logs_url or "", FEEDBACK, NAME).num_rows == 8, 30)
    feedback = read_log(store.logs_url, FEEDBACK, NAME)
    assert pc.all(pc.starts_with(feedback["label"], "route to the")).as_py()
