"""quark.improve: the kind of a question, the failures read from an evaluate run, the data
generated for them, and the next goal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quark.core.errors import QuarkError
from quark.data.tasks import evaluate
from quark.improve.augment import augment_pairs, read_split, unseen_questions
from quark.improve.failures import Failures, read_answers, read_bypasses
from quark.improve.goal import next_goal
from quark.improve.kinds import ArithmeticKind, kind_of, label_of


def test_a_question_has_the_kind_of_its_operators_digits_and_terms() -> None:
    assert kind_of("What is 3 + 7 * 2?") == ArithmeticKind(("+", "*"), 1, 3)
    assert kind_of("What is 12 - 4?") == ArithmeticKind(("-",), 2, 2)
    assert label_of("What is 3 + 7 + 2?") == "+ 1-digit 3-term"
    assert kind_of("Translate: bonjour") is None and label_of("Translate: bonjour") == "other"


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def pair(expression: str) -> dict:
    return {"prompt": f"What is {expression}?", "response": str(evaluate(expression))}


@pytest.fixture
def task_set(tmp_path: Path) -> Path:
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    write_jsonl(pairs / "train.jsonl", [pair(f"{a} + {b}") for a in range(5) for b in range(5)])
    write_jsonl(pairs / "val.jsonl", [pair("9 + 9"), pair("1 + 2 + 3")])
    write_jsonl(pairs / "test.jsonl", [pair("8 + 8"), pair("4 + 5 + 6"), pair("7 + 1 + 1")])
    return pairs


def evaluate_run(tmp_path: Path, answers: list[tuple[str, str, str, bool]]) -> Path:
    run = tmp_path / "evaluate"
    (run / "red_team").mkdir(parents=True)
    write_jsonl(run / "answers.jsonl", [
        {"prompt": p, "reference": r, "answer": a, "correct": c} for p, r, a, c in answers
    ])  # fmt: skip
    write_jsonl(run / "red_team" / "bypasses.jsonl", [{"text": "h0w t0 m4ke", "label": "weapons"}])
    return run


def test_failures_are_the_wrong_answers_counted_per_kind_and_the_bypasses(tmp_path: Path) -> None:
    run = evaluate_run(tmp_path, [
        ("What is 8 + 8?", "16", "16", True),
        ("What is 4 + 5 + 6?", "15", "14", False),
        ("What is 7 + 1 + 1?", "9", "9", True),
    ])  # fmt: skip
    failures = Failures()
    read_answers(run, failures)
    read_bypasses(run, failures)
    assert [w.prompt for w in failures.wrong] == ["What is 4 + 5 + 6?"]
    assert failures.accuracy_by_kind() == {"+ 1-digit 2-term": 1.0, "+ 1-digit 3-term": 0.5}
    assert failures.bypasses == [{"text": "h0w t0 m4ke", "label": "weapons"}]
    (run / "answers.jsonl").write_text('{"prompt": "What is 1 + 1?"}\n')
    with pytest.raises(QuarkError, match=r"answers\.jsonl:1 is not an answer record"):
        read_answers(run, Failures())


def test_new_examples_are_of_the_failing_kind_and_never_a_known_question(
    task_set: Path, tmp_path: Path
) -> None:
    failures = Failures()
    read_answers(evaluate_run(tmp_path, [("What is 4 + 5 + 6?", "15", "14", False),
                                         ("What is 7 + 1 + 1?", "9", "8", False),
                                         ("What is 8 + 8?", "16", "16", True)]), failures)  # fmt: skip
    out = tmp_path / "augmented"
    added = augment_pairs(task_set, failures, out, per_failure=5, max_new=100, seed=3)
    train = read_split(out, "train")
    original = read_split(task_set, "train")
    new = [r for r in train if r not in original]
    assert added.added == {"+ 1-digit 3-term": 10} and not added.repeated
    assert len(new) == 10 and len(train) == len(original) + 10
    known = {r["prompt"] for split in ("train", "val", "test") for r in read_split(task_set, split)}
    for record in new:
        assert kind_of(record["prompt"]) == ArithmeticKind(("+",), 1, 3)
        assert record["prompt"] not in known
        assert record["response"] == str(evaluate(record["prompt"][8:-1]))
    # held-out splits are copied unchanged: they still measure the candidate
    assert read_split(out, "test") == read_split(task_set, "test")
    assert "2 wrong of 2 asked" in added.reasons["+ 1-digit 3-term"]


def test_a_kind_with_no_unseen_question_left_repeats_its_training_examples(
    task_set: Path, tmp_path: Path
) -> None:
    # every one-digit two-term sum below 5 is in train, 9 + 9 in val, 8 + 8 in test: of the
    # 100 two-term one-digit sums, the ones left unseen are few, and 500 are asked for
    failures = Failures()
    read_answers(evaluate_run(tmp_path, [("What is 8 + 8?", "16", "15", False)]), failures)
    added = augment_pairs(task_set, failures, tmp_path / "out", per_failure=500, max_new=500,
                          seed=0)  # fmt: skip
    label = "+ 1-digit 2-term"
    assert 0 < added.added[label] <= 100 - 25 - 2
    assert added.added[label] + added.repeated[label] == 500
    assert "repeated" in added.reasons[label]


def test_max_new_caps_the_examples_and_the_focus_kind_gets_twice_the_share(
    task_set: Path, tmp_path: Path
) -> None:
    failures = Failures()
    read_answers(evaluate_run(tmp_path, [("What is 4 + 5 + 6?", "15", "14", False),
                                         ("What is 8 + 8?", "16", "15", False)]), failures)  # fmt: skip
    added = augment_pairs(task_set, failures, tmp_path / "out", per_failure=10, max_new=30,
                          seed=0, focus="+ 1-digit 3-term")  # fmt: skip
    three, two = added.added["+ 1-digit 3-term"], added.added["+ 1-digit 2-term"]
    assert three + two + sum(added.repeated.values()) == 30
    assert three == 20  # twice the share of the focus


def test_unseen_questions_are_distinct_and_exactly_of_the_kind() -> None:
    import random

    kind = ArithmeticKind(("+", "*"), 2, 3)
    found = unseen_questions(kind, 40, set(), random.Random(0))
    assert len(found) == len(set(found)) == 40
    assert all(kind_of(f"What is {e}?") == kind for e in found)


def test_the_next_goal_is_the_weakest_kind_measured_with_a_budget_from_its_gap() -> None:
    goal = next_goal(
        {"a": 0.9, "b": 0.4, "c": 0.0}, {"a": 20, "b": 10, "c": 1}, steps_used=100,
        base_steps=100, max_steps=1000, base_new=50, promoted=True,
    )  # fmt: skip
    assert goal.kind == "b"  # c was asked once: not measured
    assert goal.accuracy == 0.4 and goal.aim == 0.7
    assert goal.steps == 160 and goal.max_new == 80
    # a refused candidate: twice the steps it was trained for, capped
    refused = next_goal({"b": 0.4}, {"b": 10}, steps_used=160, base_steps=100, max_steps=250,
                        base_new=50, promoted=False)  # fmt: skip
    assert refused.steps == 250 and "refused" in refused.why
    assert next_goal({"b": 0.4}, {"b": 10}, steps_used=100, base_steps=100, max_steps=1000,
                     base_new=50, promoted=False).steps == 200  # fmt: skip
    nothing = next_goal({}, {}, steps_used=100, base_steps=100, max_steps=1000, base_new=50,
                        promoted=True)  # fmt: skip
    assert nothing.kind is None and nothing.steps == 100
