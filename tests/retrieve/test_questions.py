"""The generated question set: paraphrased docstring questions, relation questions, a stable
val/test split, and ranking metrics worked by hand."""

from __future__ import annotations

import pytest

from quark.retrieve.questions import Question, as_question, corpus_questions, ranking_metrics

from .test_graph import shop_graph


def test_docstrings_become_paraphrased_questions() -> None:
    assert as_question("Return the JSON encoding of o.", "function") == (
        "Which function gives back the JSON encoding of o?"
    )
    assert as_question("Copy data from a to b.", "function") == (
        "Which function duplicates data from a to b?"
    )
    assert as_question("A parser for command lines.", "class") == (
        "Which class is a parser for command lines?"
    )
    assert as_question("Information about a conversion.", "class") == (
        "Which class is described as: Information about a conversion?"
    )


def test_questions_have_known_answers_and_a_split_that_does_not_move() -> None:
    graph = shop_graph()
    questions = corpus_questions(graph)
    by_question = {q.question: q for q in questions}
    total = by_question["Which function appends up the prices of the items?"]
    assert total.answers == ("shop.basket.Basket.total",) and total.kind == "docstring"
    assert total.chunks == (tuple(graph.nodes["shop.basket.Basket.total"]["chunks"]),)
    calls = by_question["What does `Basket.total` call?"]
    assert calls.answers == ("shop.basket.Basket.fee", "shop.prices.price_of")
    assert calls.kind == "relation"
    assert by_question["Which class does `basket.Basket` inherit from?"].answers == (
        "shop.prices.Priced",
    )
    # "Priced things." has too few words to ask about
    assert not any(
        q.answers == ("shop.prices.Priced",) and q.kind == "docstring" for q in questions
    )
    assert [q.split for q in corpus_questions(graph)] == [q.split for q in questions]
    assert {q.split for q in questions} <= {"val", "test"}


def test_ranking_metrics_by_hand() -> None:
    one = Question("q1", ("a",), ((5, 6),), "test")
    two = Question("q2", ("b", "c"), ((1,), (2,)), "test", "relation")
    metrics = ranking_metrics([[9, 6, 5], [2, 8, 7, 4, 3, 0, 11, 12, 13, 14, 1]], [one, two])
    # q1: found at rank 2; q2: c at rank 1, b at rank 11 (past 10)
    assert metrics["recall@1"] == pytest.approx((0 + 0.5) / 2)
    assert metrics["recall@5"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["recall@10"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    ideal_two = 1 + 1 / 1.584962500721156
    assert metrics["ndcg@10"] == pytest.approx((1 / 1.584962500721156 + 1 / ideal_two) / 2)
