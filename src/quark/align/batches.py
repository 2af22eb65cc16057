"""Preference pairs as training batches: each pair's chosen and rejected conversations as token
ids, with labels on the answer only (as fine-tuning encodes them, quark.training.sft), batched
chosen rows first, then rejected rows: rows i and B + i of a batch of B pairs are one pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from quark.data.preferences import Preference
from quark.training.sft import Example, check_lengths, collate, encode_answers


@dataclass(frozen=True)
class PreferenceExample:
    """One pair, encoded; `reference_logps` holds the reference model's log-probs of the chosen
    and the rejected answer when they were computed before training (DPO's
    step.precompute_reference)."""

    chosen: Example
    rejected: Example
    reference_logps: tuple[float, float] | None = None


def encode_preferences(
    tokenizer: Any, preferences: Sequence[Preference]
) -> list[PreferenceExample]:
    conversations = [p.conversation for p in preferences]
    chosen = encode_answers(tokenizer, conversations, [p.chosen for p in preferences])
    rejected = encode_answers(tokenizer, conversations, [p.rejected for p in preferences])
    return [PreferenceExample(c, r) for c, r in zip(chosen, rejected, strict=True)]


def check_preference_lengths(
    examples: Sequence[PreferenceExample], seq_len: int, split: str
) -> None:
    """Neither answer of any pair is cut: a longer one is an error naming the pair."""
    check_lengths([e.chosen for e in examples], seq_len, split)
    check_lengths([e.rejected for e in examples], seq_len, split)


def collate_preferences(
    pad_id: int,
) -> Callable[[list[PreferenceExample]], dict[str, torch.Tensor]]:
    """Right-padded rows, the chosen answers of the batch then the rejected ones, with labels
    IGNORE outside the answers; plus `reference_logps` (chosen then rejected) when every pair
    carries them."""
    pad = collate(pad_id)

    def batch(pairs: list[PreferenceExample]) -> dict[str, torch.Tensor]:
        rows = pad([p.chosen for p in pairs] + [p.rejected for p in pairs])
        if all(p.reference_logps is not None for p in pairs):
            chosen = [p.reference_logps[0] for p in pairs]  # type: ignore[index]
            rejected = [p.reference_logps[1] for p in pairs]  # type: ignore[index]
            rows["reference_logps"] = torch.tensor(chosen + rejected, dtype=torch.float32)
        return rows

    return batch


def with_reference_logps(
    examples: Sequence[PreferenceExample],
    reference: Any,
    pad_id: int,
    batch_size: int,
    device: str,
) -> list[PreferenceExample]:
    """`examples`, each carrying the `reference` model's log-probs of its two answers, so that
    training needs no reference model in memory (computed once, in fp32, without gradients)."""
    from quark.align.losses import sequence_logps

    pad = collate_preferences(pad_id)
    reference = reference.to(device).eval()
    found: list[PreferenceExample] = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            pairs = list(examples[start : start + batch_size])
            rows = {k: v.to(device) for k, v in pad(pairs).items()}
            logits = reference(
                input_ids=rows["input_ids"][:, :-1], attention_mask=rows["attention_mask"][:, :-1]
            ).logits
            logps, _ = sequence_logps(logits, rows["labels"][:, 1:])
            chosen, rejected = logps.cpu().chunk(2)
            found += [
                replace(p, reference_logps=(float(c), float(r)))
                for p, c, r in zip(pairs, chosen, rejected, strict=True)
            ]
    reference.to("cpu")
    return found
