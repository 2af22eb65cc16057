"""Labelled requests: every kind generated, every answer the right one, splits that never move."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from quark.data.tasks import evaluate
from quark.orchestrate.kinds import (
    KINDS,
    SMALLTALK_TEMPLATES,
    LabelledRequest,
    answer_is_right,
    labelled_requests,
    split_of,
    stdlib_sources,
)

SHOP = '''"""A tiny shop."""

import json


class Basket:
    """A basket of items bought together."""

    def __init__(self, items):
        self.items = list(items)
        # the fee is charged once per basket
        self.fee_cents = 250

    def total(self):
        """Add up the prices of the items and the fee."""
        subtotal = sum(price_of(item) for item in self.items)
        return subtotal + self.fee_cents


def price_of(item):
    """Look up the price of one item in cents."""
    prices = {"apple": 40, "bread": 220}
    return prices.get(item, 0)


def receipt(basket):
    """Render the basket as a JSON receipt for the till."""
    lines = [{"item": item, "cents": price_of(item)} for item in basket.items]
    return json.dumps({"lines": lines, "total": basket.total()})


def restock(shelf):
    """Fill the shelf back up with the two apples a day it sells."""
    shelf.append("apple")
    shelf.append("apple")
    return shelf
'''
SOURCES = [("shop.py", SHOP)]


def spaced(text: str) -> str:
    return " ".join(text.split())


def code_block(text: str) -> str:
    match = re.search(r"```python\n(.*)\n```", text, re.DOTALL)
    assert match, text
    return match.group(1)


def test_each_kind_gets_its_share_with_answers_that_check() -> None:
    requests = labelled_requests(30, seed=1, sources=SOURCES)
    counts = Counter(request.kind for request in requests)
    assert counts["arithmetic"] == counts["smalltalk"] == 30
    # a three-function source runs out of code and docs requests
    assert 0 < counts["code"] < 30 and 0 < counts["docs"] < 30
    assert [r.kind for r in requests] == sorted((r.kind for r in requests), key=KINDS.index)
    assert len({r.text for r in requests}) == len(requests)
    for request in requests:
        assert request.split == split_of(request.text)
        if request.kind == "smalltalk":
            assert request.answer is None
            assert answer_is_right(request, "Hello to you too!") is None
        else:
            assert request.answer is not None
            assert answer_is_right(request, request.answer) is True


def test_arithmetic_answers_are_the_value_of_the_expression_asked() -> None:
    for request in labelled_requests(200, seed=2, sources=SOURCES):
        if request.kind == "arithmetic":
            expression = re.search(r"\d+(?: [-+*] \d+)+", request.text)
            assert expression, request.text
            assert request.answer == str(evaluate(expression.group()))
            assert request.answer == str(eval(expression.group()))
    phrasings = {
        re.sub(r"\d+(?: [-+*] \d+)+", "{e}", r.text)
        for r in labelled_requests(200, sources=SOURCES)
        if r.kind == "arithmetic"
    }
    assert len(phrasings) >= 10


def test_code_requests_show_a_real_function_start_and_ask_for_its_next_line() -> None:
    requests = [r for r in labelled_requests(50, sources=SOURCES) if r.kind == "code"]
    answers = {r.answer for r in requests}
    assert "return subtotal + self.fee_cents" in answers
    assert "self.fee_cents = 250" in answers  # the comment line before it is skipped
    for request in requests:
        assert request.answer is not None
        snippet = code_block(request.text)
        assert snippet.startswith("def ")
        # the snippet and its answer are consecutive code of the source (indentation aside;
        # the comment before `self.fee_cents = 250` is part of the snippet)
        assert spaced(snippet + "\n" + request.answer) in spaced(SHOP)
        assert len(request.answer) >= 8 and not request.answer.startswith("#")
        # a line the snippet already shows is never asked for: copying it would pass
        assert spaced(request.answer) not in spaced(snippet)
    assert 'shelf.append("apple")' in answers and "return shelf" in answers
    total = next(r for r in requests if r.answer == "return subtotal + self.fee_cents")
    assert code_block(total.text) == (
        "def total(self):\n"
        '    """Add up the prices of the items and the fee."""\n'
        "    subtotal = sum(price_of(item) for item in self.items)"
    )


def test_docs_requests_are_paraphrased_docstrings_answered_by_the_unit() -> None:
    docs = {r.text: r.answer for r in labelled_requests(50, sources=SOURCES) if r.kind == "docs"}
    assert docs == {
        "Which function appends up the prices of the items and the fee?": "shop.Basket.total",
        "Which class is a basket of items bought together?": "shop.Basket",
        "Which function is described as: Fill the shelf back up with the two apples a day it "
        "sells?": "shop.restock",
        "Which function is described as: Look up the price of one item in cents?": (
            "shop.price_of"
        ),
        # relation questions with a single answer: the unit at the other end
        "What does `Basket.total` call?": "shop.price_of",
        "What does `shop.receipt` call?": "shop.price_of",
    }
    # receipt's docstring says "receipt", which would give the answer away: not asked.
    # Docstring questions come first, so a small per_kind gets the paraphrased ones
    assert all(text.startswith("What does") for text in list(docs)[-2:])


def test_smalltalk_is_varied_and_never_scored() -> None:
    assert len(SMALLTALK_TEMPLATES) >= 40
    chat = [r for r in labelled_requests(400, sources=SOURCES) if r.kind == "smalltalk"]
    assert len(chat) == len({r.text for r in chat}) == 400
    # no few strings dominate: the most common opening three words are a small share
    openings = Counter(" ".join(r.text.split()[:3]) for r in chat)
    assert openings.most_common(1)[0][1] < 40
    assert all(r.answer is None for r in chat)


def test_a_seed_gives_the_same_requests_and_another_seed_others() -> None:
    first = labelled_requests(20, seed=4, sources=SOURCES)
    assert labelled_requests(20, seed=4, sources=SOURCES) == first
    assert labelled_requests(20, seed=5, sources=SOURCES) != first
    # asking for more extends the requests asked for before
    more = labelled_requests(40, seed=4, sources=SOURCES)
    for kind in KINDS:
        fewer = [r for r in first if r.kind == kind]
        assert [r for r in more if r.kind == kind][: len(fewer)] == fewer


def test_the_split_depends_on_the_text_alone() -> None:
    assert split_of("What is 2 + 3?") == split_of("What is 2 + 3?")
    splits = Counter(split_of(f"request {i}") for i in range(2000))
    assert 0.25 < splits["test"] / 2000 < 0.35
    assert set(splits) == {"train", "test"}
    assert Counter(split_of(f"request {i}", test_fraction=0.0) for i in range(100)) == {
        "train": 100
    }
    # a text generated under two seeds lands in the same split both times
    one = {r.text: r.split for r in labelled_requests(100, seed=0, sources=SOURCES)}
    two = {r.text: r.split for r in labelled_requests(100, seed=9, sources=SOURCES)}
    shared = one.keys() & two.keys()
    assert shared and all(one[text] == two[text] for text in shared)


MINUS_SEVEN = LabelledRequest("What is 1 - 8?", "arithmetic", "-7", "train")
BIG_PRODUCT = LabelledRequest("What is 99 * 99 * 9?", "arithmetic", "88209", "train")
NEXT_LINE = LabelledRequest("Finish the code: ...", "code", "return a + b", "train")
DECODE = LabelledRequest("Which function ...?", "docs", "json.decoder.JSONDecoder.decode", "test")
HELLO = LabelledRequest("Hi!", "smalltalk", None, "train")


@pytest.mark.parametrize(
    ("request_", "reply", "right"),
    [
        (MINUS_SEVEN, "-7", True),
        (MINUS_SEVEN, "It is -7.", True),
        (MINUS_SEVEN, "7", False),
        (MINUS_SEVEN, "no idea", False),
        (MINUS_SEVEN, "1 - 8 = -7", True),  # a restated question: the value after "="
        (MINUS_SEVEN, "1 - 8 is 5, I think -7", False),  # the first integer, not any integer
        (BIG_PRODUCT, "88,209", True),
        (NEXT_LINE, "    return  a + b\n", True),
        (NEXT_LINE, "return a+b", False),
        (DECODE, "It is JSONDecoder.decode.", True),
        (DECODE, "json.decoder.JSONDecoder.decode()", True),
        (DECODE, "JSONDecoder.raw_decode", False),
        (HELLO, "Hello!", None),
    ],
)
def test_answer_is_right_by_hand(request_: LabelledRequest, reply: str, right: bool | None) -> None:
    assert answer_is_right(request_, reply) is right


def test_the_standard_library_gives_300_of_each_kind() -> None:
    requests = labelled_requests(300, seed=0)
    assert Counter(r.kind for r in requests) == {kind: 300 for kind in KINDS}
    paths = [path for path, _ in stdlib_sources()]
    assert any(path.endswith("json/decoder.py") for path in paths)
    answers = {r.answer for r in requests if r.kind == "docs"}
    assert all(answer and "." in answer for answer in answers)


def test_a_module_without_python_source_is_refused() -> None:
    with pytest.raises(ValueError, match="'sys'"):
        stdlib_sources(("sys",))
