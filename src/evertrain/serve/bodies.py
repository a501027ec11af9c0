"""Request bodies into typed values, and JSON out: the parsing every serving route shares.

Bad input never gets a 5xx. The predict and feedback bodies are read by pydantic models
(:class:`PredictBody`, :class:`FeedbackBody`) straight from the bytes, which is several
times faster than decoding JSON and then checking it in Python. A body they refuse, or
one that may hold what the JSON standard forbids and their parser lets through (``NaN``,
``Infinity``, an escaped lone surrogate), is read again by hand (:func:`parse_json` and
the field checks below) to name the field, the rule and the value in an
:class:`InputError`, which the app answers with 413 or 422; so a bad body gets the same
clear message as before and a good one is never refused by one parser and taken by the
other. Answers are written with orjson.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evertrain.exceptions import InputError
from evertrain.serve import openapi as doc
from evertrain.train.inputs import show, value_kind

JSON = "application/json"


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``value`` as a JSON response (orjson; NaN and Infinity are written as null, never as invalid JSON)."""
    try:
        body = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):  # a lone surrogate, an integer past 64 bits
        body = json.dumps(value, allow_nan=False).encode()
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# A ``\\u`` escape of a UTF-16 surrogate (D800-DFFF): the only way a JSON text in valid
# UTF-8 can carry a lone surrogate. Escaped pairs are fine and also match; they are then
# checked string by string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(data: bytes) -> Any:
    """The JSON document in ``data``; refuses what is not valid Unicode text, and NaN and Infinity.

    The body must be UTF-8 (RFC 8259 for JSON between systems), and no string in it, key
    or value, may hold a lone UTF-16 surrogate (``"\\ud800"``): such a string is not
    Unicode text, cannot be written to Parquet or Arrow, and would make a model or the log
    writer fail on the client's behalf. Both are the client's error (422, naming the field).
    """
    if not data.strip():
        raise InputError("body", "empty body: expected a JSON object")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            "body", f"not UTF-8 text: byte {exc.start} ({data[exc.start : exc.start + 1]!r})"
        ) from None
    text = text.removeprefix("\ufeff")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise InputError("body", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, too many digits
        raise InputError("body", f"not valid JSON: {str(exc)[:200]}") from None
    if _SURROGATE_ESCAPE.search(text):
        check_unicode(value, "body")
    return value


def _bad_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_unicode(value: Any, where: str) -> None:
    """Refuse (422) any string in ``value``, key or value, that is not valid Unicode.

    >>> check_unicode({"a": ["ok", "\\U0001f600"]}, "body")  # a pair is fine; "\\ud800" alone is not
    """
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if type(item) is str:
            if _bad_text(item):
                raise InputError(
                    path, f"string {show(item)} is not valid Unicode (it holds a lone surrogate)"
                )
        elif type(item) is dict:
            for key, sub in item.items():
                if _bad_text(key):
                    raise InputError(
                        path, f"key {show(key)} is not valid Unicode (it holds a lone surrogate)"
                    )
                stack.append((sub, f"{path}.{key}" if path != "body" else key))
        elif type(item) is list:
            stack.extend((sub, f"{path}[{i}]") for i, sub in enumerate(item))


#: What ``parameters.return`` of a predict request may ask for, besides the predictions.
RETURNS = ("predictions", "probabilities", "scores")


#: Bytes after which a body is read by hand: what pydantic's JSON parser takes but RFC 8259 does not
#: (NaN, Infinity), and escaped UTF-16 surrogates, which need the check of :func:`check_unicode`.
_BY_HAND = re.compile(rb"NaN|Infinity|\\u[dD][89a-fA-F]")


class PredictParameters(BaseModel):
    """``parameters`` of a predict request (KServe V1): what to return besides the predictions,
    and for a generator, the most tokens an answer may have."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)
    return_: Literal["predictions", "probabilities", "scores"] = Field("predictions", alias="return")
    max_new_tokens: int | None = Field(None, ge=1)


class PredictBody(BaseModel):
    """A predict request: the rows (checked against the version's inputs later), their ids, parameters."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    instances: list[Any] = Field(min_length=1)
    request_ids: list[str] | None = None
    parameters: PredictParameters | None = None


class FeedbackBody(BaseModel):
    """A feedback request: labels by request id (each label is checked against the model's rule later)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    labels: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True)
class Predict:
    """A predict request, read: its rows, the client's ids (``None``: server-made), what to return
    and (a generator's) the most tokens per answer (``None``: the model's own limit)."""

    instances: list[Any]
    ids: list[str] | None
    wanted: str
    max_new_tokens: int | None = None


def _fast(model: type[BaseModel], data: bytes) -> Any:
    """``data`` read by ``model``, or ``None`` when it must be read by hand (refused, or may hold NaN)."""
    if _BY_HAND.search(data) is not None:
        return None
    try:
        return model.model_validate_json(data)
    except ValidationError:
        return None


def parse_predict(data: bytes, max_batch: int) -> Predict:
    """The predict request in ``data``; a 422 naming the field at fault otherwise.

    >>> parse_predict(b'{"instances": [{"x": 1}], "parameters": {"return": "scores"}}', 10).wanted
    'scores'
    """
    body = _fast(PredictBody, data)
    if body is not None and len(body.instances) <= max_batch:
        n = len(body.instances)
        ids = None if body.request_ids is None else request_ids(body.request_ids, n, "request_ids")
        if body.parameters is None:
            return Predict(body.instances, ids, "predictions")
        return Predict(body.instances, ids, body.parameters.return_, body.parameters.max_new_tokens)
    payload = parse_json(data)
    if type(payload) is not dict:
        raise InputError("body", f"expected a JSON object with 'instances', got {value_kind(payload)}")
    instances = payload.get("instances")
    if type(instances) is not list:
        if instances is None and "instances" not in payload:
            raise InputError("instances", "missing field (expected an array of instances)")
        raise InputError("instances", f"expected an array of instances, got {value_kind(instances)}")
    n = len(instances)
    if n == 0:
        raise InputError("instances", "expected at least one instance")
    if n > max_batch:
        raise InputError("instances", f"{n} instances is more than the {max_batch} accepted per request")
    given_ids = payload.get("request_ids")
    ids = None if given_ids is None else request_ids(given_ids, n, "request_ids")
    return Predict(instances, ids, *predict_parameters(payload.get("parameters")))


def parse_feedback(data: bytes, max_batch: int) -> list[Any]:
    """The ``labels`` of the feedback request in ``data`` (each still to check); a 422 otherwise."""
    body = _fast(FeedbackBody, data)
    if body is not None and len(body.labels) <= max_batch:
        return body.labels
    payload = parse_json(data)
    if type(payload) is not dict:
        raise InputError("body", f"expected a JSON object with 'labels', got {value_kind(payload)}")
    labels = payload.get("labels")
    if type(labels) is not list:
        if "labels" not in payload:
            raise InputError("labels", "missing field (expected an array of {request_id, label})")
        raise InputError("labels", f"expected an array of {{request_id, label}}, got {value_kind(labels)}")
    if not labels:
        raise InputError("labels", "expected at least one label")
    if len(labels) > max_batch:
        raise InputError("labels", f"{len(labels)} labels is more than the {max_batch} accepted per request")
    return labels


def predict_parameters(value: Any) -> tuple[str, int | None]:
    """The KServe V1 ``parameters`` of a predict request: what to return (default ``predictions``)
    and the most tokens per generated answer (default: the model's own limit).

    ``{"return": "probabilities"}`` adds each class's probability per instance and the
    class order; ``{"return": "scores"}`` adds one score per instance; ``{"max_new_tokens":
    16}`` shortens a generator's answers (docs/http.md).
    """
    if value is None:
        return "predictions", None
    if type(value) is not dict:
        raise InputError("parameters", f"expected an object, got {value_kind(value)} {show(value)}")
    unknown = sorted(set(value) - {"return", "max_new_tokens"})
    if unknown:
        raise InputError(f"parameters.{unknown[0]}", "unknown parameter; known: return, max_new_tokens")
    wanted = value.get("return", "predictions")
    if wanted not in RETURNS:
        raise InputError("parameters.return", f"expected one of {', '.join(RETURNS)}, got {show(wanted)}")
    limit = value.get("max_new_tokens")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InputError(
            "parameters.max_new_tokens", f"expected a whole number of at least 1, got {show(limit)}"
        )
    return str(wanted), limit


def request_ids(value: Any, n: int, field: str) -> list[str]:
    """The client's ``request_ids``: one unique, bounded string per instance."""
    if type(value) is not list:
        raise InputError(field, f"expected an array of strings, got {value_kind(value)} {show(value)}")
    if len(value) != n:
        raise InputError(field, f"expected one id per instance ({n}), got {len(value)}")
    for i, rid in enumerate(value):
        if type(rid) is not str or not rid or len(rid) > doc.MAX_ID_CHARS:
            raise InputError(
                f"{field}[{i}]", f"expected a string of 1-{doc.MAX_ID_CHARS} characters, got {show(rid)}"
            )
    if len(set(value)) != n:
        raise InputError(field, "request ids must be unique within a request")
    return value


MAX_VERSION = doc.MAX_VERSION  # what the registry's parser takes as a string; fits any SQL integer


def version_field(value: Any, field: str) -> int:
    """A version number given in an admin body, as an int or a string of digits."""
    if type(value) is int and 1 <= value <= MAX_VERSION:
        return value
    if (
        type(value) is str
        and value.isascii()
        and value.isdigit()
        and 1 <= len(value) <= 9
        and int(value) >= 1
    ):
        return int(value)
    raise InputError(field, f"expected a version number from 1 to {MAX_VERSION}, got {show(value)}")


def text_field(value: Any, field: str) -> str | None:
    """An optional string field of an admin body (a reason, say)."""
    if value is None:
        return None
    if type(value) is not str:
        raise InputError(field, f"expected a string, got {value_kind(value)} {show(value)}")
    return value
