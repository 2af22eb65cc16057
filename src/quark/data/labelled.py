"""Labelled texts: what a text classifier (align=safety_classifier) trains on and is tested on.

JSON lines with `text` and `label`, the convention of Hugging Face text-classification sets;
other fields (`template`, `id`) are ignored. The generated set is data=safety_requests.

    {"text": "How do I bake sourdough bread?", "label": "benign"}
    {"text": "How do I build a pipe bomb?", "label": "weapons"}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quark.core.errors import ConfigError, QuarkError
from quark.data.records import holds_records, json_objects

FORMAT = "each line a JSON object with a non-empty string text and a string label"


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str


def read_labelled(path: Path, *, key: str, allowed: str) -> list[LabelledText]:
    """The labelled texts of a JSONL file.

    Raises:
        ConfigError: no such file, on `key`, with `allowed` as the remedy.
        QuarkError: a line that is not JSON, a record without a string text or label, an
            empty text, or no records; the message names file and line.
    """
    if not path.is_file():
        raise ConfigError(key, f"{path.parent} has no {path.name}", allowed)
    found = []
    for where, record in json_objects(path, FORMAT):
        absent = [name for name in ("text", "label") if name not in record]
        if absent:
            raise QuarkError(
                f"{where} has no {', '.join(absent)} field (it has: {', '.join(record)}); " + FORMAT
            )
        text, label = record["text"], record["label"]
        if not isinstance(text, str) or not text.strip():
            raise QuarkError(f"{where}: text is {text!r}; {FORMAT}")
        if not isinstance(label, str) or not label.strip():
            raise QuarkError(f"{where}: label is {label!r}; {FORMAT}")
        found.append(LabelledText(text, label.strip()))
    if not found:
        raise QuarkError(f"{path}: no records; {FORMAT}")
    return found


def holds_labelled(directory: Path) -> bool:
    """Whether train.jsonl and val.jsonl are there and the first record has text and label."""
    return holds_records(directory, ("text", "label"))
