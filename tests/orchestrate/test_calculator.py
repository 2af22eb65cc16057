"""The gateway's calculator: its values and refusals, and finding the arithmetic in a request."""

from __future__ import annotations

import math

import pytest

from quark.data.tasks import ArithmeticSpec, evaluate, expressions
from quark.orchestrate.calculator import (
    ToolError,
    arithmetic_expression,
    calculate,
    format_number,
)
from quark.orchestrate.kinds import ARITHMETIC_TEMPLATES

# --- calculator ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("12 * 3 - 4", 32),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2 ** 3 ** 2", 512),  # right-associative
        ("-2 ** 2", -4),  # ** binds tighter than unary minus
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** 100", 1267650600228229401496703205376),
        ("2 ** -2", 0.25),
        ("7 / 2", 3.5),
        ("abs(-3) + max(1, 5, 3) - min(4, 2)", 6),
        ("floor(2.7) + ceil(2.1)", 5),
        ("round(2.567, 2)", 2.57),
        ("log(8, 2)", 3.0),
        ("log10(1000)", 3.0),
        ("sqrt(16) + 1", 5.0),
        ("6 × 7", 42),
        ("9 ÷ 3", 3.0),
        ("5 − 8", -3),
        ("  (1 +\n 2)  ", 3),
    ],
)
def test_calculator_values_follow_python_arithmetic(expression: str, value: int | float) -> None:
    result = calculate(expression)
    assert result == value
    assert type(result) is type(value)  # ints stay exact ints, "/" always gives a float


def test_calculator_knows_pi_e_and_trigonometry() -> None:
    assert calculate("2 * pi") == pytest.approx(2 * math.pi)
    assert calculate("log(e)") == pytest.approx(1.0)
    assert calculate("sin(pi / 2) + cos(0) + tan(0)") == pytest.approx(2.0)
    assert calculate("exp(1)") == pytest.approx(math.e)
    assert calculate("8 / 2") == 4.0 and isinstance(calculate("8 / 2"), float)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("os", "the name 'os' is refused; allowed: numbers"),
        ("__import__('os')", "the function '__import__' is refused"),
        ("().__class__", "attribute access ('().__class__')"),
        ("(1).real", "attribute access"),
        ("x.system(1)", "attribute access ('x.system')"),
        ("lambda: 1", "a lambda is refused"),
        ("[x for x in (1, 2)]", "a comprehension is refused"),
        ("'a' * 3", "the constant 'a' is refused"),
        ("True + 1", "the constant True is refused"),
        ("1j * 2", "the constant 1j is refused"),
        ("1 < 2", "a comparison is refused"),
        ("(1)[0]", "indexing is refused"),
        ("1 << 3", "the operator '<<' is refused"),
        ("1,000 + 1", "thousands separators such as 1,000 are not supported"),
        ("2 ^ 10", "write powers with **"),
        ("3 +", "cannot parse '3 +' (invalid syntax)"),
        ("2 ** 100000", "the exponent 100000 in '2 ** 100000' is too large; allowed: at most 1000"),
        ("999999 ** 999", "would have about 5994 digits; allowed: results of at most 4300 digits"),
        ("(10 ** 999) * (10 ** 999) * (10 ** 999) * (10 ** 999) * (10 ** 999)", "more than 4300"),
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("1" * 501, "the expression has 501 characters; allowed: at most 500"),
        ("1e308 * 10", "too large to compute"),
        ("1e999", "too large to compute"),
        ("exp(1000)", "too large to compute"),
        ("sqrt(-1)", "'sqrt(-1)' is undefined (math domain error)"),
        ("(-8) ** 0.5", "has no real value"),
        ("log(1, 2, 3)", "log() takes 1 or 2 arguments, got 3"),
        ("min(4)", "min() takes 2 or more arguments, got 1"),
        ("round(2.5, ndigits=1)", "positional arguments only"),
        ("round(5, -10 ** 9)", "round()'s digits must be an integer from -1000 to 1000"),
    ],
)
def test_calculator_refuses_what_is_not_safe_arithmetic(expression: str, message: str) -> None:
    with pytest.raises(ToolError) as refused:
        calculate(expression)
    assert str(refused.value).startswith("calculator: ")
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_refused_multiline_expression_is_shown_on_one_line() -> None:
    with pytest.raises(ToolError, match=r"'\(1 \+ os\)' is not arithmetic") as refused:
        calculate("(1 +\n os)")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (32, "32"),
        (-7, "-7"),
        (4.0, "4"),
        (-0.0, "0"),
        (3.5, "3.5"),
        (0.1 + 0.2, "0.3"),
        (1 / 3, "0.333333333333"),
        (2.0**60, "1.15292150461e+18"),
        (1e-20, "1e-20"),
        (2**100, "1267650600228229401496703205376"),
    ],
)
def test_format_number_writes_ints_whole_and_floats_to_twelve_digits(
    value: int | float, text: str
) -> None:
    assert format_number(value) == text


# --- finding the arithmetic in a request --------------------------------------------------------


@pytest.mark.parametrize(
    ("request_text", "expression"),
    [
        ("What is 12 * 3 - 4?", "12 * 3 - 4"),
        ("Compute (5+6)*2.", "(5+6)*2"),  # the full stop is not a decimal point
        ("how much is 7 divided by 2", "7 / 2"),
        ("What is 6 multiplied by 7?", "6 * 7"),
        ("What is 5 times 3 plus 2 minus 1?", "5 * 3 + 2 - 1"),
        ("What's 10 over 4?", "10 / 4"),
        ("What is 2 to the power of 10", "2 ** 10"),
        ("calculate sqrt(16) + 1", "sqrt(16) + 1"),
        ("Give me max(1,200) please", "max(1,200)"),
        ("I bought 3 apples, then 12 * 3 - 4 = ?", "12 * 3 - 4"),
        ("What is 6 × 7?", "6 * 7"),
        ("e.g. 3 + 4", "3 + 4"),
    ],
)
def test_arithmetic_expression_finds_the_longest_expression(
    request_text: str, expression: str
) -> None:
    assert arithmetic_expression(request_text) == expression


@pytest.mark.parametrize(
    "request_text",
    [
        "Hello there, how are you?",
        "I have 3 apples and 4 pears",  # numbers, no operator
        "What is -3?",  # a unary minus alone is not a calculation
        "What is 1,000 + 1?",  # not cut down to "000 + 1"
        "What is 2^10?",  # the calculator refuses ^
        "Think it over",
    ],
)
def test_arithmetic_expression_is_none_without_a_calculation(request_text: str) -> None:
    assert arithmetic_expression(request_text) is None


def test_every_phrasing_of_the_arithmetic_workload_gives_its_answer() -> None:
    spec = ArithmeticSpec(max_digits=2, max_terms=4, seed=3)
    for index, expression in enumerate(expressions(spec, 2 * len(ARITHMETIC_TEMPLATES))):
        request_text = ARITHMETIC_TEMPLATES[index % len(ARITHMETIC_TEMPLATES)].format(e=expression)
        found = arithmetic_expression(request_text)
        assert found is not None, request_text
        assert calculate(found) == evaluate(expression), request_text
