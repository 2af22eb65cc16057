"""Prompt-only records, what online RL (step=align align=grpo) samples answers for: a `prompt`
(a string, or chat messages ending with the user's, as in preference files) and whatever
fields the reward function reads, e.g. `answer` for the arithmetic verifier. The generated
task sets (data=arithmetic_sft, arithmetic_prefs) are such files.

    {"prompt": "What is 12 + 7?", "answer": 19}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError, QuarkError
from quark.data.preferences import conversation_of
from quark.data.records import holds_records, json_objects

FORMAT = "each line a JSON object with a prompt (a string or chat messages) and the fields the reward reads"


@dataclass(frozen=True)
class PromptRecord:
    """One prompt: the conversation that asks it, and the record's other fields."""

    conversation: tuple[dict[str, str], ...]
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str | None:
        """The known right answer, when the record has one (`response`, else `answer`)."""
        for name in ("response", "answer"):
            if self.fields.get(name) is not None:
                return str(self.fields[name])
        return None


def read_prompts(
    path: Path,
    *,
    key: str,
    allowed: str,
    needs: tuple[str, ...] = (),
    system_prompt: str | None = None,
) -> list[PromptRecord]:
    """The records of a JSONL file; each must hold `prompt` and every field in `needs`.

    Raises:
        ConfigError: no such file, on `key`, with `allowed` as the remedy.
        QuarkError: a line that is not a JSON object, a missing field or a malformed prompt,
            or no records; the message names file and line.
    """
    if not path.is_file():
        raise ConfigError(key, f"{path.parent} has no {path.name}", allowed)
    found: list[PromptRecord] = []
    for where, record in json_objects(path, FORMAT):
        absent = [name for name in ("prompt", *needs) if name not in record]
        if absent:
            raise QuarkError(
                f"{where} has no {', '.join(absent)} field (it has: {', '.join(record)}); " + FORMAT
            )
        conversation = conversation_of(record["prompt"], system_prompt, where)
        others = {k: v for k, v in record.items() if k != "prompt"}
        found.append(PromptRecord(conversation, others))
    if not found:
        raise QuarkError(f"{path}: no records; {FORMAT}")
    return found


def holds_prompts(directory: Path) -> bool:
    """Whether train.jsonl and val.jsonl are there and the first record has a prompt."""
    return holds_records(directory, ("prompt",))
