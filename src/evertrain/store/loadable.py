"""Whether an artifact's bytes are a model of the framework its version claims, checked cheaply.

Promoting or rolling back to a version must not put an artifact that cannot be loaded
behind the champion alias. Deserializing the model would import its framework (seconds
for scikit-learn or LightGBM) on every promotion, so the registry reads the artifact
(its sha256 checked on the way), then checks its structure here without the framework:

- ``sklearn`` (skops): a zip archive whose ``schema.json`` describes an object that is not
  a plain container (a dict, list or tuple has no ``predict``);
- ``lightgbm``: LightGBM's text model format (``tree`` header, ``version=``, at least one
  ``Tree=`` section);
- ``safetensors``: an 8-byte header length and a JSON header of that length;
- ``lora``: a safetensors file whose metadata names the adapter's base model;
- ``json``: a JSON document.

``evertrain register`` goes further before a version exists: it loads the file with its
framework and predicts on the project's own rows. A blob that passed that check once and
still hashes to the same digest loads again, which is why a structural check suffices here.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable

from evertrain.exceptions import DataValidationError

#: The largest ``schema.json`` a skops file may hold before its structure is read (it
#: lists every object of the model; even big forests stay far below this).
MAX_SKOPS_SCHEMA_BYTES = 64 * 1024 * 1024
#: The builtin containers skops can store: none of them predicts.
_CONTAINERS = {"dict", "list", "tuple", "set", "str", "int", "float"}


def _skops(data: bytes) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        info = archive.getinfo("schema.json")
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DataValidationError(f"not a skops file: {exc}") from None
    if info.file_size > MAX_SKOPS_SCHEMA_BYTES:
        raise DataValidationError(
            f"skops schema.json is {info.file_size} bytes, over the {MAX_SKOPS_SCHEMA_BYTES} allowed"
        )
    try:
        schema = json.loads(archive.read(info))
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        raise DataValidationError(f"skops schema.json cannot be read: {exc}") from None
    if not isinstance(schema, dict) or "__class__" not in schema:
        raise DataValidationError("skops schema.json does not describe an object")
    if schema.get("__module__") == "builtins" and schema["__class__"] in _CONTAINERS:
        raise DataValidationError(f"the skops file holds a {schema['__class__']}, not a model with predict()")


def _lightgbm(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not a LightGBM model file: not UTF-8 text ({exc.reason})") from None
    if not text.startswith("tree") or "\nversion=" not in text or "\nTree=" not in text:
        raise DataValidationError(
            "not a LightGBM model file: expected the text format ('tree', 'version=', 'Tree=' sections)"
        )


def _safetensors(data: bytes) -> None:
    if len(data) < 8:
        raise DataValidationError(f"not a safetensors file: {len(data)} bytes, shorter than its header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise DataValidationError(
            f"not a safetensors file: header of {size} bytes in a {len(data)}-byte file"
        )
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError as exc:
        raise DataValidationError(f"not a safetensors file: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise DataValidationError("not a safetensors file: header is not a JSON object")


def _lora(data: bytes) -> None:
    """A safetensors file whose metadata names the base model the adapter needs."""
    _safetensors(data)
    size = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    try:
        adapter = json.loads(meta["evertrain"])
    except (KeyError, TypeError, ValueError):
        raise DataValidationError("not a LoRA adapter file: no evertrain metadata in its header") from None
    if not isinstance(adapter, dict) or "base_model_sha256" not in adapter:
        raise DataValidationError("not a LoRA adapter file: its metadata names no base model")


def _json(data: bytes) -> None:
    try:
        json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DataValidationError(f"not a JSON model file: {exc}") from None


CHECKS: dict[str, Callable[[bytes], None]] = {
    "sklearn": _skops,
    "lightgbm": _lightgbm,
    "safetensors": _safetensors,
    "lora": _lora,
    "json": _json,
}


def check_loadable(framework: str, data: bytes) -> None:
    """Raise :class:`DataValidationError` unless ``data`` is a well-formed ``framework`` artifact.

    >>> check_loadable("json", b'{"threshold": 0.5}')
    >>> check_loadable("lightgbm", b"hello")
    Traceback (most recent call last):
    ...
    evertrain.exceptions.DataValidationError: not a LightGBM model file: expected the text format ...
    """
    check = CHECKS.get(framework)
    if check is None:
        raise DataValidationError(f"unknown framework {framework!r}; known: {', '.join(sorted(CHECKS))}")
    check(data)
