"""A tiny base language model built offline: a tokenizer trained on given text and a
2-layer GPT-2, pre-trained briefly on the same text so LoRA has something to adapt.

Tests, the LLM demo and the ``support-tickets`` example fine-tune this instead of a
downloaded model: it builds in seconds on one CPU core and nothing reaches a network.
"""

from __future__ import annotations

import json
from pathlib import Path

from evertrain.store.bases import offline

SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")


def build_tiny_base(
    folder: Path | str,
    texts: list[str],
    *,
    vocab_size: int = 600,
    width: int = 64,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 64,
    pretrain_steps: int = 60,
    seed: int = 0,
) -> Path:
    """Write a tiny GPT-2 base (safetensors weights and a fast tokenizer) into ``folder``."""
    offline()
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not texts:
        raise ValueError("a tiny base needs some text to train its tokenizer on")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>", bos_token="<eos>"
    )
    tokenizer.model_max_length = max_length
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=max_length,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    if pretrain_steps:
        _pretrain(model, tokenizer, texts, pretrain_steps, max_length, seed)
    model.eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    (folder / "README.md").write_text(
        json.dumps({"built_by": "evertrain.train.tiny_base", "seed": seed, "texts": len(texts)}) + "\n"
    )
    return folder


def _pretrain(
    model: object, tokenizer: object, texts: list[str], steps: int, max_length: int, seed: int
) -> None:
    """A few steps of next-token prediction on ``texts`` (batches of 16 lines), each line ended by
    the end-of-text token as documents are in pre-training, so the base knows where text ends."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)  # type: ignore[attr-defined]
    model.train()  # type: ignore[attr-defined]
    for _ in range(steps):
        pick = torch.randint(len(texts), (16,), generator=generator).tolist()
        batch = tokenizer(  # type: ignore[operator]
            [texts[i] + tokenizer.eos_token for i in pick],  # type: ignore[attr-defined]
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss  # type: ignore[operator]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
