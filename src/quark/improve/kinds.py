"""The kind of an arithmetic question: which operators it uses, how many digits its longest
number has, how many terms it has. Failures are counted per kind, new examples are generated
per kind, and the next goal names the weakest kind.

Questions are the ones quark.data.tasks writes ("What is 3 + 7 * 2?"); anything else is of the
kind `other` and is never generated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quark.data.tasks import OPERATORS

_QUESTION = re.compile(r"^What is (\d+(?: [-+*] \d+)+)\?$")
OTHER = "other"


@dataclass(frozen=True, order=True)
class ArithmeticKind:
    """Operators used (in OPERATORS' order), digits of the longest number, number of terms."""

    operators: tuple[str, ...]
    digits: int
    terms: int

    @property
    def label(self) -> str:
        ops = "".join(self.operators)
        return f"{ops} {self.digits}-digit {self.terms}-term"


def expression_of(prompt: str) -> str | None:
    """The expression of a generated arithmetic question, None for any other prompt."""
    found = _QUESTION.match(prompt.strip())
    return found.group(1) if found else None


def kind_of(prompt: str) -> ArithmeticKind | None:
    """The kind of a generated arithmetic question; None for any other prompt."""
    expression = expression_of(prompt)
    if expression is None:
        return None
    tokens = expression.split()
    numbers, used = tokens[0::2], set(tokens[1::2])
    return ArithmeticKind(
        operators=tuple(op for op in OPERATORS if op in used),
        digits=max(len(n) for n in numbers),
        terms=len(numbers),
    )


def label_of(prompt: str) -> str:
    kind = kind_of(prompt)
    return kind.label if kind is not None else OTHER
