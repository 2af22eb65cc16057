"""Task accuracy: the share of prompts whose greedy answer equals the reference exactly.

Prompts go in as text already rendered for the model (a chat template applied with its
generation prompt), so the same check serves finetune, evaluate and improve whatever format
their models were trained on. Batches are left-padded: every prompt ends where generation
starts, and the attention mask keeps the padding out of the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExactMatch:
    """Accuracy over the prompts, and what the model answered to each."""

    accuracy: float
    answers: list[str]
    correct: list[bool]


def greedy_exact_match(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    references: Sequence[str],
    *,
    stop_token_ids: Sequence[int],
    max_new_tokens: int = 16,
    batch_size: int = 64,
) -> ExactMatch:
    """Generate greedily for every prompt until a stop token, and compare the answer with its
    reference after stripping surrounding whitespace. An answer that reaches `max_new_tokens`
    without a stop token is unfinished, and wrong.

    `model` is any causal LM with `generate` (a PEFT model too); `tokenizer` encodes the prompts
    without adding special tokens (the rendered prompt already holds those it needs).
    """
    import torch

    if len(prompts) != len(references):
        raise ValueError(f"{len(prompts)} prompts but {len(references)} references")
    stops = list(stop_token_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[str] = []
    finished: list[bool] = []
    try:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            with torch.no_grad():
                generated = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=pad_id,
                )
            for row in generated[:, width:].tolist():
                answer, stopped = until_stop(row, stops)
                answers.append(tokenizer.decode(answer, skip_special_tokens=True))
                finished.append(stopped)
    finally:
        model.train(was_training)
    correct = [
        stopped and answer.strip() == reference.strip()
        for answer, stopped, reference in zip(answers, finished, references, strict=True)
    ]
    return ExactMatch(sum(correct) / max(1, len(correct)), answers, correct)


def until_stop(token_ids: list[int], stops: Sequence[int]) -> tuple[list[int], bool]:
    """The tokens before the first stop token (generation pads finished rows after it), and
    whether there was one."""
    for index, token in enumerate(token_ids):
        if token in stops:
            return token_ids[:index], True
    return token_ids, False


def decoder_exact_match(
    decoder: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    references: Sequence[str],
    *,
    stop_token_ids: Sequence[int],
    max_new_tokens: int = 16,
) -> ExactMatch:
    """`greedy_exact_match` for a model behind any runtime (a quark.export.decoding.Decoder:
    ONNX Runtime, llama.cpp, torch): one prompt at a time, `max_new_tokens` greedy tokens each
    over the runtime's key/value cache, the answer cut at the first stop token."""
    if len(prompts) != len(references):
        raise ValueError(f"{len(prompts)} prompts but {len(references)} references")
    stops = list(stop_token_ids)
    answers: list[str] = []
    finished: list[bool] = []
    for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]:
        answer, stopped = until_stop(decoder.generate(list(ids), max_new_tokens), stops)
        answers.append(tokenizer.decode(answer, skip_special_tokens=True))
        finished.append(stopped)
    correct = [
        stopped and answer.strip() == reference.strip()
        for answer, stopped, reference in zip(answers, finished, references, strict=True)
    ]
    return ExactMatch(sum(correct) / max(1, len(correct)), answers, correct)
