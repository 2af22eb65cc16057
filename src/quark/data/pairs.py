"""Prompt/response pairs: the record fine-tuning trains on and evaluation asks, read from
JSONL, put to a model through its chat template, and written back with what the model answered.

Fine-tuning (quark.training.sft, step=finetune) and task accuracy (step=evaluate) read the same
files the same way; each passes its own config key and wording, so its errors name what the
user set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError, QuarkError
from quark.data.records import json_objects


@dataclass(frozen=True)
class Pair:
    prompt: str
    response: str
    # this record's own system message (a retrieved context, say); None: the step's
    # system_prompt, if any
    system: str | None = None


def read_pairs(
    path: Path, *, key: str, allowed: str, purpose: str, count: int | None = None
) -> list[Pair]:
    """The {prompt, response} records of a JSONL file (with an optional `system` message of
    their own), the first `count` of them when given (other fields are ignored).

    Raises:
        ConfigError: no such file, on `key`, with `allowed` as the remedy.
        QuarkError: a line that is not JSON, a record without string prompt and response
            fields, or no records; the message says what `purpose` (e.g. "supervised
            fine-tuning") needs.
    """
    if not path.is_file():
        raise ConfigError(key, f"{path.parent} has no {path.name}", allowed)
    pairs: list[Pair] = []
    expected = f"{purpose} needs prompt/response records"
    for where, record in json_objects(path, expected):
        if len(pairs) == count:
            break
        if not (isinstance(record.get("prompt"), str) and isinstance(record.get("response"), str)):
            raise QuarkError(
                f"{where} has no string 'prompt' and 'response' fields "
                f"(it has: {', '.join(record)}); {expected}"
            )
        system = record.get("system")
        if system is not None and not isinstance(system, str):
            raise QuarkError(f"{where}: 'system' must be a string when given; {expected}")
        pairs.append(Pair(record["prompt"], record["response"], system))
    if not pairs:
        raise QuarkError(f"{path}: no records; {purpose} needs prompt/response records")
    return pairs


def messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    """The conversation that asks `prompt`, after `system_prompt` when there is one."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": prompt}]


def render_prompts(tokenizer: Any, pairs: Sequence[Pair], system_prompt: str | None) -> list[str]:
    """Each pair's conversation in the tokenizer's chat template, up to where the assistant's
    answer starts, as text."""
    return [
        tokenizer.apply_chat_template(
            messages(p.prompt, p.system or system_prompt),
            add_generation_prompt=True,
            tokenize=False,
        )
        for p in pairs
    ]


def write_answers(path: Path, pairs: Sequence[Pair], **columns: Sequence[Any]) -> None:
    """A JSON line per pair: its prompt, its response as `reference`, then one field per
    keyword in the order given (e.g. answer=..., correct=...), each holding one value per pair."""
    with open(path, "w") as out:
        for pair, *values in zip(pairs, *columns.values(), strict=True):
            record: dict[str, Any] = {"prompt": pair.prompt, "reference": pair.response}
            record |= dict(zip(columns, values, strict=True))
            out.write(json.dumps(record) + "\n")
