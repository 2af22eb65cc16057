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
    suffix = f"; {expected}" if expected else ""
    with open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                record = json.loads(line)
            except ValueError:
                raise QuarkError(f"{where} is not JSON{suffix}") from None
            if not isinstance(record, dict):
                raise QuarkError(f"{where} is a {type(record).__name__}, not an object{suffix}")
            yield where, record


def holds_records(directory: Path, fields: Collection[str]) -> bool:
    """Whether `directory` holds train.jsonl and val.jsonl and the first training record has
    every one of `fields` (how a step tells a data run of its records from others). Splits
    that are there but unreadable count: `check_records` then says what is wrong with them."""
    if not (directory / "train.jsonl").is_file() or not (directory / "val.jsonl").is_file():
        return False
    try:
        with open(directory / "train.jsonl") as lines:
            first = lines.readline()
        record = json.loads(first)
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return True
    return isinstance(record, dict) and set(fields) <= set(record)


def check_records(directory: Path, splits: Collection[str], key: str, allowed: str) -> None:
    """Each split (a file name) of `directory` is there and holds JSON-lines records, every
    line read: a file cut short or of another kind is refused before a step starts.

    Raises:
        ConfigError: on `key`, naming the file (and line) and what is wrong, with `allowed`.
    """
    from quark.core.errors import ConfigError

    for split in splits:
        path = directory / split
        if not path.is_file():
            problem = "is not a file" if path.exists() else "is missing"
            raise ConfigError(key, f"{path} {problem}", allowed)
        try:
            count = sum(1 for _ in json_objects(path, ""))
        except QuarkError as exc:  # a line that is not a JSON object
            raise ConfigError(key, str(exc), allowed) from None
        except UnicodeDecodeError:
            raise ConfigError(key, f"{path} is not text (undecodable bytes)", allowed) from None
        except OSError as exc:
            raise ConfigError(
                key, f"{path} is unreadable ({exc.strerror or exc})", allowed
            ) from None
        if count == 0:
            raise ConfigError(key, f"{path} holds no records", allowed)
