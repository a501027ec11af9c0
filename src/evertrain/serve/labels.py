"""What a feedback label may be: typed by the model's task and classes, read from the store.

The feedback log holds one label type per model: numbers for regression and for classes
that are numbers, text for classes that are text. The rule comes from the spec (the
task and the target column) and the champion's training snapshot in the store (the
target's type, and its categories or range), never from a loaded model, so a replica
that has not loaded the champion yet (or failed to) types labels exactly as one that has
(a mixed-type log would stop monitoring). Only a model with no spec and no snapshot falls
back on the loaded champion's classes; when neither is there, feedback is answered 503
until the champion loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from evertrain.exceptions import InputError
from evertrain.serve import openapi as doc
from evertrain.spec import Spec
from evertrain.store import Store
from evertrain.store.metadata import snapshots
from evertrain.train.inputs import show, value_kind
from evertrain.train.predictor import LoadedModel

NUMBER = "number"
TEXT = "text"
_MAX_CLASSES_SHOWN = 10
#: Characters a generator's label (the reference answer) may hold: a long answer, not a document.
MAX_ANSWER_CHARS = 20_000


@dataclass(frozen=True)
class LabelRule:
    """The type (``number`` or ``text``) and, for a classifier, the classes a label must be."""

    task: str
    kind: str
    classes: frozenset[Any] | None = None  # the classes (text, or numbers), when known
    lo: float | None = None  # integer classes given by the training range of a numeric target
    hi: float | None = None
    source: str = "spec"

    @property
    def log_type(self) -> str:
        return "string" if self.kind == TEXT else "float64"

    def check(self, label: Any, index: int) -> Any:
        """The label as the log stores it, or an :class:`InputError` naming it."""
        field = f"labels[{index}].label"
        if label is None or type(label) in (list, dict):
            raise InputError(field, f"expected {self._expected()}, got {value_kind(label)} {show(label)}")
        if self.kind == TEXT:
            if type(label) is not str:
                why = "" if self.task == "generation" else " (the model's classes are text)"
                raise InputError(field, f"expected {self._expected()}{why}, got {show(label)}")
            limit = MAX_ANSWER_CHARS if self.task == "generation" else doc.MAX_ID_CHARS
            if len(label) > limit:
                raise InputError(field, f"a label of {len(label)} characters is longer than {limit}")
            # A multiclass model's text classes are open: a class it does not know yet (a new
            # intent) is how the labels tell the loop the world has one more; the retrain learns it.
            if self.classes is not None and label not in self.classes and self.task != "multiclass":
                raise InputError(field, f"{show(label)} is not one of the model's classes ({self._shown()})")
            return label
        if type(label) is str:
            raise InputError(field, f"expected {self._expected()}, got string {show(label)}")
        try:
            number = float(label)
        except OverflowError:
            raise InputError(field, f"number {show(label)} is too large") from None
        if not math.isfinite(number):
            raise InputError(field, f"number {show(label)} is not finite")
        if self.task != "regression":
            if not number.is_integer():
                raise InputError(
                    field, f"{show(label)} is not a class of this {self.task} model (classes are whole)"
                )
            outside = (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi)
            if outside or (self.classes is not None and number not in self.classes):
                raise InputError(field, f"{show(label)} is not one of the model's classes ({self._shown()})")
        return number

    def _expected(self) -> str:
        if self.kind == TEXT:
            return "the reference answer (a string)" if self.task == "generation" else "a string class"
        return "a number" if self.task == "regression" else "a class number"

    def _shown(self) -> str:
        if self.classes is not None:
            known = sorted(self.classes, key=str)
            more = ", ..." if len(known) > _MAX_CLASSES_SHOWN else ""
            return ", ".join(show(c) for c in known[:_MAX_CLASSES_SHOWN]) + more
        return f"whole numbers from {self.lo:g} to {self.hi:g}"

    def describe(self) -> dict[str, Any]:
        """The rule as the model status shows it."""
        out: dict[str, Any] = {"type": self.kind, "task": self.task}
        if self.classes is not None:
            out["classes"] = sorted(self.classes, key=str)
        elif self.lo is not None and self.hi is not None:
            out["classes"] = {"min": self.lo, "max": self.hi}
        return out


def _train_snapshot_target(store: Store, name: str, version: int, target: str) -> dict[str, Any] | None:
    mv = store.registry.get_version(name, version)
    ids = [s["id"] for s in mv.snapshots if s["role"] == "train"]
    if not ids:
        return None
    with store.db.read() as conn:
        row = conn.execute(sa.select(snapshots.c.schema).where(snapshots.c.id == ids[0])).first()
    if row is None or not isinstance(row.schema, dict):
        return None
    column = (row.schema.get("columns") or {}).get(target)
    return column if isinstance(column, dict) else None


def label_rule(store: Store, spec: Spec | None, name: str, version: int) -> LabelRule | None:
    """The label rule of ``name`` from its spec and the training snapshot of ``version``.

    ``None`` when the store and spec cannot tell (no spec names the model): the caller
    then asks the loaded champion (:func:`rule_from_model`).
    """
    if spec is None or spec.model.name != name:
        return None
    task = spec.model.task
    if task == "regression":
        return LabelRule(task, NUMBER)
    if task == "generation":
        return LabelRule(task, TEXT)  # the reference answer, any text
    column = _train_snapshot_target(store, name, version, spec.model.target)
    if column is None:
        # No snapshot of the target: the task still says classes; their type is unknown,
        # so numbers (the common 0/1 and class-index labels) without a range.
        return LabelRule(task, NUMBER, source="spec")
    kind = column.get("type")
    if kind in ("categorical", "string"):
        raw = column.get("categories")
        known = [c for c in raw if c is not None] if isinstance(raw, list) else None
        if known and all(type(c) in (int, float) for c in known):
            return LabelRule(task, NUMBER, frozenset(float(c) for c in known), source="snapshot")
        classes = None if known is None else frozenset(str(c) for c in known)
        return LabelRule(task, TEXT, classes, source="snapshot")
    if kind == "boolean":
        return LabelRule(task, NUMBER, lo=0.0, hi=1.0, source="snapshot")
    lo, hi = column.get("min"), column.get("max")
    if (
        isinstance(lo, int | float)
        and isinstance(hi, int | float)
        and math.isfinite(lo)
        and math.isfinite(hi)
    ):
        return LabelRule(task, NUMBER, lo=float(lo), hi=float(hi), source="snapshot")
    return LabelRule(task, NUMBER, source="snapshot")


def rule_from_model(model: LoadedModel) -> LabelRule:
    """The label rule read from a loaded model (only for a model that no spec describes)."""
    if model.max_new_tokens is not None:
        return LabelRule(model.task, TEXT, source="model")
    if model.task == "regression" or model.classes is None:
        return LabelRule(model.task, NUMBER, source="model")
    if model.prediction_type == "string":
        return LabelRule(model.task, TEXT, frozenset(str(c) for c in model.classes), source="model")
    return LabelRule(model.task, NUMBER, frozenset(float(c) for c in model.classes), source="model")
