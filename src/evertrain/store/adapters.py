"""LoRA adapters as predictors (the ``llm`` extra: torch, transformers, peft).

An adapter version is a LoRA adapter and its classification head over a shared base.

Text in, classes out. The text is tokenized with the base's tokenizer, run through the
base with the adapter active, mean-pooled over its tokens and mapped to class scores by
the adapter's own head (a head per adapter, so a new version may know a new class without
touching the base). :func:`text_logits` is that forward pass, shared by the trainer and by
serving so both compute the same thing.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import numpy as np

from evertrain.exceptions import DataValidationError
from evertrain.store.artifacts import ArtifactStore
from evertrain.store.bases import SharedBase, shared_base
from evertrain.store.formats import AdapterArtifact

#: Texts per forward pass when scoring.
PREDICT_BATCH = 32
ADAPTER_PREFIX = "adapter."
HEAD_WEIGHT, HEAD_BIAS = "head.weight", "head.bias"


#: Texts tokenized per call of the tokenizer when a whole column is tokenized ahead.
TOKENIZE_CHUNK = 4096


class TokenIds:
    """The token ids of many texts, tokenized once and kept flat (int32 and offsets).

    A training tokenizes its texts once rather than once per epoch, and scoring batches
    texts of similar length together (:meth:`by_length`): every batch is padded to its
    longest text, so sorted batches spend little on padding. The outputs do not depend on
    the batching (the attention mask hides the padding), only the cost does.
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, pad_id: int, left: bool) -> None:
        self.ids = ids
        self.offsets = offsets
        self.pad_id = pad_id
        self.left = left

    @classmethod
    def of(cls, tokenizer: Any, texts: list[str], max_length: int) -> TokenIds:
        """Tokenize ``texts``, each cut at ``max_length``; an empty text is read as the end-of-text
        token, so that it still has one token to pool."""
        filler = tokenizer.eos_token or tokenizer.unk_token or " "
        parts: list[np.ndarray] = [np.zeros(0, dtype=np.int32)]
        lengths: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            chunk = [t if t else filler for t in texts[start : start + TOKENIZE_CHUNK]]
            ids = tokenizer(chunk, truncation=True, max_length=max_length, return_attention_mask=False)
            ids = ids["input_ids"]
            parts.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32))
            lengths.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        flat = np.concatenate(parts)
        offsets = np.cumsum(np.concatenate(lengths))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(flat, offsets, int(pad_id), getattr(tokenizer, "padding_side", "right") == "left")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def batch(self, rows: Any) -> dict[str, Any]:
        """``input_ids`` and ``attention_mask`` of ``rows``, padded to the longest of them
        on the tokenizer's padding side."""
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        width = max(int(lengths.max(initial=0)), 1)
        mask = np.arange(width) < lengths[:, None]
        if self.left:
            mask = mask[:, ::-1]
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        if len(rows):
            # row-major: each row's tokens land in order in its unmasked places
            ids[mask] = np.concatenate([self.ids[a:b] for a, b in zip(starts, ends, strict=True)])
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)),
        }

    def by_length(self, size: int) -> list[np.ndarray]:
        """Row indices in batches of at most ``size``, shortest texts first."""
        order = np.argsort(self.lengths(), kind="stable")
        return [order[start : start + size] for start in range(0, len(order), size)]


def text_logits(model: Any, head_weight: Any, head_bias: Any, batch: dict[str, Any]) -> Any:
    """Class scores: the base's last hidden states, mean-pooled over real tokens, through the head."""
    import torch

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hidden = out.last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.linear(pooled.float(), head_weight, head_bias)


def texts_of(X: Any, column: str) -> list[str]:
    """The text column of ``X`` as strings (a missing text is the empty string)."""
    try:
        values = X[column]
    except (KeyError, IndexError, TypeError):
        raise DataValidationError(f"text column {column!r} is not among the inputs") from None
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


class AdapterModel:
    """A text classifier: adapter ``name`` on ``base``, with the scikit-learn prediction methods.

    The adapter is attached to the shared base when the model is built and detached when
    it is dropped, so a replica holds one base and the adapters it serves.
    """

    def __init__(self, artifact: AdapterArtifact, base: SharedBase, name: str | None = None) -> None:
        import torch

        meta = artifact.meta
        self.artifact = artifact
        self.base = base
        self.text_column = str(meta["text_column"])
        self.max_length = int(meta.get("max_length", 128))
        self.classes_ = np.asarray(meta["classes"])
        self.feature_names_in_ = np.asarray([self.text_column], dtype=object)
        self._weight = torch.from_numpy(np.array(artifact.tensors[HEAD_WEIGHT], dtype=np.float32))
        self._bias = torch.from_numpy(np.array(artifact.tensors[HEAD_BIAS], dtype=np.float32))
        if name is None:
            name = base.new_name()
            weights = {
                k[len(ADAPTER_PREFIX) :]: torch.from_numpy(np.array(v))
                for k, v in artifact.tensors.items()
                if k.startswith(ADAPTER_PREFIX)
            }
            base.attach(name, dict(meta["lora"]), weights)
        self.adapter_name = name
        self._finalizer = weakref.finalize(self, base.detach, name)

    def __repr__(self) -> str:
        return (
            f"AdapterModel({self.adapter_name} on base {self.base.digest[:12]}, {len(self.classes_)} classes)"
        )

    def logits(self, X: Any) -> np.ndarray:
        import torch

        texts = texts_of(X, self.text_column)
        out = np.zeros((len(texts), len(self.classes_)))
        tokens = TokenIds.of(self.base.tokenizer, texts, self.max_length)
        for rows in tokens.by_length(PREDICT_BATCH):
            batch = tokens.batch(rows)
            with torch.inference_mode(), self.base.using(self.adapter_name) as model:
                out[rows] = text_logits(model, self._weight, self._bias, batch).numpy()
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        z = self.logits(X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])


def load_adapter(artifact: AdapterArtifact, artifacts: ArtifactStore | None = None) -> AdapterModel:
    """An adapter ready to predict, attached to the process's copy of its base model."""
    meta = artifact.meta
    base = shared_base(
        str(meta["base_model_sha256"]), artifacts=artifacts, location=meta.get("base_model_uri")
    )
    return AdapterModel(artifact, base)
