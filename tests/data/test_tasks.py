"""Arithmetic task sets: every answer checks, splits never share an expression."""

from __future__ import annotations

import random

import pytest

from quark.core.errors import ConfigError
from quark.data.tasks import (
    ArithmeticSpec,
    evaluate,
    expressions,
    plausible_wrong_answer,
    preference_records,
    sft_records,
)


def test_evaluate_respects_precedence() -> None:
    assert evaluate("2 + 3 * 4") == 14
    assert evaluate("10 - 2 - 3") == 5
    assert evaluate("7 * 6 - 2 * 3 + 1") == 37


def test_every_sft_answer_is_the_python_value_of_its_expression() -> None:
    pool = expressions(ArithmeticSpec(max_digits=3, max_terms=4, seed=3), 2000)
    assert len(set(pool)) == 2000
    for record in sft_records(pool):
        assert record["answer"] == eval(record["expression"])
        assert record["response"] == str(record["answer"])
        assert record["prompt"] == f"What is {record['expression']}?"


def test_preferences_reject_a_wrong_answer_every_time() -> None:
    pool = expressions(ArithmeticSpec(seed=5), 2000)
    for record in preference_records(pool, seed=5):
        assert record["chosen"] == str(record["answer"])
        assert record["rejected"] != record["chosen"]
        assert int(record["rejected"]) != eval(record["expression"])


def test_wrong_answers_are_plausible() -> None:
    rng = random.Random(0)
    wrong = {plausible_wrong_answer("2 + 3 * 4", 14, rng) for _ in range(200)}
    assert wrong <= {20, 15, 13, 24, 4, 41}  # left-to-right, off by one or ten, digits swapped


def test_same_seed_same_set_other_seed_other_set() -> None:
    assert expressions(ArithmeticSpec(seed=1), 100) == expressions(ArithmeticSpec(seed=1), 100)
    assert expressions(ArithmeticSpec(seed=1), 100) != expressions(ArithmeticSpec(seed=2), 100)


def test_asking_for_more_than_exist_is_a_clear_error() -> None:
    # one-digit pairs with one operator: 100 distinct expressions at most
    with pytest.raises(ConfigError, match="distinct expressions"):
        expressions(ArithmeticSpec(operators=("+",), max_digits=1, max_terms=2), 500)
    with pytest.raises(ConfigError, match="not supported"):
        expressions(ArithmeticSpec(operators=("/",)), 5)
