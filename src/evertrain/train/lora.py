"""``kind: lora``: fine-tune a base language model with LoRA to classify a text column, or
(task ``generation``) to answer prompts, as a causal language model trained on
prompt/response pairs with the loss on the response's tokens only.

The loop an ML engineer would write with PEFT, with what a continuous-training job needs
around it:

- the base model comes from a folder or an fsspec URL (never a model hub) and is named by
  the hash of its files (:mod:`evertrain.store.bases`), which the adapter records;
- micro-batches with gradient accumulation, AdamW with linear warm-up and decay, gradient
  clipping, autocast to bf16 (CPU or GPU) or fp16 (GPU, with loss scaling);
- the valid loss checked every ``eval_every`` optimizer steps (default: once per epoch),
  the best adapter kept, early stopping after ``patience`` checks without improvement;
- checkpoints (adapter, head, optimizer moments, the position in the epoch's order and
  the best so far, as safetensors and JSON: nothing is unpickled) every
  ``checkpoint_every`` steps or ``checkpoint_seconds``, so a killed training resumes
  where it stopped and ends with the same adapter;
- a warm start from the parent version's adapter (continued fine-tuning) when
  ``warm_start`` is set and the parent was trained on the same base: its adapter weights,
  and (a classifier) its head's rows for the classes both know; a new class starts fresh;
- with ``distributed``, the same loop as a Ray Train job of N data-parallel workers (DDP),
  each on its part of every micro-batch (:mod:`evertrain.train.ddp`): the same optimizer
  steps as one process, the same artifact.

A generation pair is one sequence: the prompt, ``lora.separator``, the response and the
end-of-text token (:func:`evertrain.store.adapters.pair_ids`); the valid loss is the
negative log-likelihood per response token, the log of the valid perplexity.

Each micro-batch's order and dropout come from the seed and its index alone, so a resumed
training draws what an uninterrupted one would have drawn.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evertrain.evaluate.scoring import encode_labels
from evertrain.exceptions import DataValidationError, UsageError
from evertrain.store.adapters import (
    ADAPTER_PREFIX,
    HEAD_BIAS,
    HEAD_WEIGHT,
    AdapterModel,
    GeneratorModel,
    TokenIds,
    load_adapter,
    max_positions,
    prompts_of,
    response_batches,
    response_nll,
    text_logits,
    texts_of,
)
from evertrain.store.bases import (
    CAUSAL_LM,
    ENCODER,
    SharedBase,
    load_pretrained,
    materialize,
    quiet_peft,
    read_base,
    resolve_location,
)
from evertrain.store.formats import AdapterArtifact
from evertrain.train.context import TrainContext, Trainer, write_atomic
from evertrain.train.ddp import Ranks
from evertrain.train.progress import ProgressWriter

FORMAT = "evertrain-lora/1"
CHECKPOINT_TENSORS = "lora_state.safetensors"
CHECKPOINT_STATE = "lora_state.json"
#: Texts per forward pass when computing the valid loss, on an accelerator.
EVAL_BATCH = 64
#: The same on a CPU: batches of 32 length-sorted texts scored the valid part a sixth to a
#: quarter faster than batches of 64 (small GPT-2 bases, one thread): a larger padded batch's
#: activations and attention scores outgrow the caches, and no parallel hardware is left idle.
EVAL_BATCH_CPU = 32
#: The model task whose adapters generate text (a causal language model).
GENERATION = "generation"
#: What an adapter's metadata calls each kind (``kind``).
SEQUENCE_CLASSIFICATION = "sequence_classification"


def lora_config(spec: Any, model_type: str) -> dict[str, Any]:
    """The PEFT ``LoraConfig`` arguments of a spec's ``lora`` settings, as plain JSON."""
    config: dict[str, Any] = {
        "r": spec.r,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "bias": "none",
        # GPT-2 keeps its projections as Conv1D, whose weights are stored transposed.
        "fan_in_fan_out": model_type == "gpt2",
    }
    if spec.target_modules:
        config["target_modules"] = list(spec.target_modules)
    return config


def _device(name: str) -> Any:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("lora.device is cuda but no GPU is available to torch here")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass(frozen=True)
class _Data:
    """What an objective is made from: the tokenizer, the rows, which columns, the settings."""

    tokenizer: Any
    train: pd.DataFrame
    valid: pd.DataFrame
    column: str
    target: str
    spec: Any  # the trainer's lora settings
    config: Any  # the base model's configuration
    eval_batch: int = EVAL_BATCH  # texts per forward pass of the valid loss


class _Objective:
    """What a LoRA fine-tuning learns: its data tokenized once, the loss of a micro-batch, the
    valid loss, and what the adapter stores beside its LoRA weights."""

    kind: str
    head: Any = None
    max_length: int
    n_train: int
    n_valid: int

    def micro_loss(self, model: Any, rows: np.ndarray, device: Any) -> tuple[Any, int]:
        """The mean loss of train rows ``rows`` (to back-propagate) and the tokens they hold."""
        raise NotImplementedError

    def valid_sums(self, model: Any, device: Any, ranks: Ranks) -> tuple[float, int]:
        """The valid loss summed over this rank's share of the valid batches, and what it is
        summed over (rows or tokens): the valid loss is the ratio of their totals over the ranks."""
        raise NotImplementedError

    def tensors(self) -> dict[str, np.ndarray]:
        return {}

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def warm_start(self, parent: AdapterArtifact, context: TrainContext) -> None:
        context.log("warm start from the parent adapter")


class _Classify(_Objective):
    """Intents from text: a head on the mean-pooled last hidden states, cross-entropy."""

    kind = SEQUENCE_CLASSIFICATION

    def __init__(self, data: _Data) -> None:
        import torch

        target, length = data.target, data.spec.max_length
        self.classes = np.unique(pd.concat([data.train[target], data.valid[target]]).to_numpy())
        if len(self.classes) < 2:
            raise DataValidationError(f"target {target!r} has fewer than two classes in the training rows")
        known = self.classes.tolist()
        self.max_length = length
        # Tokenized once: each epoch pads its micro-batches from these ids.
        self.texts = TokenIds.of(data.tokenizer, texts_of(data.train, data.column), length)
        self.y = encode_labels(data.train[target], known)
        self.vtexts = TokenIds.of(data.tokenizer, texts_of(data.valid, data.column), length)
        self.vy = encode_labels(data.valid[target], known)
        self.valid_batches = self.vtexts.by_length(data.eval_batch)
        self.n_train, self.n_valid = len(self.texts), len(self.vtexts)
        self.head = torch.nn.Linear(int(data.config.hidden_size), len(self.classes))

    def micro_loss(self, model: Any, rows: np.ndarray, device: Any) -> tuple[Any, int]:
        import torch

        batch = _to(self.texts.batch(rows), device)
        target = torch.as_tensor(self.y[rows], device=device)
        logits = text_logits(model, self.head.weight, self.head.bias, batch)
        return torch.nn.functional.cross_entropy(logits.float(), target), int(batch["attention_mask"].sum())

    def valid_sums(self, model: Any, device: Any, ranks: Ranks) -> tuple[float, int]:
        import torch

        total, count = 0.0, 0
        for rows in ranks.shard(self.valid_batches):
            batch = _to(self.vtexts.batch(rows), device)
            target = torch.as_tensor(self.vy[rows], device=device)
            logits = text_logits(model, self.head.weight, self.head.bias, batch)
            total += float(torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum"))
            count += len(target)
        return total, count

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            HEAD_WEIGHT: self.head.weight.detach().float().cpu().numpy(),
            HEAD_BIAS: self.head.bias.detach().float().cpu().numpy(),
        }

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": self.classes.tolist(), "pooling": "mean"}

    def warm_start(self, parent: AdapterArtifact, context: TrainContext) -> None:
        """The parent head's rows for the classes both know; a new class starts fresh."""
        import torch

        old = {c: i for i, c in enumerate(parent.meta.get("classes", []))}
        kept = 0
        with torch.no_grad():
            for i, c in enumerate(self.classes.tolist()):
                if c in old:
                    self.head.weight[i] = _tensor(parent.tensors[HEAD_WEIGHT][old[c]])
                    self.head.bias[i] = float(parent.tensors[HEAD_BIAS][old[c]])
                    kept += 1
        context.log(f"warm start from the parent adapter ({kept} of {len(self.classes)} classes known to it)")
        context.info["warm_start_classes"] = kept


class _Generate(_Objective):
    """Responses to prompts: next-token cross-entropy on the response's tokens only."""

    kind = CAUSAL_LM

    def __init__(self, data: _Data) -> None:
        s, config = data.spec, data.config
        positions = max_positions(config)
        self.max_length = min(s.max_length, positions) if positions else s.max_length
        if positions and s.max_new_tokens >= positions:
            raise UsageError(
                f"lora.max_new_tokens is {s.max_new_tokens}, but the base model reads at most {positions} "
                "tokens, its prompt included"
            )
        self.separator = s.separator
        self.max_new_tokens = s.max_new_tokens

        def pairs(frame: pd.DataFrame) -> Any:
            prompts = prompts_of(frame, data.column, s.separator)
            return response_batches(data.tokenizer, prompts, list(frame[data.target]), self.max_length)

        self.train, self.valid = pairs(data.train), pairs(data.valid)
        self.valid_batches = self.valid.tokens.by_length(data.eval_batch)
        self.n_train, self.n_valid = len(self.train.starts), len(self.valid.starts)

    def micro_loss(self, model: Any, rows: np.ndarray, device: Any) -> tuple[Any, int]:
        batch = _to(self.train.batch(rows), device)
        sums, counts = response_nll(model, batch)
        return sums.sum() / counts.sum().clamp(min=1), int(batch["attention_mask"].sum())

    def valid_sums(self, model: Any, device: Any, ranks: Ranks) -> tuple[float, int]:
        """Negative log-likelihood summed over response tokens, and their count (the ratio is
        the log of the valid perplexity)."""
        total, count = 0.0, 0
        for rows in ranks.shard(self.valid_batches):
            sums, counts = response_nll(model, _to(self.valid.batch(rows), device))
            total += float(sums.sum())
            count += int(counts.sum())
        return total, count

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "separator": self.separator, "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class _Fitted:
    """What a fine-tuning made on one rank: the adapter, and the model it was read from."""

    artifact: AdapterArtifact
    model: Any
    tokenizer: Any
    digest: str


class LoraTrainer(Trainer):
    kind = "lora"

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, context: TrainContext) -> Any:
        """The adapter fine-tuned here, or (``lora.distributed``) by a Ray Train job."""
        if self.spec.lora.distributed is not None:
            return self._fit_on_ray(train, valid, context)
        fitted = self._train(train, valid, context, Ranks())
        shared = SharedBase.around(fitted.digest, fitted.model, fitted.tokenizer, "default")
        if context.task == GENERATION:
            return GeneratorModel(fitted.artifact, shared, name="default")
        return AdapterModel(fitted.artifact, shared, name="default")

    def _fit_on_ray(self, train: pd.DataFrame, valid: pd.DataFrame, context: TrainContext) -> Any:
        """The same training loop on ``lora.distributed.workers`` Ray Train workers (DDP); the
        adapter rank 0 hands back, on this process's copy of its base model."""
        from evertrain.train.ddp import run_on_ray

        s = self.spec.lora
        workers = s.distributed.workers
        context.log(f"fine-tuning as a Ray Train job with {workers} DDP workers")
        answer = run_on_ray(
            _RankJob.of(self, train, valid, context),
            workers=workers,
            cpus_per_worker=s.distributed.cpus_per_worker,
            device=s.device,
            name="evertrain-lora",
        )
        for line in answer["log"]:
            context.log(line)
        context.curves.update(answer["curves"])
        context.info.update(answer["info"])
        return load_adapter(answer["artifact"])

    def _train(
        self, train: pd.DataFrame, valid: pd.DataFrame, context: TrainContext, ranks: Ranks
    ) -> _Fitted:
        """The fine-tuning loop, alone (``Ranks()``) or as one of several data-parallel ranks."""
        import torch
        from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

        s = self.spec.lora
        column = s.text_column or (context.features[0] if len(context.features) == 1 else None)
        if column is None:
            raise UsageError(
                f"a lora trainer reads one text column; the features are {context.features}: "
                "name lora.text_column"
            )
        generate = context.task == GENERATION
        if context.num_threads:
            torch.set_num_threads(context.num_threads)
        device = ranks.device if ranks.device is not None else _device(s.device)
        if s.precision == "fp16" and device.type != "cuda":
            raise UsageError("lora.precision fp16 needs a GPU; use bf16 or fp32 on a CPU")
        location = resolve_location(s.base_model, context.project)
        manifest, files = read_base(location)
        digest = manifest.digest
        folder = materialize(digest, location=location, read=(manifest, files))
        del files
        backbone, tokenizer = load_pretrained(folder, CAUSAL_LM if generate else ENCODER)
        model_type = str(getattr(backbone.config, "model_type", ""))
        context.log(f"base model {digest[:12]} ({model_type}) from {location}")

        train = train[train[context.target].notna()]
        valid = valid[valid[context.target].notna()]
        config = lora_config(s, model_type)
        torch.manual_seed(context.seed)
        with quiet_peft():
            model = get_peft_model(backbone, LoraConfig(**config))
        config["target_modules"] = sorted(getattr(model.peft_config["default"], "target_modules", None) or [])
        eval_batch = EVAL_BATCH_CPU if device.type == "cpu" else EVAL_BATCH
        data = _Data(tokenizer, train, valid, column, context.target, s, backbone.config, eval_batch)
        objective: _Objective = _Generate(data) if generate else _Classify(data)
        self._warm_start(context, model, objective, digest, config)
        head = objective.head
        model.to(device)
        if head is not None:
            head.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        params += [] if head is None else list(head.parameters())
        optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
        micro_per_epoch = math.ceil(objective.n_train / s.batch_size)
        steps_per_epoch = math.ceil(micro_per_epoch / s.grad_accum_steps)
        total_steps = s.epochs * steps_per_epoch
        if s.max_steps is not None:
            total_steps = min(total_steps, s.max_steps)
        warmup = int(s.warmup_ratio * total_steps)

        def rate(step: int) -> float:
            if step < warmup:
                return s.learning_rate * (step + 1) / warmup
            return s.learning_rate * max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,
            "position": 0,
            "best_loss": None,
            "best_step": 0,
            "bad_checks": 0,
            "train_loss": [],
            "valid_loss": [],
            "stopped": None,
            "tokens": 0,
        }
        best: dict[str, Any] | None = None
        resumed = self._resume(context, model, head, optimizer, ranks)
        if resumed is not None:
            state, best = resumed
            context.log(f"resuming from checkpoint at step {state['step']} (epoch {state['epoch']})")
            context.info["resumed_from_step"] = state["step"]
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(s.precision)
        scaler = torch.amp.GradScaler("cuda") if s.precision == "fp16" else None
        checkpointed = time.monotonic()
        started = time.perf_counter()
        tokens_before = state["tokens"]
        model.train()
        eval_every = s.eval_every
        running: list[float] = []
        order, order_epoch = np.zeros(0, dtype=np.int64), -1
        # The micro-batch's loss; with several ranks, under DDP, which averages the gradients.
        forward = ranks.parallel(
            lambda rows: objective.micro_loss(model, rows, device), [model] + ([] if head is None else [head])
        )

        def autocast() -> Any:
            return torch.autocast(
                device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
            )

        def check() -> bool:
            """Score the valid part; True when training should stop early (the same on every rank:
            the loss is the ranks' total)."""
            nonlocal best
            if not objective.n_valid:
                return False
            model.eval()
            with torch.inference_mode(), autocast():
                total, count = ranks.total(*objective.valid_sums(model, device, ranks))
            loss = total / max(count, 1)
            model.train()
            state["checked_at"] = state["step"]
            state["valid_loss"].append(loss)
            if state["best_loss"] is None or loss < state["best_loss"]:
                state["best_loss"], state["best_step"], state["bad_checks"] = loss, state["step"], 0
                best = _trainable(model, head)
            else:
                state["bad_checks"] += 1
            context.log(f"step {state['step']}: valid loss {loss:.4f} (best {state['best_loss']:.4f})")
            return s.patience is not None and state["bad_checks"] >= s.patience

        while state["stopped"] is None:
            if state["step"] >= total_steps:
                state["stopped"] = (
                    "max_steps" if s.max_steps is not None and state["step"] >= s.max_steps else "epochs"
                )
                break
            if order_epoch != state["epoch"]:  # drawn once an epoch, from the seed and the epoch alone
                order = np.random.default_rng([context.seed, state["epoch"]]).permutation(objective.n_train)
                order_epoch = state["epoch"]
            micro = state["position"]
            if micro >= micro_per_epoch:
                state["epoch"], state["position"] = state["epoch"] + 1, 0
                if eval_every is None and check():
                    state["stopped"] = "early_stopping"
                if state["epoch"] >= s.epochs and state["stopped"] is None:
                    state["stopped"] = "epochs"
                continue
            for g in optimizer.param_groups:
                g["lr"] = rate(state["step"])
            accumulated = 0
            while accumulated < s.grad_accum_steps and micro < micro_per_epoch:
                rows, weight = ranks.split(order[micro * s.batch_size : (micro + 1) * s.batch_size])
                _seed(device, ranks.seed(context.seed, state["epoch"], micro))
                last = accumulated + 1 == s.grad_accum_steps or micro + 1 == micro_per_epoch
                scale = weight / s.grad_accum_steps
                with forward.accumulating(sync=last):
                    with autocast():
                        loss, tokens = forward(rows)
                    if scale != 1.0:
                        loss = loss * scale
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                running.append(float(loss.detach()) * s.grad_accum_steps)
                state["tokens"] += tokens if weight else 0
                accumulated += 1
                micro += 1
            if scaler is not None:
                scaler.unscale_(optimizer)
            if s.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["position"] = micro
            context.progress(state["step"], total_steps, "LoRA step")
            # One collective per step: the step's loss over every rank, and whether any rank ran
            # out of time (so all of them stop together).
            loss_sum, late = ranks.total(sum(running), context.past_deadline())
            state["train_loss"].append(loss_sum / (ranks.world * len(running)))
            running.clear()
            if eval_every is not None and state["step"] % eval_every == 0 and check():
                state["stopped"] = "early_stopping"
            if _due(context, state["step"], checkpointed):
                self._save_checkpoint(context, model, head, optimizer, state, best)
                checkpointed = time.monotonic()
            context.check_deadline(f"after {state['step']} LoRA steps", passed=bool(late))
        if objective.n_valid and state.get("checked_at") != state["step"]:
            check()  # the last steps' loss too, so the best adapter is chosen among all of them
        if best is not None:
            _restore(model, head, best)
        seconds = time.perf_counter() - started
        (tokens,) = ranks.total(state["tokens"] - tokens_before)
        model.eval()
        weights = get_peft_model_state_dict(model)
        tensors = {ADAPTER_PREFIX + k: v.detach().float().cpu().numpy() for k, v in weights.items()}
        tensors.update(objective.tensors())
        meta = {
            "format": FORMAT,
            "base_model_sha256": digest,
            "base_model_uri": location,
            "tokenizer_sha256": manifest.tokenizer_digest(),
            "architecture": model_type,
            "task": context.task,
            "text_column": column,
            "max_length": objective.max_length,
            "lora": config,
            **objective.meta(),
        }
        artifact = AdapterArtifact(tensors, meta)
        trainable = sum(int(np.prod(v.shape)) for v in tensors.values())
        context.curves["train_loss"] = list(state["train_loss"])
        if state["valid_loss"]:
            context.curves["valid_loss"] = list(state["valid_loss"])
            context.info["valid_loss"] = state["best_loss"]
        context.info.update(
            base_model_sha256=digest,
            base_model_uri=location,
            tokenizer_sha256=meta["tokenizer_sha256"],
            steps_run=state["step"],
            best_step=state["best_step"] or state["step"],
            epochs_run=round(state["epoch"] + min(state["position"], micro_per_epoch) / micro_per_epoch, 3),
            stopped=state["stopped"],
            trainable_parameters=trainable,
            tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
            workers=ranks.world,
            device=device.type,
        )
        if ranks.world > 1:
            context.info["distributed_backend"] = ranks.backend
        context.log(
            f"LoRA: {state['step']} steps ({state['stopped']}), keeping step {context.info['best_step']}, "
            f"{trainable} trainable parameters"
        )
        return _Fitted(artifact, model, tokenizer, digest)

    def _resume(
        self, context: TrainContext, model: Any, head: Any, optimizer: Any, ranks: Ranks
    ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The loop's state and best weights from the checkpoint, if there is one to resume
        (None: start afresh). Rank 0 reads it and the other ranks take its state, best weights
        and optimizer moments; its current weights reach them when DDP starts."""
        resumed = self._load_checkpoint(context, model, head, optimizer)
        if ranks.world == 1:
            return resumed
        shared = ranks.from_lead(None if resumed is None else (*resumed, optimizer.state_dict()))
        if shared is None:
            return None
        state, best, moments = shared
        if not ranks.lead:
            optimizer.load_state_dict(moments)
        return state, best

    @staticmethod
    def _warm_start(
        context: TrainContext, model: Any, objective: _Objective, digest: str, config: dict[str, Any]
    ) -> None:
        from peft import set_peft_model_state_dict

        parent = context.parent
        if not (context.parent is not None and isinstance(parent, AdapterArtifact)):
            return
        meta = parent.meta
        if meta.get("base_model_sha256") != digest:
            context.log("warm start skipped: the parent adapter was trained on another base model")
            return
        if {k: v for k, v in meta.get("lora", {}).items()} != config:
            context.log("warm start skipped: the parent adapter has other LoRA settings")
            return
        if meta.get("kind", SEQUENCE_CLASSIFICATION) != objective.kind:
            context.log(f"warm start skipped: the parent adapter is a {meta.get('kind')} adapter")
            return
        weights = {
            k[len(ADAPTER_PREFIX) :]: _tensor(v)
            for k, v in parent.tensors.items()
            if k.startswith(ADAPTER_PREFIX)
        }
        set_peft_model_state_dict(model, weights)
        objective.warm_start(parent, context)

    @staticmethod
    def _save_checkpoint(
        context: TrainContext,
        model: Any,
        head: Any,
        optimizer: Any,
        state: dict[str, Any],
        best: dict[str, Any] | None,
    ) -> None:
        from safetensors.torch import save

        folder = context.checkpoint_dir
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"now.{k}": v for k, v in _trainable(model, head).items()}
        if best is not None:
            tensors.update({f"best.{k}": v for k, v in best.items()})
        saved = optimizer.state_dict()
        for index, moments in saved["state"].items():
            for name, value in moments.items():
                tensors[f"opt.{index}.{name}"] = value.detach().cpu().contiguous()
        groups = [{k: v for k, v in g.items()} for g in saved["param_groups"]]
        # Tensors first, state second: a state file always describes complete tensors.
        write_atomic(folder / CHECKPOINT_TENSORS, save(tensors), durable=False)
        body = dict(
            state, fingerprint=context.job_fingerprint(), param_groups=groups, has_best=best is not None
        )
        write_atomic(folder / CHECKPOINT_STATE, json.dumps(body).encode(), durable=False)

    @staticmethod
    def _load_checkpoint(
        context: TrainContext, model: Any, head: Any, optimizer: Any
    ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        from safetensors.torch import load

        folder = context.checkpoint_dir
        if folder is None or not (folder / CHECKPOINT_STATE).is_file():
            return None
        try:
            body = json.loads((folder / CHECKPOINT_STATE).read_text())
            if body.get("fingerprint") != context.job_fingerprint():
                context.log("checkpoint belongs to other data or settings; starting afresh")
                return None
            tensors = load((folder / CHECKPOINT_TENSORS).read_bytes())
        except (OSError, ValueError) as exc:
            context.log(f"checkpoint unreadable ({type(exc).__name__}); starting afresh")
            return None
        _restore(model, head, {k[4:]: v for k, v in tensors.items() if k.startswith("now.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} if body["has_best"] else None
        moments: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, index, name = key.split(".", 2)
                moments.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": moments, "param_groups": body["param_groups"]})
        state = {k: v for k, v in body.items() if k not in ("fingerprint", "param_groups", "has_best")}
        return state, best


@dataclass(frozen=True)
class _RankJob:
    """One rank's part of a distributed fine-tuning, sent to every Ray Train worker: the
    trainer, the data, and the caller's context in values that travel (no callables but a
    progress file's writer, the time left rather than a clock reading)."""

    trainer: LoraTrainer
    train: pd.DataFrame
    valid: pd.DataFrame
    context: TrainContext
    seconds_left: float | None

    @classmethod
    def of(
        cls, trainer: LoraTrainer, train: pd.DataFrame, valid: pd.DataFrame, context: TrainContext
    ) -> _RankJob:
        progress = context.on_progress if isinstance(context.on_progress, ProgressWriter) else None
        portable = dataclasses.replace(
            context,
            log=_quiet,
            on_progress=progress,
            tree_scorer=None,
            deadline=None,
            fingerprint=context.job_fingerprint() if context.checkpoint_dir is not None else "",
            curves={},
            info={},
        )
        left = None if context.deadline is None else context.deadline - time.monotonic()
        return cls(trainer, train, valid, portable, left)

    def __call__(self, ranks: Ranks) -> dict[str, Any] | None:
        """Train as rank ``ranks.rank``; rank 0 returns the adapter, its curves, info and log."""
        lines: list[str] = []
        folder = self.context.checkpoint_dir
        # Rank 0 checkpoints where the caller would, when this node can reach that folder (a
        # local Ray, a shared disk); elsewhere the job cannot resume, as with the ray executor.
        reachable = folder is not None and folder.parent.is_dir()
        context = dataclasses.replace(
            self.context,
            log=(lambda line: lines.append(f"rank 0 of {ranks.world}: {line}")) if ranks.lead else _quiet,
            on_progress=self.context.on_progress if ranks.lead else None,
            checkpoint_dir=folder if ranks.lead and reachable else None,
            deadline=None if self.seconds_left is None else time.monotonic() + self.seconds_left,
        )
        fitted = self.trainer._train(self.train, self.valid, context, ranks)
        if isinstance(context.on_progress, ProgressWriter):
            context.on_progress.close()
        if not ranks.lead:
            return None
        return {"artifact": fitted.artifact, "curves": context.curves, "info": context.info, "log": lines}


def _quiet(line: str) -> None:
    """The log of a rank other than 0 (rank 0 speaks for all)."""


def _to(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) for k, v in batch.items()}


def _tensor(value: Any) -> Any:
    import torch

    return torch.from_numpy(np.array(value))


def _trainable(model: Any, head: Any) -> dict[str, Any]:
    """A copy of what training changes: the LoRA weights and the head (a classifier's)."""
    out = {f"model.{n}": p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    if head is not None:
        out.update({f"head.{n}": p.detach().cpu().clone() for n, p in head.named_parameters()})
    return out


def _restore(model: Any, head: Any, weights: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    heads = {} if head is None else dict(head.named_parameters())
    with torch.no_grad():
        for key, value in weights.items():
            kind, _, name = key.partition(".")
            target = params[name] if kind == "model" else heads[name]
            target.copy_(value.to(target.device))


def _seed(device: Any, seed: int) -> None:
    """Seed the random numbers of ``device`` alone (a micro-batch's dropout).

    ``torch.manual_seed`` also seeds every other kind of device torch knows, queueing a
    call with a formatted stack for each one not yet started: on every micro-batch that is
    work with no effect, since the training draws on its own device only.
    """
    import torch

    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def _due(context: TrainContext, step: int, last: float) -> bool:
    if context.checkpoint_dir is None:
        return False
    if context.checkpoint_every and step % context.checkpoint_every == 0:
        return True
    seconds = context.checkpoint_seconds
    return seconds is not None and seconds > 0 and time.monotonic() - last >= seconds
