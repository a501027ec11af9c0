"""The LoRA tests' projects: a text model's spec over a CSV source, from the parts each test varies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evertrain.spec import Spec


def lora_trainer(base: Path, *, seed: int = 1, warm_start: bool = False, **lora: Any) -> dict[str, Any]:
    """A ``trainer`` section of kind lora on ``base`` (batches of 16 at rate 0.01 unless ``lora`` says)."""
    settings = {"base_model": str(base), "batch_size": 16, "learning_rate": 0.01, **lora}
    return {"kind": "lora", "seed": seed, "warm_start": warm_start, "lora": settings}


def text_project(
    name: str,
    trainer: dict[str, Any],
    *,
    window: dict[str, Any],
    gates: Sequence[dict[str, Any]],
    task: str = "multiclass",
    target: str = "intent",
    feature: str = "text",
    csv: str = "tickets.csv",
    holdout: float = 0.25,
    **sections: Any,
) -> Spec:
    """The spec of a model reading one text ``feature`` from ``csv`` (event time ``ts``, labels at
    ``label_ts``), trained inline; ``sections`` add the rest (triggers, ...). By default the support
    tickets' intent classifier."""
    return Spec.model_validate(
        {
            "model": {
                "name": name,
                "task": task,
                "target": target,
                "features": [feature],
                "trainer": trainer,
            },
            "data": {
                "source": {"kind": "csv", "path": csv},
                "time_column": "ts",
                "label_time_column": "label_ts",
            },
            "training": {
                "window": window,
                "holdout": {"fraction": holdout, "min_rows": 0},
                "executor": "inline",
            },
            "gates": list(gates),
            **sections,
        }
    )
