"""JSON-lines record files, read one way for every kind of record (prompt/response pairs,
preferences, prompts): each non-blank line one JSON object, errors naming file and line."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from quark.core.errors import QuarkError


def json_objects(path: Path, expected: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """("<path>: line <n>", record) for each non-blank line of `path`.

    Raises:
        QuarkError: a line that is not a JSON object; the message ends with `expected`, what
            each line should be.
    """
    with open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                record = json.loads(line)
            except ValueError:
                raise QuarkError(f"{where} is not JSON; {expected}") from None
            if not isinstance(record, dict):
                raise QuarkError(f"{where} is a {type(record).__name__}, not an object; {expected}")
            yield where, record


def holds_records(directory: Path, fields: Collection[str]) -> bool:
    """Whether `directory` holds train.jsonl and val.jsonl and the first training record has
    every one of `fields` (how a step tells a data run of its records from others)."""
    if not (directory / "train.jsonl").is_file() or not (directory / "val.jsonl").is_file():
        return False
    with open(directory / "train.jsonl") as lines:
        first = lines.readline()
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and set(fields) <= set(record)
