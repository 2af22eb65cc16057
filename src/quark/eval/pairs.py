"""The questions task accuracy is measured on: {prompt, response} records of a JSONL split (a
data run of data=arithmetic_sft holds train, val and test) and where to find them. Reading,
rendering and writing answers is quark.data.pairs's, with KEY and ALLOWED for errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quark.data.pairs import Pair
from quark.lineage.finding import find_run, holds_split

KEY = "step.exact_match.data_dir"
ALLOWED = (
    "give a data run of data=arithmetic_sft (python launch.py step=data data=arithmetic_sft), "
    "or a directory holding <split>.jsonl of prompt/response records"
)


def questions_dir(cfg: Any, source: Path) -> Path | None:
    """step.exact_match.data_dir; else the data run a pipeline handed over, if it holds the
    split; else the data run the model `source` was fine-tuned on; else the newest completed
    data run of the experiment that holds the split; else None (quark.lineage)."""
    split = str(cfg.step.exact_match.split)
    return find_run(
        cfg,
        ("data",),
        key=KEY,
        holds=lambda path: holds_pair_split(path, split),
        ancestor_of=source,
        allowed=ALLOWED,
    )


def holds_pair_split(directory: Path, split: str) -> bool:
    """Whether <split>.jsonl is there and its first record is a prompt/response pair (a data
    run of preference pairs, handed over by a pipeline, also holds test.jsonl)."""
    import json

    if not holds_split(directory, split):
        return False
    try:
        with open(directory / f"{split}.jsonl") as lines:
            first = lines.readline()
        record = json.loads(first)
    except (OSError, ValueError):
        return True  # the step's check of the split names the file and what is wrong
    return isinstance(record, dict) and "prompt" in record and "response" in record


def generated_pairs(count: int, seed: int) -> list[Pair]:
    """Arithmetic questions from quark.data.tasks (its default spec), when no data run holds
    a split: what the shipped lm-eval task runs on then."""
    from quark.data.tasks import ArithmeticSpec, expressions, sft_records

    records = sft_records(expressions(ArithmeticSpec(seed=seed), count))
    return [Pair(r["prompt"], r["response"]) for r in records]
