"""Prompt/response pairs: the records read from JSONL, the errors each reader names, and the
answers written back a line per pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quark.core.errors import ConfigError, QuarkError
from quark.data.pairs import Pair, read_pairs, write_answers

SFT = dict(key="step.data_dir", allowed="give a data run", purpose="supervised fine-tuning")


def test_records_are_read_in_order_up_to_count_other_fields_ignored(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    records = [{"prompt": f"q{i}", "response": f"a{i}", "id": i} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert read_pairs(path, **SFT) == [Pair("q0", "a0"), Pair("q1", "a1"), Pair("q2", "a2")]
    assert read_pairs(path, **SFT, count=2) == [Pair("q0", "a0"), Pair("q1", "a1")]


def test_records_without_prompt_and_response_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    with pytest.raises(QuarkError) as error:
        read_pairs(path, **SFT)
    assert str(error.value) == (
        f"{path}: line 1 has no string 'prompt' and 'response' fields (it has: prompt, chosen, "
        "rejected); supervised fine-tuning needs prompt/response records"
    )
    path.write_text("")
    with pytest.raises(QuarkError) as error:
        read_pairs(path, key="k", allowed="a", purpose="task accuracy")
    assert str(error.value) == f"{path}: no records; task accuracy needs prompt/response records"


def test_a_missing_file_names_the_key_and_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        read_pairs(tmp_path / "val.jsonl", **SFT)
    assert str(error.value) == f"step.data_dir: {tmp_path} has no val.jsonl; give a data run"


def test_answers_carry_prompt_reference_then_the_named_columns_in_order(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    pairs = [Pair("What is 1 + 1?", "2"), Pair("What is 2 + 2?", "4")]
    write_answers(path, pairs, before=[None, None], after=["2", "5"])
    lines = path.read_text().splitlines()
    assert lines[1] == json.dumps(
        {"prompt": "What is 2 + 2?", "reference": "4", "before": None, "after": "5"}
    )
    write_answers(path, pairs, answer=["2", "5"], correct=[True, False])
    assert [list(json.loads(line)) for line in path.read_text().splitlines()] == [
        ["prompt", "reference", "answer", "correct"]
    ] * 2
