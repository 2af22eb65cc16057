"""Generated task sets with a known correct answer: arithmetic instructions and preferences.

Fine-tuning, alignment and evaluation can then be measured offline: every record carries its
ground truth (`answer`), so accuracy and rewards are checked exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from quark.core.errors import ConfigError

OPERATORS = ("+", "-", "*")


@dataclass(frozen=True)
class ArithmeticSpec:
    operators: tuple[str, ...] = OPERATORS
    min_digits: int = 1
    max_digits: int = 2
    min_terms: int = 2
    max_terms: int = 3
    seed: int = 0


def evaluate(expression: str) -> int:
    """Integer value of `a op b op c ...` with the usual precedence (* before + and -)."""
    tokens = expression.split()
    # fold multiplications first, then add and subtract left to right
    terms: list[int] = [int(tokens[0])]
    signs: list[str] = []
    for op, number in zip(tokens[1::2], tokens[2::2], strict=True):
        if op == "*":
            terms[-1] *= int(number)
        else:
            signs.append(op)
            terms.append(int(number))
    total = terms[0]
    for op, value in zip(signs, terms[1:], strict=True):
        total = total + value if op == "+" else total - value
    return total


def expressions(spec: ArithmeticSpec, count: int) -> list[str]:
    """`count` distinct expressions, in a seeded order; an error if the space is too small."""
    for op in spec.operators:
        if op not in OPERATORS:
            raise ConfigError(
                "data.task.operators",
                f"'{op}' is not supported",
                f"allowed: {', '.join(OPERATORS)}",
            )
    rng = random.Random(spec.seed)
    seen: dict[str, None] = {}
    attempts = 0
    while len(seen) < count:
        attempts += 1
        if attempts > 20 * count + 1000:
            raise ConfigError(
                "data.task",
                f"only {len(seen)} distinct expressions exist for these digits, terms and operators, {count} asked",
                "raise max_digits or max_terms, or ask for fewer examples",
            )
        terms = rng.randint(spec.min_terms, spec.max_terms)
        numbers = [str(_number(rng, spec)) for _ in range(terms)]
        ops = [rng.choice(spec.operators) for _ in range(terms - 1)]
        parts = [numbers[0]]
        for op, number in zip(ops, numbers[1:], strict=True):
            parts += [op, number]
        seen.setdefault(" ".join(parts), None)
    return list(seen)


def _number(rng: random.Random, spec: ArithmeticSpec) -> int:
    digits = rng.randint(spec.min_digits, spec.max_digits)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def prompt_for(expression: str) -> str:
    return f"What is {expression}?"


def sft_records(expressions_: list[str]) -> Iterator[dict[str, Any]]:
    for index, expression in enumerate(expressions_):
        answer = evaluate(expression)
        yield {
            "id": index,
            "prompt": prompt_for(expression),
            "response": str(answer),
            "answer": answer,
            "expression": expression,
        }


def plausible_wrong_answer(expression: str, answer: int, rng: random.Random) -> int:
    """A wrong answer a model might give: left-to-right evaluation, an off-by-one or -ten slip,
    or swapped digits; never the correct answer."""
    candidates = []
    tokens = expression.split()
    left_to_right = int(tokens[0])
    for op, number in zip(tokens[1::2], tokens[2::2], strict=True):
        value = int(number)
        left_to_right = (
            left_to_right + value
            if op == "+"
            else left_to_right - value
            if op == "-"
            else left_to_right * value
        )
    candidates.append(left_to_right)
    candidates += [answer + 1, answer - 1, answer + 10, answer - 10]
    digits = str(abs(answer))
    if len(digits) > 1:
        swapped = int(digits[::-1])
        candidates.append(-swapped if answer < 0 else swapped)
    wrong = [c for c in candidates if c != answer]
    return rng.choice(wrong)


def preference_records(expressions_: list[str], seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed + 1)
    for index, expression in enumerate(expressions_):
        answer = evaluate(expression)
        yield {
            "id": index,
            "prompt": prompt_for(expression),
            "chosen": str(answer),
            "rejected": str(plausible_wrong_answer(expression, answer, rng)),
            "answer": answer,
            "expression": expression,
        }
