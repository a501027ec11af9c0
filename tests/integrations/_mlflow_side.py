"""MLflow's side of tests/integrations/test_mlflow.py; runs in MLflow's own venv, never imports evertrain.

    python _mlflow_side.py TRACKING_URI CHURN_CSV

Logs the models a team would have in MLflow, on the churn example's data, and prints one
JSON line with their URIs: a LightGBM booster (registered as churn-lgb, version 1), a
scikit-learn model saved with skops and the same one pickled. They take the numeric
columns: a version registered from outside has no training snapshot, and evertrain serves
such a version's inputs as numbers. Each names its pip requirements, as a team's training job
would: MLflow otherwise infers them by loading the model again in a child process, seconds per model.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings

import lightgbm as lgb
import mlflow
import pandas as pd
from sklearn.linear_model import LogisticRegression

NUMERIC = ["tenure_months", "monthly_spend", "support_calls", "visits"]


def main() -> None:
    uri, csv = sys.argv[1], sys.argv[2]
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("team-models")
    frame = pd.read_csv(csv).head(2000)
    X = frame[NUMERIC]
    out = {}
    with mlflow.start_run(run_name="lgb") as run:
        booster = lgb.train(
            {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 1},
            lgb.Dataset(X, frame["churned"]),
            num_boost_round=20,
        )
        mlflow.log_metric("auc", 0.875)
        mlflow.lightgbm.log_model(
            booster, name="model", registered_model_name="churn-lgb", pip_requirements=["lightgbm"]
        )
        out["lgb_run"] = f"runs:/{run.info.run_id}/model"
        out["lgb_raw"] = booster.predict(X.head(20)).tolist()
    out["lgb_model"] = "models:/churn-lgb/1"
    linear = LogisticRegression(max_iter=300).fit(frame[NUMERIC], frame["churned"])
    with mlflow.start_run(run_name="skops"):
        info = mlflow.sklearn.log_model(
            linear, name="model", serialization_format="skops", pip_requirements=["scikit-learn", "skops"]
        )
        out["skops"] = info.model_uri
    with mlflow.start_run(run_name="pickle"):
        info = mlflow.sklearn.log_model(
            linear, name="model", serialization_format="cloudpickle", pip_requirements=["scikit-learn"]
        )
        out["pickle"] = info.model_uri
    out["linear_proba"] = linear.predict_proba(frame[NUMERIC].head(20))[:, 1].tolist()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
