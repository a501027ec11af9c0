"""Model formats: turning a model into bytes and back, safely.

Each framework has one safe format: skops for scikit-learn (no pickle; only trusted
types are rebuilt), LightGBM's own text format, safetensors for tensors. Loading
always starts from bytes that the artifact store has already checked against the
hash the registry holds, so nothing unregistered is ever deserialized; and a file whose
content, uncompressed, is larger than ``EVERTRAIN_MAX_MODEL_BYTES`` is refused before
it is loaded (a 1 MB zip can hold a 1 GiB array of zeros).
"""

from __future__ import annotations

import io
import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evertrain import settings
from evertrain.exceptions import DataValidationError, UsageError

ZIP_BOMB_RATIO = 200
"""A zip member this many times larger than its compressed bytes (and over 64 MiB) is refused:
model arrays compress a few times, a bomb by thousands."""
_ZIP_BOMB_FLOOR = 64 * 1024 * 1024


def max_model_bytes() -> int:
    """The largest model content loaded, uncompressed (``EVERTRAIN_MAX_MODEL_BYTES``)."""
    raw = settings.MAX_MODEL_BYTES.raw() or "0"
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"environment variable {settings.MAX_MODEL_BYTES.name}: expected bytes, got {raw!r}")
    return int(raw)


def check_size(data: bytes, what: str, limit: int | None = None) -> None:
    """Refuse ``data`` larger than the model size limit."""
    limit = max_model_bytes() if limit is None else limit
    if len(data) > limit:
        raise DataValidationError(
            f"{what} of {len(data)} bytes is larger than the {limit} accepted "
            f"({settings.MAX_MODEL_BYTES.name})"
        )


def check_zip(data: bytes, what: str, limit: int | None = None) -> None:
    """Refuse a zip whose members, uncompressed, pass the size limit or look like a bomb."""
    limit = max_model_bytes() if limit is None else limit
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise DataValidationError(f"{what}: not a zip file: {exc}") from None
    total = 0
    for member in members:
        total += member.file_size
        if total > limit:
            raise DataValidationError(
                f"{what} holds more than {limit} bytes uncompressed ({member.filename!r} takes it past; "
                f"{settings.MAX_MODEL_BYTES.name})"
            )
        packed = max(member.compress_size, 1)
        if member.file_size > _ZIP_BOMB_FLOOR and member.file_size / packed > ZIP_BOMB_RATIO:
            raise DataValidationError(
                f"{what}: member {member.filename!r} expands {member.file_size // packed}x "
                f"({member.compress_size} to {member.file_size} bytes), more than {ZIP_BOMB_RATIO}x"
            )


class ModelFormat(ABC):
    name: str
    suffixes: tuple[str, ...] = ()

    @abstractmethod
    def dumps(self, model: Any) -> bytes: ...

    @abstractmethod
    def loads(self, data: bytes) -> Any: ...


#: Types skops flags as untrusted that rebuild as plain data, never code: trusted always.
#: A numpy dtype is what scikit-learn's SimpleImputer keeps of its training columns.
SKOPS_DATA_TYPES = ("numpy.dtype",)


class SkopsFormat(ModelFormat):
    """scikit-learn estimators and pipelines through skops; untrusted types are refused."""

    name = "sklearn"
    suffixes = (".skops",)

    def __init__(self, trusted: Sequence[str] = ()) -> None:
        self.trusted = [*SKOPS_DATA_TYPES, *trusted]

    def dumps(self, model: Any) -> bytes:
        import skops.io as sio

        return bytes(sio.dumps(model))

    def loads(self, data: bytes) -> Any:
        import skops.io as sio

        check_zip(data, "skops file")
        try:
            untrusted = sio.get_untrusted_types(data=data)
        except Exception as exc:
            raise DataValidationError(f"not a skops file: {exc}") from None
        refused = sorted(set(untrusted) - set(self.trusted))
        if refused:
            raise DataValidationError(
                f"skops file holds types that are not trusted: {', '.join(refused)}; "
                "add them to the model's trusted_types if you trust their source"
            )
        return sio.loads(data, trusted=untrusted or None)


#: The line a LightGBM model file ends with when its classes are not the numbers 0..K-1
#: (text labels such as "yes"/"no"): JSON after the prefix. LightGBM ignores it on load.
CLASSES_LINE = "evertrain_classes:"


def with_classes(text: str, classes: Sequence[Any] | None) -> str:
    """A LightGBM model file with its class labels appended (unchanged without classes).

    >>> with_classes("tree\\nend of trees\\n", ["no", "yes"]).splitlines()[-1]
    'evertrain_classes:["no", "yes"]'
    >>> with_classes("tree\\n", np.array([0, 1]))
    'tree\\n'
    """
    labels = [c.item() if isinstance(c, np.generic) else c for c in (classes if classes is not None else [])]
    if not labels or labels == list(range(len(labels))):
        return text  # the booster's own class numbers: nothing to name
    return text.rstrip("\n") + "\n" + CLASSES_LINE + json.dumps(labels) + "\n"


def classes_of(text: str | None) -> list[Any] | None:
    """The class labels a LightGBM model file carries (see :func:`with_classes`), else None."""
    if not text:
        return None
    tail = text.rstrip("\n").rsplit("\n", 1)[-1]
    if not tail.startswith(CLASSES_LINE):
        return None
    try:
        classes = json.loads(tail[len(CLASSES_LINE) :])
    except ValueError:
        raise DataValidationError("LightGBM model file: its class labels line is not JSON") from None
    if not isinstance(classes, list) or len(classes) < 2:
        raise DataValidationError("LightGBM model file: its class labels line must list two or more classes")
    return classes


class BoosterModel:
    """A LightGBM booster with the scikit-learn prediction methods the rest of evertrain uses.

    ``classes``: the labels of the booster's classes 0..K-1 when they are not those
    numbers (text labels): ``predict`` answers with them and ``classes_`` lists them, as a
    scikit-learn classifier does. They travel in the model file (:func:`with_classes`).
    """

    def __init__(self, booster: Any, text: str | None = None, classes: Sequence[Any] | None = None) -> None:
        self.booster_ = booster
        if classes is None:
            classes = classes_of(text)
        elif text is not None:
            text = with_classes(text, classes) if classes_of(text) is None else text
        if classes is not None:
            self.classes_ = np.asarray(list(classes))
        #: The model file this booster was loaded from, when known (spares writing it again).
        self.text_ = text
        objective = booster.params.get("objective")
        if objective is None:  # only then walk the whole model: dump_model is slow on large boosters
            objective = booster.dump_model().get("objective", "")
        self.objective_ = str(objective)

    @property
    def feature_names_in_(self) -> np.ndarray:
        return np.asarray(self.booster_.feature_name())

    def raw(self, X: Any) -> np.ndarray:
        """The booster's own output: the positive class's probability (binary), one column per
        class (multiclass), the prediction (regression)."""
        # Predict with the threads the model was trained with (0 = LightGBM's default, all
        # cores); all cores on a busy host make OpenMP spin and predictions crawl.
        threads = int(self.booster_.params.get("num_threads", 0) or 0)
        return np.asarray(self.booster_.predict(X, num_threads=threads))

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.as_proba(self.raw(X))

    @staticmethod
    def as_proba(out: np.ndarray) -> np.ndarray:
        """Class probabilities from the booster's own output (one column for binary models)."""
        if out.ndim == 1:
            return np.column_stack([1.0 - out, out])
        return out

    def predict(self, X: Any) -> np.ndarray:
        out = self.raw(X)
        objective = self.objective_.split()[0] if self.objective_ else ""
        if objective.startswith("binary"):
            index = (out >= 0.5).astype(int)
        elif out.ndim == 2:
            index = out.argmax(axis=1)
        else:
            return out
        classes = getattr(self, "classes_", None)
        return index if classes is None else classes[index]


class LightGBMFormat(ModelFormat):
    name = "lightgbm"
    suffixes = (".lgb", ".lightgbm", ".txt")

    def dumps(self, model: Any) -> bytes:
        text = getattr(model, "text_", None)
        if text is None:
            text = with_classes(
                getattr(model, "booster_", model).model_to_string(), getattr(model, "classes_", None)
            )
        return str(text).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        import lightgbm

        check_size(data, "LightGBM model file")
        try:
            text = data.decode("utf-8")
            booster = lightgbm.Booster(model_str=text)
        except (UnicodeDecodeError, lightgbm.basic.LightGBMError) as exc:
            raise DataValidationError(f"not a LightGBM model file: {str(exc).splitlines()[0]}") from None
        return BoosterModel(booster, text=text)


class SafetensorsFormat(ModelFormat):
    """A flat dict of named arrays (weights), as in safetensors; no code runs on load."""

    name = "safetensors"
    suffixes = (".safetensors",)

    def dumps(self, model: Any) -> bytes:
        from safetensors.numpy import save

        return bytes(save({k: np.ascontiguousarray(v) for k, v in dict(model).items()}))

    def loads(self, data: bytes) -> Any:
        try:
            from safetensors.numpy import load
        except ImportError:
            raise UsageError("the safetensors package is needed: pip install 'evertrain[llm]'") from None
        check_size(data, "safetensors file")
        try:
            return load(data)
        except Exception as exc:
            raise DataValidationError(f"not a safetensors file: {exc}") from None


class AdapterArtifact:
    """A LoRA adapter as stored: named float arrays (adapter and head weights) and JSON metadata.

    The metadata names the base model by its hash (``base_model_sha256``), so the artifact
    is a few megabytes however large the base; see :mod:`evertrain.store.adapters`.
    """

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.tensors = tensors
        self.meta = meta

    def __repr__(self) -> str:
        base = str(self.meta.get("base_model_sha256"))[:12]
        return f"AdapterArtifact(base {base}, {len(self.tensors)} tensors)"


class LoraFormat(ModelFormat):
    """A LoRA adapter: one safetensors file whose metadata holds the adapter's settings as JSON."""

    name = "lora"
    suffixes = (".lora",)
    _KEY = "evertrain"

    def dumps(self, model: Any) -> bytes:
        from safetensors.numpy import save

        artifact = model if isinstance(model, AdapterArtifact) else getattr(model, "artifact", None)
        if not isinstance(artifact, AdapterArtifact):
            raise UsageError(f"a {type(model).__name__} is not a LoRA adapter")
        tensors = {k: np.ascontiguousarray(v) for k, v in sorted(artifact.tensors.items())}
        meta = {self._KEY: json.dumps(artifact.meta, sort_keys=True, separators=(",", ":"))}
        return bytes(save(tensors, metadata=meta))

    def loads(self, data: bytes) -> Any:
        try:
            from safetensors.numpy import load
        except ImportError:
            raise UsageError("the safetensors package is needed: pip install 'evertrain[llm]'") from None
        check_size(data, "LoRA adapter file")
        try:
            tensors = load(data)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
            meta = json.loads(header["__metadata__"][self._KEY])
        except Exception as exc:
            raise DataValidationError(f"not a LoRA adapter file: {exc}") from None
        if not isinstance(meta, dict) or "base_model_sha256" not in meta:
            raise DataValidationError("not a LoRA adapter file: its metadata names no base model")
        return AdapterArtifact(tensors, meta)


class JsonFormat(ModelFormat):
    """Plain JSON parameters, for models that are a few numbers (rules, thresholds, baselines)."""

    name = "json"
    suffixes = (".json",)

    def dumps(self, model: Any) -> bytes:
        return json.dumps(model, sort_keys=True).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        check_size(data, "JSON model file")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise DataValidationError(f"not a JSON model file: {exc}") from None


FORMATS: dict[str, type[ModelFormat]] = {
    f.name: f for f in (SkopsFormat, LightGBMFormat, SafetensorsFormat, LoraFormat, JsonFormat)
}


def get_format(name: str, **options: Any) -> ModelFormat:
    try:
        cls = FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown framework {name!r}; known: {', '.join(sorted(FORMATS))}") from None
    return cls(**options) if options else cls()


def infer_framework(path: Path) -> str:
    suffix = path.suffix.lower()
    for cls in FORMATS.values():
        if suffix in cls.suffixes:
            return cls.name
    raise UsageError(
        f"cannot tell the framework of {path.name} from its suffix; pass --framework "
        f"({', '.join(sorted(FORMATS))})"
    )


def framework_of(model: Any) -> str:
    """The format to save a fitted model object in."""
    module = type(model).__module__
    if isinstance(model, AdapterArtifact) or isinstance(getattr(model, "artifact", None), AdapterArtifact):
        return "lora"
    if module.startswith("lightgbm") or isinstance(model, BoosterModel):
        return "lightgbm"
    if module.startswith("sklearn") or (hasattr(model, "fit") and hasattr(model, "predict")):
        return "sklearn"
    if isinstance(model, dict) and all(isinstance(v, np.ndarray) for v in model.values()):
        return "safetensors"
    raise UsageError(f"no safe format is known for a {module}.{type(model).__name__}")
