"""The documented shapes of the HTTP API (KServe V1 for predict), for the OpenAPI document.

Request bodies are parsed by hand in ``app.py`` (to name the field at fault and to
bound sizes before any work); their schemas here say exactly what that parser
accepts, so that a client generator and a schema-driven fuzzer see the truth.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from evertrain.store.names import CHAMPION

MAX_VERSION = 999_999_999
MAX_ID_CHARS = 128
"""Longest request id accepted: ids are log keys, not payloads."""

_SCALAR: dict[str, Any] = {
    "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "null"}],
}


def predict_request(max_batch: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_batch,
                "description": "Rows to score: objects of feature -> value, or arrays in the order of the "
                "model's inputs (GET /v1/models/{name}).",
                "items": {
                    "anyOf": [
                        {"type": "object", "additionalProperties": _SCALAR},
                        {"type": "array", "items": _SCALAR},
                    ]
                },
            },
            "request_ids": {
                "type": "array",
                "description": "One id per instance (feedback refers to it); server-made if absent.",
                "uniqueItems": True,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
            },
            "parameters": {
                "type": "object",
                "additionalProperties": False,
                "description": "What to return besides the predictions: 'probabilities' (each class's, "
                "with 'classes' giving their order) or 'scores' (one per instance); classifiers only. "
                "For a generator (task generation), max_new_tokens shortens its answers (at most its "
                "own lora.max_new_tokens).",
                "properties": {
                    "return": {"enum": ["predictions", "probabilities", "scores"]},
                    "max_new_tokens": {"type": "integer", "minimum": 1},
                },
            },
        },
    }


def feedback_request(max_batch: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["labels"],
        "properties": {
            "labels": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_batch,
                "items": {
                    "type": "object",
                    "required": ["request_id", "label"],
                    "properties": {
                        "request_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
                        "label": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]},
                    },
                },
            }
        },
    }


PROMOTE_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["version"],
    "properties": {
        "version": {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                {"type": "string", "pattern": "^[0-9]{1,9}$"},
            ]
        },
        "reason": {"type": "string"},
        "expected": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_VERSION}, {"type": "null"}]},
    },
}

ROLLBACK_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "scope": {
            "type": "string",
            "enum": ["auto", CHAMPION, "rollout"],
            "description": "auto: abort the active rollout if there is one, else move the champion back.",
        },
    },
}

START_ROLLOUT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["version"],
    "properties": {
        "version": {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                {"type": "string", "pattern": "^[0-9]{1,9}$"},
            ]
        },
        "reason": {"type": "string"},
    },
}


def body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body."""
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(_Out):
    error: str = Field(description="What is wrong, naming the bad value.")
    field: str | None = Field(None, description="Where, e.g. instances[3].age; null when not one field.")


class PredictResponse(_Out):
    predictions: list[Any]
    model_version: str = Field(description="The version that produced every prediction of this response.")
    request_ids: list[str]
    classes: list[Any] | None = Field(None, description="With parameters.return = probabilities.")
    probabilities: list[list[float]] | None = Field(
        None, description="Each instance's probability of each class, in the order of 'classes'."
    )
    scores: list[float] | None = Field(
        None,
        description="With parameters.return = scores: the positive class's probability (binary), "
        "the predicted class's (multiclass).",
    )


class FeedbackResponse(_Out):
    accepted: int
    unknown_request_ids: list[str] = Field(
        default_factory=list,
        description="Ids of labels that match no logged prediction of the model (kept, and counted).",
    )


class Versions(_Out):
    champion: int | None = None
    canary: int | None = None
    shadow: int | None = None


class ModelList(_Out):
    models: list[str] = Field(description="The names served (KServe V1).")
    ready: dict[str, bool]
    versions: dict[str, Versions]


class ModelStatus(_Out):
    name: str
    ready: bool
    versions: Versions
    inputs: dict[str, dict[str, Any]]


class Health(_Out):
    status: str


class Ready(_Out):
    ready: bool


class AdminResult(_Out):
    model: str
    action: str


class RolloutStatus(_Out):
    model: str
    active: dict[str, Any] | None
    history: list[dict[str, Any]]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Documented error responses, all with :class:`ErrorBody`."""
    text = {
        400: "Bad request",
        401: "Missing or wrong token (admin routes: the admin token; feedback: the feedback token)",
        408: "The body did not arrive within the body timeout",
        404: "No such model (or version)",
        409: "A compare-and-swap lost the race, or the rollout state forbids it",
        413: "Body larger than the server accepts",
        415: "Not a JSON body (Content-Type must be application/json)",
        422: "A field is missing, of the wrong type or outside the schema (the field is named)",
        429: "Too many request bodies in flight on the server; retry after the Retry-After seconds",
        500: "The model failed on valid input",
        503: "Not ready (no champion loaded yet), or the log queue is full",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}
