"""LoRA adapters as predictors (the ``llm`` extra: torch, transformers, peft).

An adapter version is a LoRA adapter over a shared base: a classifier's with its own head,
a generator's alone (its base keeps its language-model head).

:class:`AdapterModel`, text in, classes out. The text is tokenized with the base's
tokenizer, run through the base with the adapter active, mean-pooled over its tokens and
mapped to class scores by the adapter's own head (a head per adapter, so a new version may
know a new class without touching the base). :func:`text_logits` is that forward pass,
shared by the trainer and by serving so both compute the same thing.

:class:`GeneratorModel`, prompts in, answers out (greedy decoding), and the likelihood of
given answers (:func:`response_nll`, shared with the trainer's loss).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from evertrain.exceptions import DataValidationError
from evertrain.store.artifacts import ArtifactStore
from evertrain.store.bases import CAUSAL_LM, ENCODER, SharedBase, shared_base
from evertrain.store.formats import AdapterArtifact

#: Texts per forward pass when scoring.
PREDICT_BATCH = 32
ADAPTER_PREFIX = "adapter."
HEAD_WEIGHT, HEAD_BIAS = "head.weight", "head.bias"


#: Texts tokenized per call of the tokenizer when a whole column is tokenized ahead.
TOKENIZE_CHUNK = 4096


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


def _left(tokenizer: Any) -> bool:
    return getattr(tokenizer, "padding_side", "right") == "left"


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
    def of(
        cls,
        tokenizer: Any,
        texts: list[str],
        max_length: int,
        *,
        keep_end: bool = False,
        special_tokens: bool = True,
        empty_as_eos: bool = True,
        left: bool | None = None,
    ) -> TokenIds:
        """Tokenize ``texts``, each cut to ``max_length`` tokens.

        A classifier's texts keep their first tokens and the tokenizer's special tokens.
        A generator's texts get no special tokens (``special_tokens=False``: a response
        follows its prompt within one sequence); a prompt keeps its last tokens
        (``keep_end``: what the answer follows). With ``empty_as_eos`` an empty text is read
        as the end-of-text token, so that it still has one token to pool. ``left`` pads on
        the left (default: as the tokenizer pads).
        """
        filler = (tokenizer.eos_token or tokenizer.unk_token or " ") if empty_as_eos else ""
        parts: list[np.ndarray] = [np.zeros(0, dtype=np.int32)]
        lengths: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            chunk = [t if t else filler for t in texts[start : start + TOKENIZE_CHUNK]]
            if special_tokens and not keep_end:
                ids = tokenizer(chunk, truncation=True, max_length=max_length, return_attention_mask=False)
                ids = ids["input_ids"]
            else:
                ids = tokenizer(chunk, add_special_tokens=special_tokens, return_attention_mask=False)
                ids = [
                    (x[len(x) - max_length :] if keep_end else x[:max_length]) if len(x) > max_length else x
                    for x in ids["input_ids"]
                ]
            parts.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32))
            lengths.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        return cls(
            np.concatenate(parts),
            np.cumsum(np.concatenate(lengths)),
            _pad_id(tokenizer),
            _left(tokenizer) if left is None else left,
        )

    @classmethod
    def from_lists(cls, ids: Sequence[Sequence[int]], pad_id: int, left: bool) -> TokenIds:
        """Token ids already made, one list per text."""
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return cls(flat, np.concatenate(([0], np.cumsum(lengths))), pad_id, left)

    def row(self, i: int) -> list[int]:
        """The ids of text ``i``."""
        return self.ids[self.offsets[i] : self.offsets[i + 1]].tolist()

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


def no_cache(model: Any) -> dict[str, Any]:
    """The forward-pass argument that turns off the key/value cache, for a model that keeps one.

    A decoder (GPT-2 and the like) builds a cache of every layer's keys and values on each
    forward pass unless told not to: a pass that scores whole sequences (training, the valid
    loss, a classifier's answers) never reads it back, so building it is wasted work. A model
    with no such cache (an encoder) is passed nothing.

    >>> from types import SimpleNamespace
    >>> no_cache(SimpleNamespace(config=SimpleNamespace(use_cache=True)))
    {'use_cache': False}
    >>> no_cache(SimpleNamespace(config=SimpleNamespace()))
    {}
    """
    keeps_one = getattr(getattr(model, "config", None), "use_cache", None) is not None
    return {"use_cache": False} if keeps_one else {}


def text_logits(model: Any, head_weight: Any, head_bias: Any, batch: dict[str, Any]) -> Any:
    """Class scores: the base's last hidden states, mean-pooled over real tokens, through the head."""
    import torch

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **no_cache(model))
    hidden = out.last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.linear(pooled.float(), head_weight, head_bias)


def as_texts(values: Iterable[Any]) -> list[str]:
    """Values as strings, a missing one (None, NaN) as the empty string."""
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def texts_of(X: Any, column: str) -> list[str]:
    """The text column of ``X`` as strings (a missing text is the empty string)."""
    try:
        values = X[column]
    except (KeyError, IndexError, TypeError):
        raise DataValidationError(f"text column {column!r} is not among the inputs") from None
    return as_texts(values)


def prompts_of(X: Any, column: str, separator: str) -> list[str]:
    """A generator's prompts: each text followed by the separator it learned to answer after
    (one function for training and serving, so both build them alike)."""
    return [t + separator for t in texts_of(X, column)]


def max_positions(config: Any) -> int:
    """The most tokens a base model reads at once (0 when its configuration does not say)."""
    return int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0))


class _Attached:
    """An adapter attached to a shared base while this object lives.

    The adapter is attached when the model is built (unless ``name`` says it already is)
    and detached when it is dropped, so a replica holds one base and the adapters it serves.
    """

    def __init__(self, artifact: AdapterArtifact, base: SharedBase, name: str | None = None) -> None:
        import torch

        meta = artifact.meta
        self.artifact = artifact
        self.base = base
        self.text_column = str(meta["text_column"])
        self.max_length = int(meta.get("max_length", 128))
        self.feature_names_in_ = np.asarray([self.text_column], dtype=object)
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


class AdapterModel(_Attached):
    """A text classifier: adapter ``name`` on ``base``, with the scikit-learn prediction methods."""

    def __init__(self, artifact: AdapterArtifact, base: SharedBase, name: str | None = None) -> None:
        import torch

        super().__init__(artifact, base, name)
        self.classes_ = np.asarray(artifact.meta["classes"])
        self._weight = torch.from_numpy(np.array(artifact.tensors[HEAD_WEIGHT], dtype=np.float32))
        self._bias = torch.from_numpy(np.array(artifact.tensors[HEAD_BIAS], dtype=np.float32))

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


def pair_ids(
    prompt: Sequence[int], response: Sequence[int], eos_id: int, max_length: int
) -> tuple[list[int], int]:
    """One training sequence of a prompt/response pair, and where its response begins.

    The response keeps its end-of-text token (so the model learns to stop) and as much of
    itself as fits; the prompt keeps its end (the separator, and what the answer follows).

    >>> pair_ids([1, 2, 3, 4], [7, 8], eos_id=0, max_length=5)
    ([3, 4, 7, 8, 0], 2)
    >>> pair_ids([1, 2], [7, 8], eos_id=0, max_length=9)
    ([1, 2, 7, 8, 0], 2)
    """
    answer = [*response, eos_id][: max_length - 1] if max_length > 1 else [eos_id]
    room = max(max_length - len(answer), 0)
    kept = list(prompt[max(len(prompt) - room, 0) :]) if room else []
    return kept + answer, len(kept)


class GeneratorModel(_Attached):
    """A causal language model fine-tuned on prompt/response pairs: prompts in, text out.

    ``predict`` answers each prompt (greedy decoding, up to ``max_new_tokens``; a call may
    ask for fewer); ``likelihood`` is the summed negative log-likelihood of given responses
    and their token counts, the parts of a perplexity.
    """

    generates = True

    def __init__(self, artifact: AdapterArtifact, base: SharedBase, name: str | None = None) -> None:
        super().__init__(artifact, base, name)
        meta = artifact.meta
        self.separator = str(meta.get("separator", "\n"))
        self.max_new_tokens = int(meta.get("max_new_tokens", 32))
        self.positions = max_positions(base.backbone.config)

    def __repr__(self) -> str:
        return f"GeneratorModel({self.adapter_name} on base {self.base.digest[:12]})"

    def predict(self, X: Any, max_new_tokens: int | None = None) -> np.ndarray:
        """The generated answer to each prompt (greedy), at most ``max_new_tokens`` tokens each
        (the model's own limit when None or larger)."""
        import torch

        limit = self.max_new_tokens if max_new_tokens is None else min(max_new_tokens, self.max_new_tokens)
        tokenizer = self.base.tokenizer
        room = self.max_length if not self.positions else min(self.max_length, self.positions - limit)
        prompts = TokenIds.of(
            tokenizer,
            prompts_of(X, self.text_column, self.separator),
            max(room, 1),
            keep_end=True,
            special_tokens=False,
            left=True,  # a decoder generates after the prompt's last token: pad on the left
        )
        out = np.empty(len(prompts), dtype=object)
        eos, pad = tokenizer.eos_token_id, prompts.pad_id
        for rows in prompts.by_length(PREDICT_BATCH):
            batch = prompts.batch(rows)
            with torch.inference_mode(), self.base.using(self.adapter_name) as model:
                made = model.generate(
                    **batch, max_new_tokens=limit, do_sample=False, eos_token_id=eos, pad_token_id=pad
                )
            new = made[:, batch["input_ids"].shape[1] :]
            for row, text in zip(rows, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                out[row] = text.strip()
        return out

    def likelihood(self, X: Any, responses: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the summed negative log-likelihood (nats) of the response after its prompt,
        and the response's token count (its end-of-text token included)."""
        import torch

        tokenizer = self.base.tokenizer
        batch_ids = response_batches(
            tokenizer, prompts_of(X, self.text_column, self.separator), responses, self.max_length
        )
        nll = np.zeros(len(batch_ids.starts))
        counts = np.zeros(len(batch_ids.starts))
        for rows in batch_ids.tokens.by_length(PREDICT_BATCH):
            batch = batch_ids.batch(rows)
            with torch.inference_mode(), self.base.using(self.adapter_name) as model:
                sums, n = response_nll(model, batch)
            nll[rows], counts[rows] = sums.numpy(), n.numpy()
        return nll, counts


class Pairs:
    """Prompt/response pairs tokenized once as training sequences, with where each response begins."""

    def __init__(self, tokens: TokenIds, starts: np.ndarray) -> None:
        self.tokens = tokens
        self.starts = starts

    def batch(self, rows: Any) -> dict[str, Any]:
        """``input_ids``, ``attention_mask`` and ``labels`` (the response's tokens; -100 elsewhere)."""
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        batch = self.tokens.batch(rows)
        positions = torch.arange(batch["input_ids"].shape[1])
        # the response's tokens: from where it starts to the padding (sequences pad on the right)
        answer = (positions >= torch.from_numpy(self.starts[rows])[:, None]) & batch["attention_mask"].bool()
        labels = batch["input_ids"].clone()
        labels[~answer] = -100
        batch["labels"] = labels
        return batch


def response_batches(tokenizer: Any, prompts: list[str], responses: Sequence[Any], max_length: int) -> Pairs:
    """Tokenize prompt/response pairs (:func:`pair_ids`) once, for training or scoring."""
    texts = as_texts(responses)
    prompt_ids = TokenIds.of(tokenizer, prompts, max_length, keep_end=True, special_tokens=False)
    answer_ids = TokenIds.of(tokenizer, texts, max_length, special_tokens=False, empty_as_eos=False)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else prompt_ids.pad_id
    sequences, starts = [], []
    for i in range(len(prompts)):
        ids, start = pair_ids(prompt_ids.row(i), answer_ids.row(i), int(eos), max_length)
        sequences.append(ids)
        starts.append(start)
    return Pairs(
        TokenIds.from_lists(sequences, prompt_ids.pad_id, left=False), np.asarray(starts, dtype=np.int64)
    )


def response_nll(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Per row of ``batch``: the summed negative log-likelihood of its labelled tokens, and their count."""
    import torch

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **no_cache(model))
    logits = out.logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
    ).view(target.shape)
    counted = target != -100
    return (losses * counted).sum(dim=1), counted.sum(dim=1)


def load_adapter(
    artifact: AdapterArtifact, artifacts: ArtifactStore | None = None
) -> AdapterModel | GeneratorModel:
    """An adapter ready to predict, attached to the process's copy of its base model."""
    meta = artifact.meta
    causal = meta.get("kind") == CAUSAL_LM
    base = shared_base(
        str(meta["base_model_sha256"]),
        artifacts=artifacts,
        location=meta.get("base_model_uri"),
        kind=CAUSAL_LM if causal else ENCODER,
    )
    return GeneratorModel(artifact, base) if causal else AdapterModel(artifact, base)
