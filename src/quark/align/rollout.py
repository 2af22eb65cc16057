"""Completions sampled from the policy with transformers' generate (over its key/value cache),
and their per-token log-probs: the rollouts of online RL (align=grpo)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from quark.eval.exact_match import until_stop


@dataclass(frozen=True)
class Completions:
    """Prompts (left-padded) followed by their completions (right-padded), one row each.
    `completion_mask` is 1 on every completion token up to and including the stop token;
    `texts` are the completions decoded without it; `finished` says which stopped."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    finished: list[bool]

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def sample_completions(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    sample: bool,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    synced: bool = False,
) -> Completions:
    """One completion per prompt: sampled (`sample`, at `temperature` and `top_p`, from a
    generator seeded with `seed`, so that a resumed run samples what the interrupted one
    would have) or greedy. `synced`: every rank keeps stepping until all have finished (the
    ranks of a sharded model must run the same forward passes)."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids) :] = torch.tensor(list(ids))
        attention[row, width - len(ids) :] = 1
    options: dict[str, Any] = {"do_sample": sample}
    if sample:
        options |= {"temperature": temperature, "top_p": top_p, "top_k": 0}
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        generated = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=max_new_tokens,
            eos_token_id=list(stop_ids),
            pad_token_id=pad_id,
            synced_gpus=synced,
            **options,
        )
    model.train(was_training)
    completion = generated[:, width:].cpu()
    if completion.size(1) == 0:  # nothing generated (max_new_tokens reached at once)
        completion = torch.full((len(prompt_ids), 1), pad_id, dtype=torch.long)
    mask = torch.zeros_like(completion)
    texts, finished = [], []
    for row, tokens in enumerate(completion.tolist()):
        answer, stopped = until_stop(tokens, stop_ids)
        mask[row, : len(answer) + (1 if stopped else 0)] = 1
        texts.append(tokenizer.decode(answer, skip_special_tokens=True))
        finished.append(stopped)
    completion = completion.masked_fill(mask == 0, pad_id)
    return Completions(
        torch.cat([input_ids, completion], dim=1),
        torch.cat([attention, mask], dim=1),
        mask,
        texts,
        finished,
    )


def completion_logps(
    model: Any, completions: Completions, temperature: float = 1.0
) -> torch.Tensor:
    """Per-token log-probs of each completion token under `model` (completions, tokens), from
    logits divided by `temperature` as they were sampled; 0 where the mask is."""
    device = next(model.parameters()).device
    ids = completions.input_ids.to(device)
    attention = completions.attention_mask.to(device)
    mask = completions.completion_mask.to(device)
    length = mask.size(1)
    # positions count real tokens only: a left-padded prompt starts at position 0
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=length + 1
    ).logits[:, :-1]
    logps = torch.gather(
        (logits.float() / temperature).log_softmax(-1), 2, ids[:, -length:].unsqueeze(-1)
    ).squeeze(-1)
    return logps * mask
