"""MLflow both ways, against the real MLflow: its client here, its server and scorer in their own venv.

- export: a version as an MLflow model that ``mlflow.pyfunc`` loads and ``mlflow models serve``
  serves, predicting what evertrain predicts;
- import: models a team logged to a real ``mlflow server`` (a LightGBM booster through the
  registry and a run, a skops and a pickled scikit-learn model) become versions, pickle only
  when the project trusts it;
- mirroring: a cycle with ``tracking.mlflow_uri`` leaves its training, metrics, gate verdict and
  alias move on the server, and a second sync adds nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from _tools import free_port, mlflow_server, process, tool_env, tool_venv

from evertrain.faces.cli import main
from evertrain.store import Store
from evertrain.train.predictor import load_version

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install '.[mlflow]')")

# MLflow's pyfunc loader warns about its own type hints; that is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred:UserWarning")

SIDE = Path(__file__).with_name("_mlflow_side.py")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlflow") / "churn"
    assert main(["init", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def trained(example: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn project after one cycle: version 1 (LightGBM) is the champion."""
    folder = tmp_path_factory.mktemp("trained") / "churn"
    shutil.copytree(example, folder)
    assert main(["run", "--once", "--project", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@pytest.fixture(scope="module")
def team_models(server: str, example: Path) -> dict[str, Any]:
    """What a team has in MLflow already, logged by MLflow's own client in its venv."""
    bin_dir = tool_venv("mlflow")
    out = subprocess.run(
        [str(bin_dir / "python"), str(SIDE), server, str(example / "data" / "churn.csv")],
        env=tool_env(bin_dir),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def rows(project: Path, n: int = 20) -> pd.DataFrame:
    return pd.read_csv(project / "data" / "churn.csv").head(n).drop(columns=["churned"])


def evertrain_predictions(project: Path, version: int, frame: pd.DataFrame) -> tuple[list[Any], list[float]]:
    store = Store.for_project(project).open()
    try:
        loaded = load_version(store, "churn", version)
        predictions, scores = loaded.predict({c: frame[c].tolist() for c in loaded.schema.names})
    finally:
        store.close()
    assert scores is not None
    return predictions, scores


def test_an_exported_version_loads_in_mlflow_and_predicts_as_evertrain(
    capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exported"
    code, _, err = cli(capsys, "mlflow", "export", "churn", "champion", str(out), "-p", str(trained))
    assert code == 0, err
    frame = rows(trained)
    got = mlflow.pyfunc.load_model(str(out)).predict(frame)
    predictions, scores = evertrain_predictions(trained, 1, frame)
    assert got["prediction"].tolist() == predictions
    np.testing.assert_allclose(got["score"].to_numpy(), scores, rtol=1e-9)
    assert isinstance(mlflow.lightgbm.load_model(str(out)), __import__("lightgbm").Booster)
    # a folder that exists is not overwritten
    code, _, err = cli(capsys, "mlflow", "export", "churn", "1", str(out), "-p", str(trained))
    assert code == 2 and "not empty" in err
    # and a local MLflow model folder registers back: the same bytes, a new version
    code, text, err = cli(capsys, "mlflow", "import", "churn", str(out), "-p", str(trained), "--json")
    assert code == 0, err
    back = json.loads(text)
    store = Store.for_project(trained).open()
    try:
        assert back["artifact_sha256"] == store.registry.get_version("churn", 1).artifact_sha256
    finally:
        store.close()
    assert back["framework"] == "lightgbm" and back["params"]["mlflow_flavor"] == "lightgbm"


@pytest.mark.slow  # a real MLflow server or scorer starts (tens of seconds)
def test_mlflow_models_serve_serves_an_exported_version(
    capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path
) -> None:
    bin_dir = tool_venv("mlflow")
    out = tmp_path / "exported"
    assert cli(capsys, "mlflow", "export", "churn", "1", str(out), "-p", str(trained))[0] == 0
    port = free_port()
    args = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(out), "--env-manager", "local"]
    args += ["-h", "127.0.0.1", "-p", str(port)]
    frame = rows(trained, 5)
    with process(args, tool_env(bin_dir), f"http://127.0.0.1:{port}/ping"):
        body = {"dataframe_records": json.loads(frame.to_json(orient="records"))}
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    served = answer.json()["predictions"]
    predictions, scores = evertrain_predictions(trained, 1, frame)
    assert [p["prediction"] for p in served] == predictions
    np.testing.assert_allclose([p["score"] for p in served], scores, rtol=1e-9)


@pytest.mark.slow  # a real MLflow server or scorer starts (tens of seconds)
def test_models_from_an_mlflow_server_become_versions_and_pickle_needs_trust(
    capsys: pytest.CaptureFixture[str],
    example: Path,
    tmp_path: Path,
    server: str,
    team_models: dict[str, Any],
) -> None:
    project = tmp_path / "churn"
    shutil.copytree(example, project)
    base = ["-p", str(project), "--tracking-uri", server, "--json"]

    code, out, err = cli(capsys, "mlflow", "import", "churn", team_models["lgb_model"], *base)
    assert code == 0, err
    first = json.loads(out)
    assert first["framework"] == "lightgbm" and first["version"] == 1
    assert first["metrics"] == {"auc": 0.875}  # the MLflow run's metrics came along
    assert first["params"]["mlflow_uri"] == "models:/churn-lgb/1"
    _, scores = evertrain_predictions(project, 1, rows(project))
    np.testing.assert_allclose(scores, team_models["lgb_raw"], rtol=1e-9)  # the same booster

    code, out, err = cli(capsys, "mlflow", "import", "churn", team_models["lgb_run"], *base)
    assert code == 0, err
    assert json.loads(out)["artifact_sha256"] == first["artifact_sha256"]

    code, out, err = cli(capsys, "mlflow", "import", "churn", team_models["skops"], *base)
    assert code == 0, err
    assert json.loads(out)["framework"] == "sklearn"

    code, out, err = cli(capsys, "mlflow", "import", "churn", team_models["pickle"], *base)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cloudpickle" in err and "model.trust_pickle" in err

    spec = yaml.safe_load((project / "evertrain.yaml").read_text())
    spec["model"]["trust_pickle"] = True
    (project / "evertrain.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = cli(capsys, "mlflow", "import", "churn", team_models["pickle"], *base)
    assert code == 0, err
    version = json.loads(out)
    assert version["framework"] == "sklearn" and version["params"]["mlflow_pickle"] == "re-saved"
    _, scores = evertrain_predictions(project, version["version"], rows(project))
    np.testing.assert_allclose(scores, team_models["linear_proba"], rtol=1e-9)

    code, _, err = cli(capsys, "mlflow", "import", "churn", "models:/no-such-model/1", *base)
    assert code == 2 and "no-such-model" in err


@pytest.mark.slow  # a real MLflow server or scorer starts (tens of seconds)
def test_a_cycle_is_mirrored_to_the_tracking_server(
    capsys: pytest.CaptureFixture[str], example: Path, tmp_path: Path, server: str
) -> None:
    project = tmp_path / "churn"
    shutil.copytree(example, project)
    spec = yaml.safe_load((project / "evertrain.yaml").read_text())
    spec["tracking"] = {"mlflow_uri": server, "mlflow_experiment": "churn-loop"}
    (project / "evertrain.yaml").write_text(yaml.safe_dump(spec))

    code, out, err = cli(capsys, "run", "--once", "--json", "-p", str(project))
    assert code == 0, err
    result = json.loads(out)  # MLflow's run links went to stderr, not into the JSON
    assert result["tracking"]["mlflow"]["runs_created"] == 1 and result["tracking"]["mlflow"]["moves"] == 1

    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("churn-loop")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    version = runs["churn-v1"]
    assert version.info.status == "FINISHED"
    store = Store.for_project(project).open()
    try:
        registered = store.registry.get_version("churn", 1)
    finally:
        store.close()
    assert version.data.metrics["roc_auc"] == pytest.approx(registered.metrics["roc_auc"])
    assert version.data.params["framework"] == "lightgbm"
    assert version.data.tags["evertrain.gate"] == "passed"
    assert version.data.tags["evertrain.aliases"] == "champion"
    assert any(k.startswith("evertrain.gate.0.") for k in version.data.tags)
    history = client.get_metric_history(runs["churn-aliases"].info.run_id, "champion")
    assert [m.value for m in history] == [1.0]

    code, out, err = cli(capsys, "mlflow", "sync", "-p", str(project), "--json")
    assert code == 0, err
    assert json.loads(out) | {"experiment_id": None} == {
        "experiment_id": None,
        "runs_created": 0,
        "gates": 1,
        "moves": 0,
    }
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_a_tracking_server_that_is_down_never_fails_the_cycle(
    capsys: pytest.CaptureFixture[str], example: Path, tmp_path: Path
) -> None:
    project = tmp_path / "churn"
    shutil.copytree(example, project)
    spec = yaml.safe_load((project / "evertrain.yaml").read_text())
    spec["tracking"] = {"mlflow_uri": f"http://127.0.0.1:{free_port()}"}
    (project / "evertrain.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = cli(capsys, "run", "--once", "--json", "-p", str(project))
    assert code == 0, err
    result = json.loads(out)
    assert result["outcome"] == "promoted" and "error" in result["tracking"]["mlflow"]
    assert "mlflow mirror failed" in err
