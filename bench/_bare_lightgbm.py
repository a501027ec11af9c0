"""A bare LightGBM training as a user would script it: read the train and valid parts, fit with
early stopping, print the iterations kept (as JSON). ``bench/train_overhead.py`` runs it as a
fresh process: the anchor of a cold ``evertrain`` training, which also starts a Python process
for its job.

Run: ``python bench/_bare_lightgbm.py '{"train": PATH, "valid": PATH, "features": [...], ...}'``
"""

from __future__ import annotations

import json
import sys

# LightGBM imports scikit-learn (and SciPy) for its scikit-learn wrappers when it can; a
# LightGBM job of evertrain's does without them, and so does this script, so that both
# sides import the same libraries.
sys.modules["sklearn"] = None  # type: ignore[assignment]

import lightgbm  # noqa: E402
import pandas as pd  # noqa: E402


def main() -> None:
    job = json.loads(sys.argv[1])
    features, target = job["features"], job["target"]

    def part(path: str) -> lightgbm.Dataset:
        rows = pd.read_parquet(path, columns=[*features, target])
        X = rows[features]
        text = [c for c in features if not pd.api.types.is_numeric_dtype(X[c])]
        return X.astype(dict.fromkeys(text, "category")), rows[target].astype(float)

    X, y = part(job["train"])
    Xv, yv = part(job["valid"])
    train_set = lightgbm.Dataset(X, y)
    booster = lightgbm.train(
        job["params"],
        train_set,
        num_boost_round=job["rounds"],
        valid_sets=[lightgbm.Dataset(Xv, yv, reference=train_set)],
        callbacks=[lightgbm.early_stopping(job["early_stopping"], verbose=False)],
    )
    print(json.dumps({"iterations": booster.current_iteration(), "best": booster.best_iteration}))


if __name__ == "__main__":
    main()
