"""quark.eval.pairs: which directory holds the questions of task accuracy. A data run of
preference pairs also holds test.jsonl; a pipeline that hands one over (pipeline=lifecycle:
arithmetic pairs, finetune, preference pairs, align, ..., evaluate) must not have it read as
prompt/response questions."""

from __future__ import annotations

import json
from pathlib import Path

from quark.eval.pairs import holds_pair_split


def test_a_split_of_preference_pairs_holds_no_questions(tmp_path: Path) -> None:
    pairs, prefs, empty = tmp_path / "pairs", tmp_path / "prefs", tmp_path / "empty"
    for directory in (pairs, prefs, empty):
        directory.mkdir()
    (pairs / "test.jsonl").write_text(json.dumps({"prompt": "What is 1 + 2?", "response": "3"}))
    (prefs / "test.jsonl").write_text(
        json.dumps({"prompt": "What is 1 + 2?", "chosen": "3", "rejected": "4"})
    )
    assert holds_pair_split(pairs, "test")
    assert not holds_pair_split(prefs, "test")
    assert not holds_pair_split(empty, "test")
    assert not holds_pair_split(pairs, "val")
