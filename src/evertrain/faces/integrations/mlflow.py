"""MLflow models, both ways: register one as an evertrain version, export a version as one.

**In.** :func:`fetch_model` brings an MLflow model to a local folder (a ``models:/`` or
``runs:/`` URI through MLflow's client, or a folder as it is) and :func:`read_model`
reads its ``MLmodel`` file and picks the flavor evertrain can load without pickle:

- ``lightgbm`` saved from a ``Booster`` (``model.lgb``, LightGBM's text format): a
  ``lightgbm`` version;
- ``sklearn`` or ``lightgbm`` saved with ``serialization_format: skops``: an ``sklearn``
  version, rebuilt by skops with the project's ``model.trusted_types`` only;
- anything pickled (``pickle``, ``cloudpickle``, a custom ``python_function``) is refused
  with one line, unless the project sets ``model.trust_pickle``; then it is loaded once
  and stored re-saved in a safe format, so the store never holds a pickle.

**Out.** :func:`export_version` writes a version as an MLflow model folder that
``mlflow models serve -m FOLDER`` serves and ``mlflow.pyfunc.load_model`` loads: the
model file in its safe format, a small loader (``code/evertrain_pyfunc.py``, no
evertrain needed where it is served) that types the inputs as the version was trained
on them, and the requirements. It carries no MLflow signature on purpose: MLflow would
refuse whole numbers in a ``double`` column, which evertrain's numeric inputs accept;
the loader checks and types the columns itself (``evertrain.json`` lists them). A
LightGBM version also carries MLflow's native ``lightgbm`` flavor, so
``mlflow.lightgbm.load_model`` gives the booster.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evertrain.exceptions import DataValidationError, NotFoundError, UsageError
from evertrain.store import Store
from evertrain.store.formats import get_format

MLMODEL = "MLmodel"
SAFE_FORMATS = ("skops",)
PICKLE_FORMATS = ("pickle", "cloudpickle")
LOADER_MODULE = "evertrain_pyfunc"
INSTALL_HINT = "pip install 'evertrain[mlflow]'"


def require_mlflow() -> Any:
    """The ``mlflow`` package (``mlflow-skinny`` is enough), or a usage error saying how to get it."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in a command's output
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError:
        raise UsageError(f"MLflow is not installed: {INSTALL_HINT}") from None
    return mlflow


def fetch_model(uri: str, dest: Path, tracking_uri: str | None = None) -> Path:
    """A local folder holding the MLflow model at ``uri`` (a folder is used where it is)."""
    local = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    if ("://" not in uri and ":/" not in uri) or uri.startswith("file://"):
        if not (local / MLMODEL).is_file():
            raise NotFoundError(f"{uri}: no MLmodel file there (not an MLflow model folder)")
        return local
    mlflow = require_mlflow()
    if tracking_uri:  # models:/ URIs resolve through the process-wide registry URI
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest))
    except Exception as exc:  # MLflow's own errors: unknown model, version, run or server down
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotFoundError(f"cannot fetch {uri} from MLflow: {first}") from None
    if not (Path(path) / MLMODEL).is_file():
        raise NotFoundError(f"{uri} is not an MLflow model (no MLmodel file in it)")
    return Path(path)


@dataclass
class Imported:
    """An MLflow model as evertrain registers it: safe bytes, their format, where they came from."""

    data: bytes
    framework: str
    flavor: str
    params: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None


def read_model(
    folder: Path,
    *,
    trusted_types: list[str] | None = None,
    trust_pickle: bool = False,
    label: str | None = None,
) -> Imported:
    """The model in an MLflow model folder, in a format evertrain loads without pickle.

    ``label`` names the model in messages (its URI; default: the folder's name).
    """
    where = label or folder.name
    try:
        meta = yaml.safe_load((folder / MLMODEL).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataValidationError(f"{folder / MLMODEL}: cannot read it: {exc}") from None
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    if not isinstance(flavors, dict) or not flavors:
        raise DataValidationError(f"{folder / MLMODEL}: lists no flavors")
    run_id = meta.get("run_id")
    params = {"source": "mlflow", "mlflow_flavors": ",".join(sorted(flavors))}
    if run_id:
        params["mlflow_run_id"] = str(run_id)
    for name in ("lightgbm", "sklearn"):
        conf = flavors.get(name)
        if not isinstance(conf, dict):
            continue
        data_path = folder / str(conf.get("pickled_model") or conf.get("data") or "")
        if not data_path.is_file():
            raise DataValidationError(f"{where}: the {name} flavor's file {data_path.name} is missing")
        fmt = str(
            conf.get("serialization_format") or ("lightgbm" if data_path.suffix == ".lgb" else "pickle")
        )
        params["mlflow_flavor"] = name
        if name == "lightgbm" and data_path.suffix == ".lgb":
            data = data_path.read_bytes()
            get_format("lightgbm").loads(data)  # refuse a file that is not a LightGBM model
            return Imported(data, "lightgbm", name, params, run_id)
        if fmt in SAFE_FORMATS:
            data = data_path.read_bytes()
            get_format("sklearn", trusted=trusted_types or []).loads(data)  # untrusted types: refused
            return Imported(data, "sklearn", name, params, run_id)
        if fmt in PICKLE_FORMATS:
            if not trust_pickle:
                raise DataValidationError(
                    f"the MLflow {name} model {where} is saved with {fmt}, which runs code when "
                    "loaded; save it with serialization_format='skops' (or a LightGBM Booster), or set "
                    "model.trust_pickle: true if you trust its source"
                )
            return _from_pickle(data_path, name, params, run_id, trusted_types or [])
        raise DataValidationError(f"the MLflow {name} model {where} has an unknown format {fmt!r}")
    kinds = ", ".join(sorted(flavors))
    raise DataValidationError(
        f"the MLflow model {where} has no flavor evertrain can load ({kinds}); "
        "lightgbm and sklearn models are supported"
    )


def _from_pickle(
    path: Path, flavor: str, params: dict[str, Any], run_id: Any, trusted: list[str]
) -> Imported:
    """Load a pickled model the project trusts, and re-save it in a safe format."""
    import pickle

    with path.open("rb") as handle:
        model = pickle.load(handle)  # the project said it trusts this source (model.trust_pickle)
    params = {**params, "mlflow_pickle": "re-saved"}
    booster = getattr(model, "booster_", None) if flavor == "lightgbm" else None
    if booster is not None or type(model).__name__ == "Booster":
        text = (booster or model).model_to_string()
        return Imported(text.encode("utf-8"), "lightgbm", flavor, params, run_id)
    fmt = get_format("sklearn", trusted=trusted)
    data = fmt.dumps(model)
    fmt.loads(data)  # its types must be ones skops may rebuild, as for any sklearn version
    return Imported(data, "sklearn", flavor, params, run_id)


def run_metrics(run_id: str | None, tracking_uri: str | None) -> dict[str, float]:
    """The latest metrics of the MLflow run a model was logged from (empty when unreachable)."""
    if not run_id:
        return {}
    try:
        mlflow = require_mlflow()
        run = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except Exception:  # the run is on a server we cannot reach: register without its metrics
        return {}
    return {str(k): float(v) for k, v in run.data.metrics.items()}


# -- export ------------------------------------------------------------------------------

_LOADER = '''"""Loads an evertrain model version exported as an MLflow model (the python_function flavor).

It needs numpy, pandas and the model's framework (lightgbm, or scikit-learn with skops),
not evertrain. Text columns become pandas categoricals for LightGBM, as in training.
"""

import json
import os

import numpy as np
import pandas as pd


class EvertrainModel:
    def __init__(self, path):
        with open(os.path.join(path, "evertrain.json")) as handle:
            self.meta = json.load(handle)
        model_file = os.path.join(path, self.meta["file"])
        if self.meta["framework"] == "lightgbm":
            import lightgbm

            self.model = lightgbm.Booster(model_file=model_file)
        else:
            import skops.io as sio

            with open(model_file, "rb") as handle:
                data = handle.read()
            self.model = sio.loads(data, trusted=self.meta["trusted_types"] or None)

    def _frame(self, model_input):
        frame = pd.DataFrame(model_input)
        missing = [c for c in self.meta["features"] if c not in frame.columns]
        if missing:
            raise ValueError("missing input columns: " + ", ".join(missing))
        frame = frame[self.meta["features"]]
        for name, kind in self.meta["types"].items():
            if kind == "numeric":
                frame[name] = pd.to_numeric(frame[name], errors="raise").astype("float64")
            elif kind in ("categorical", "string") and self.meta["framework"] == "lightgbm":
                frame[name] = frame[name].astype("category")
        return frame

    def predict(self, model_input, params=None):
        frame = self._frame(model_input)
        task = self.meta["task"]
        if self.meta["framework"] == "lightgbm":
            raw = np.asarray(self.model.predict(frame))
            if task == "binary":
                return pd.DataFrame({"prediction": (raw >= 0.5).astype(int), "score": raw})
            if raw.ndim == 2:
                return pd.DataFrame({"prediction": raw.argmax(axis=1)})
            return pd.DataFrame({"prediction": raw})
        if task == "binary" and hasattr(self.model, "predict_proba"):
            proba = np.asarray(self.model.predict_proba(frame))[:, 1]
            classes = getattr(self.model, "classes_", np.array([0, 1]))
            return pd.DataFrame({"prediction": classes[(proba >= 0.5).astype(int)], "score": proba})
        return pd.DataFrame({"prediction": np.asarray(self.model.predict(frame))})


def _load_pyfunc(path):
    return EvertrainModel(path)
'''


def export_version(store: Store, name: str, version: int, out: Path, *, task: str | None = None) -> Path:
    """Write version ``version`` of ``name`` as an MLflow model folder at ``out``; returns it."""
    from evertrain.train.predictor import load_version

    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; give a new folder")
    mv = store.registry.get_version(name, version)
    if mv.framework not in ("lightgbm", "sklearn"):
        raise UsageError(
            f"model {name!r} v{version} is a {mv.framework} model; only lightgbm and sklearn versions "
            "can be exported as MLflow models"
        )
    loaded = load_version(store, name, mv.version)  # checks the hash, and gives the input rules
    data = store.registry.load_artifact(mv)
    features = list(loaded.schema.names)
    types = {rule.name: rule.type for rule in loaded.schema.fields}
    trusted: list[str] = []
    if mv.framework == "sklearn":
        import skops.io as sio

        trusted = sorted(sio.get_untrusted_types(data=data))  # trusted when it was registered
    model_dir = out / "model"
    model_dir.mkdir(parents=True)
    file = "model.lgb" if mv.framework == "lightgbm" else "model.skops"
    (model_dir / file).write_bytes(data)
    meta = {
        "model": name,
        "version": mv.version,
        "framework": mv.framework,
        "task": task or loaded.task,
        "file": file,
        "features": features,
        "types": types,
        "trusted_types": trusted,
        "artifact_sha256": mv.artifact_sha256,
    }
    (model_dir / "evertrain.json").write_text(json.dumps(meta, indent=2))
    (out / "code").mkdir()
    (out / "code" / f"{LOADER_MODULE}.py").write_text(_LOADER)
    _write_environment(out, mv.framework)
    python = ".".join(str(p) for p in sys.version_info[:3])
    flavors: dict[str, Any] = {
        "python_function": {
            "loader_module": LOADER_MODULE,
            "code": "code",
            "data": "model",
            "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
            "python_version": python,
        }
    }
    if mv.framework == "lightgbm":
        import lightgbm

        flavors["lightgbm"] = {
            "data": f"model/{file}",
            "lgb_version": lightgbm.__version__,
            "model_class": "lightgbm.basic.Booster",
            "code": None,
        }
    mlmodel = {
        "artifact_path": "model",
        "flavors": flavors,
        "metadata": {"evertrain_model": name, "evertrain_version": mv.version, "source": "evertrain"},
        "model_size_bytes": len(data),
        "utc_time_created": _iso(mv.created_at),
    }
    (out / MLMODEL).write_text(yaml.safe_dump(mlmodel, sort_keys=False))
    return out


def _write_environment(out: Path, framework: str) -> None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    wanted = ["numpy", "pandas", "lightgbm" if framework == "lightgbm" else "scikit-learn"]
    if framework == "sklearn":
        wanted.append("skops")
    pins = []
    for package in wanted:
        try:
            pins.append(f"{package}=={installed(package)}")
        except PackageNotFoundError:
            pins.append(package)
    requirements = ["mlflow", *pins]
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    python = ".".join(str(p) for p in sys.version_info[:3])
    (out / "python_env.yaml").write_text(
        yaml.safe_dump(
            {"python": python, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]},
            sort_keys=False,
        )
    )
    (out / "conda.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "mlflow-env",
                "channels": ["conda-forge"],
                "dependencies": [f"python={python}", "pip", {"pip": requirements}],
            },
            sort_keys=False,
        )
    )


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat()


__all__ = [
    "Imported",
    "export_version",
    "fetch_model",
    "read_model",
    "require_mlflow",
    "run_metrics",
]
