"""Preference pairs: a prompt, the answer preferred (chosen) and the one not (rejected), the
records the reward model and DPO train on.

The files follow the convention TRL and the Hugging Face hub use: JSON lines with `prompt`,
`chosen` and `rejected`, each a plain string, or a list of chat messages ({role, content}):
the prompt's messages are the conversation so far, and chosen and rejected each hold the one
assistant message that answers it. Other fields (`answer`, `id`) are ignored.

    {"prompt": "What is 3 + 4?", "chosen": "7", "rejected": "8"}
    {"prompt": [{"role": "user", "content": "What is 3 + 4?"}],
     "chosen": [{"role": "assistant", "content": "7"}],
     "rejected": [{"role": "assistant", "content": "8"}]}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError, QuarkError
from quark.data.pairs import messages
from quark.data.records import holds_records, json_objects

ROLES = ("system", "user", "assistant")
FORMAT = (
    "each line a JSON object with prompt, chosen and rejected: strings, or lists of "
    "{role, content} messages (chosen and rejected: one assistant message each)"
)


@dataclass(frozen=True)
class Preference:
    """One preference: the conversation that asks (its messages, the last one the user's) and
    the two answers' texts."""

    conversation: tuple[dict[str, str], ...]
    chosen: str
    rejected: str


def read_preferences(
    path: Path,
    *,
    key: str,
    allowed: str,
    system_prompt: str | None = None,
    count: int | None = None,
) -> list[Preference]:
    """The preferences in a JSONL file, the first `count` of them when given. A plain-string
    prompt is asked after `system_prompt` when there is one.

    Raises:
        ConfigError: no such file, on `key`, with `allowed` as the remedy.
        QuarkError: a line that is not JSON, a record missing a field or holding the wrong
            type, chosen equal to rejected, or no records; the message names file and line.
    """
    if not path.is_file():
        raise ConfigError(key, f"{path.parent} has no {path.name}", allowed)
    found: list[Preference] = []
    for where, record in json_objects(path, FORMAT):
        if len(found) == count:
            break
        absent = [name for name in ("prompt", "chosen", "rejected") if name not in record]
        if absent:
            raise QuarkError(
                f"{where} has no {', '.join(absent)} field (it has: {', '.join(record)}); " + FORMAT
            )
        conversation = conversation_of(record["prompt"], system_prompt, where)
        chosen = _answer(record["chosen"], "chosen", where)
        rejected = _answer(record["rejected"], "rejected", where)
        if chosen == rejected:
            raise QuarkError(
                f"{where}: chosen and rejected are the same answer ({chosen!r}); a "
                "preference needs two different answers"
            )
        found.append(Preference(conversation, chosen, rejected))
    if not found:
        raise QuarkError(f"{path}: no records; {FORMAT}")
    return found


def holds_preferences(directory: Path) -> bool:
    """Whether train.jsonl and val.jsonl are there and the first record has prompt, chosen and
    rejected (a data run of data=arithmetic_prefs, or a user's directory)."""
    return holds_records(directory, ("prompt", "chosen", "rejected"))


def conversation_of(
    prompt: Any, system_prompt: str | None, where: str
) -> tuple[dict[str, str], ...]:
    """The messages a record's prompt asks: a string after `system_prompt` when there is one,
    or a list of messages ending with the user's.

    Raises:
        QuarkError: anything else; the message starts with `where` (file and line).
    """
    if isinstance(prompt, str):
        return tuple(messages(prompt, system_prompt))
    listed = _messages(prompt, "prompt", where)
    if not listed or listed[-1]["role"] != "user":
        raise QuarkError(f"{where}: prompt's messages must end with a user message; {FORMAT}")
    return tuple(listed)


def _answer(value: Any, name: str, where: str) -> str:
    if isinstance(value, str):
        text = value
    else:
        listed = _messages(value, name, where)
        if len(listed) != 1 or listed[0]["role"] != "assistant":
            raise QuarkError(
                f"{where}: {name} holds {len(listed)} message(s) with roles "
                f"{[m['role'] for m in listed]}; one assistant message is allowed"
            )
        text = listed[0]["content"]
    if not text.strip():
        raise QuarkError(f"{where}: {name} is empty; {FORMAT}")
    return text


def _messages(value: Any, name: str, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        for m in value
    ):
        raise QuarkError(
            f"{where}: {name} is neither a string nor a list of messages with role "
            f"({', '.join(ROLES)}) and string content; {FORMAT}"
        )
    return [{"role": m["role"], "content": m["content"]} for m in value]
