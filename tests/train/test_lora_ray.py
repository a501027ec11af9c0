"""Distributed LoRA fine-tuning: the same training loop as a Ray Train job (TorchTrainer, DDP on gloo)
with two workers on a local Ray, against the same job in one process."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evertrain.data.tickets import make_support_tickets
from evertrain.exceptions import UsageError
from evertrain.spec import TrainerSpec
from evertrain.store import Store
from evertrain.train.context import TrainContext
from evertrain.train.ddp import Ranks
from evertrain.train.pipeline import train_model
from evertrain.train.predictor import load_version
from evertrain.train.trainers import get_trainer
from lorakit import lora_trainer, text_project

pytest.importorskip("peft")
pytest.importorskip("ray.train.torch")
pytestmark = pytest.mark.slow  # a Ray Train job starts its workers in about twenty seconds


class _Killed(Exception):
    """Stands for a kill in the middle of a fine-tuning."""


def _without_dropout(base: Path, folder: Path) -> Path:
    """``base`` with its own dropout off (the weights are the same files)."""
    shutil.copytree(base, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update({k: 0.0 for k in config if k.endswith("pdrop") or k.endswith("dropout")})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_two_ddp_workers_on_ray_make_the_adapter_one_process_makes(
    tiny_base: Path, project: Path, project_store: Store, clock: Any, ray_instance: Any
) -> None:
    # Without dropout nothing is drawn at random inside a step, so the two runs differ only in how
    # float sums are ordered: DDP averages the workers' weighted gradients over their parts of
    # each micro-batch, which is the gradient of the whole micro-batch one process takes. Their
    # losses then agree to float32 rounding (measured here: to about 1e-7), so 1e-4 relative
    # leaves a wide margin for it and still catches a change of the rows a step learns from
    # (one row repeated per epoch moved the valid loss by 6e-3). With dropout the workers draw
    # other masks than one process would, and the runs differ as two seeds do (6e-2 here).
    base = _without_dropout(tiny_base, project / "base")
    rows = make_support_tickets(300, seed=12)
    rows.to_csv(project / "tickets.csv", index=False)
    clock.now = float(rows["label_ts"].max()) + 1.0
    store, window = project_store, {"kind": "sliding", "rows": 300}
    settings: dict[str, Any] = {"max_length": 32, "dropout": 0.0, "eval_every": 4, "epochs": 2}
    gates = [{"kind": "threshold", "metric": "accuracy", "min": 0.5}]
    alone = text_project("alone", lora_trainer(base, **settings), window=window, gates=gates)
    distributed = {"distributed": {"workers": 2}}
    on_ray = text_project("on-ray", lora_trainer(base, **settings, **distributed), window=window, gates=gates)

    local = train_model(store, alone, project, reason="one process")
    ray = train_model(store, on_ray, project, reason="two workers")
    assert local.outcome == ray.outcome == "accepted", (local.report, ray.report)

    # Two workers really ran, and the version and its run say so.
    version = store.registry.get_version("on-ray", 1)
    assert version.params["workers"] == 2 and version.params["distributed_backend"] == "gloo"
    assert ray.metrics["workers"] == 2 and local.metrics["workers"] == 1
    training = store.lineage.of_version("on-ray", 1)["training"]
    assert training["workers"] == 2 and training["lora"]["distributed"]["workers"] == 2
    runs = [store.runs.get(r.run_id).result for r in (local, ray)]
    assert "rank 0 of 2: LoRA:" in runs[1]["log_tail"]

    # The same steps, the same valid losses, the same holdout metrics.
    assert ray.metrics["steps_run"] == local.metrics["steps_run"] > 4
    assert ray.metrics["best_step"] == local.metrics["best_step"]
    curves = [r["curves"] for r in runs]
    assert len(curves[0]["valid_loss"]) >= 2
    for name in ("train_loss", "valid_loss"):
        np.testing.assert_allclose(curves[1][name], curves[0][name], rtol=1e-4, err_msg=name)
    for name, value in local.metrics["holdout"].items():
        assert ray.metrics["holdout"][name] == pytest.approx(value, rel=1e-3, abs=1e-3), name

    # The adapter is an adapter like any other: stored small, loaded as serving loads it, predicting.
    assert version.framework == "lora" and version.size_bytes < 200_000
    texts = {"text": list(rows["text"][-20:])}
    served = load_version(store, "on-ray", 1, spec=on_ray.model).predict(texts)[0]
    assert served == load_version(store, "alone", 1, spec=alone.model).predict(texts)[0]
    assert set(served) <= set(rows["intent"])


def test_a_distributed_job_resumes_from_the_checkpoint_of_a_killed_one(
    tiny_base: Path, tmp_path: Path, ray_instance: Any
) -> None:
    base = _without_dropout(tiny_base, tmp_path / "base")
    rows = make_support_tickets(200, seed=13)
    train, valid = rows[:150], rows[150:]
    lora = {"epochs": 2, "max_length": 32, "dropout": 0.0, "patience": None}

    def context(**changes: Any) -> TrainContext:
        values: dict[str, Any] = {"task": "multiclass", "target": "intent", "features": ["text"], "seed": 3}
        values.update(log=lambda line: None, num_threads=1, fingerprint="same job", checkpoint_seconds=None)
        values.update(changes)
        return TrainContext(**values)

    def stop_at(step: int) -> Any:
        def progress(done: int, total: int | None, what: str) -> None:
            if done == step:
                raise _Killed

        return progress

    folder = tmp_path / "checkpoints"
    alone = TrainerSpec.model_validate(lora_trainer(base, seed=3, **lora))
    with pytest.raises(_Killed):
        get_trainer(alone).fit(
            train, valid, context(checkpoint_dir=folder, checkpoint_every=5, on_progress=stop_at(8))
        )
    assert json.loads((folder / "lora_state.json").read_text())["step"] == 5

    resumed = context(checkpoint_dir=folder, checkpoint_every=5)
    two = TrainerSpec.model_validate(lora_trainer(base, seed=3, distributed={"workers": 2}, **lora))
    adapter = get_trainer(two).fit(train, valid, resumed)
    assert resumed.info["resumed_from_step"] == 5 and resumed.info["workers"] == 2
    assert json.loads((folder / "lora_state.json").read_text())["step"] == resumed.info["steps_run"]

    straight = context()
    uninterrupted = get_trainer(alone).fit(train, valid, straight)
    assert resumed.info["steps_run"] == straight.info["steps_run"] == 2 * 10
    np.testing.assert_allclose(resumed.curves["valid_loss"], straight.curves["valid_loss"], rtol=1e-4)
    np.testing.assert_allclose(
        adapter.predict_proba(rows[150:]), uninterrupted.predict_proba(rows[150:]), atol=1e-4
    )


def test_a_cluster_without_the_workers_asked_for_is_refused_by_name(
    tiny_base: Path, ray_instance: Any
) -> None:
    rows = make_support_tickets(60, seed=1)
    context = TrainContext(task="multiclass", target="intent", features=["text"], log=lambda line: None)
    for lora, message in [
        ({"distributed": {"workers": 3}}, "asks for 3 workers of 1 CPUs, but the Ray cluster has 2 CPUs"),
        (
            {"distributed": {"workers": 2}, "device": "cuda"},
            "cuda with 2 distributed workers, but the Ray cluster has",
        ),
    ]:
        spec = TrainerSpec.model_validate(lora_trainer(tiny_base, **lora))
        with pytest.raises(UsageError, match=re.escape(message)):
            get_trainer(spec).fit(rows[:40], rows[40:], context)


@pytest.mark.parametrize("n, world, batch", [(32, 2, 16), (12, 3, 6), (11, 2, 4), (9, 4, 4), (5, 3, 3)])
def test_ranks_deal_out_each_micro_batch_and_weigh_their_parts_into_its_mean(
    n: int, world: int, batch: int
) -> None:
    from torch.utils.data import DistributedSampler

    order = np.random.default_rng(n).permutation(n)
    values = np.random.default_rng(world).normal(size=n)  # a loss per row
    dealt: list[list[int]] = [[] for _ in range(world)]
    for start in range(0, n, batch):
        rows = order[start : start + batch]
        parts = [Ranks(rank, world).split(rows) for rank in range(world)]
        # Every row once, on one rank (a rank left without a row weighs nothing).
        real = [part for part, weight in parts if weight]
        assert sorted(np.concatenate(real).tolist()) == sorted(rows.tolist())
        # DDP averages the ranks' gradients: of the weighted means, the mean of the whole batch.
        averaged = np.mean([weight * values[part].mean() for part, weight in parts])
        assert averaged == pytest.approx(values[rows].mean(), rel=1e-12)
        for rank, (part, weight) in enumerate(parts):
            dealt[rank] += part.tolist() if weight else []
    if n % world == 0 and batch % world == 0:  # then the parts are those DistributedSampler deals out
        for rank in range(world):
            sampler = DistributedSampler(list(order), num_replicas=world, rank=rank, shuffle=False)
            assert dealt[rank] == [int(order[i]) for i in sampler]
    alone = Ranks()
    assert alone.split(order)[0] is order and alone.total(1.5, 2) == [1.5, 2.0] and alone.from_lead(3) == 3
