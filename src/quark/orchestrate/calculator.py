"""The gateway's calculator: arithmetic evaluated safely, and the arithmetic found in a request.

It never calls `eval`: it parses with `ast` and walks only numbers, the arithmetic operators,
parentheses, pi, e and a short list of math functions, and refuses powers and results too
large to compute in a moment. `arithmetic_expression` finds the expression in a question
("What is 12 * 3 - 4?", "how much is 7 divided by 2"), which the calculator backend and the
arithmetic verifier use.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any


class ToolError(Exception):
    """A tool call that cannot run: bad arguments, an expression the calculator refuses, an
    unknown name. The message is one line: the argument, what is wrong, what is allowed."""


# --- the calculator ---------------------------------------------------------------------------

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
# Python refuses to print an int of more digits (sys.int_info.default_max_str_digits)
MAX_INT_DIGITS = 4300
INT_LIMIT = 10**MAX_INT_DIGITS
# name -> (function, fewest arguments, most arguments or None for any number)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "abs": (abs, 1, 1),
    "round": (round, 1, 2),
    "min": (min, 2, None),
    "max": (max, 2, None),
    "sqrt": (math.sqrt, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (math.log, 1, 2),
    "log10": (math.log10, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
}
CONSTANTS = {"pi": math.pi, "e": math.e}
BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
# what people type for the operators Python spells otherwise
UNICODE_OPERATORS = str.maketrans({"×": "*", "÷": "/", "−": "-"})
ALLOWED = "allowed: numbers, + - * / // % **, parentheses, pi, e and the functions " + ", ".join(
    FUNCTIONS
)


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression in Python syntax, integers kept exact ("12 * 3 - 4"
    is 32, "8 / 2" is 4.0); a ToolError for anything but arithmetic or a result too large."""
    text = expression.translate(UNICODE_OPERATORS).strip()
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(
            f"calculator: the expression has {len(text)} characters; "
            f"allowed: at most {MAX_EXPRESSION_CHARS}"
        )
    if "^" in text:
        raise ToolError(f"calculator: {_shown(text)} uses ^; write powers with ** (2 ** 10)")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as error:
        reason = getattr(error, "msg", None) or str(error)
        raise ToolError(f"calculator: cannot parse {_shown(text)} ({reason})") from None
    try:
        return _evaluate(tree.body, text)
    except ZeroDivisionError:
        raise ToolError(f"calculator: division by zero in {_shown(text)}") from None
    except OverflowError:
        raise ToolError(f"calculator: {_shown(text)} is too large to compute") from None
    except RecursionError:
        raise ToolError(f"calculator: {_shown(text)} is nested too deeply") from None


def _evaluate(node: ast.expr, text: str) -> int | float:
    """The value of one node of a parsed expression; every node kind not named here is refused."""
    if isinstance(node, ast.Constant):
        value = node.value
        # True is an int to Python, and 1j a number: neither is arithmetic here
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _not_arithmetic(text, f"the constant {value!r}")
        return _checked(value, text)
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            raise _not_arithmetic(text, f"the name '{node.id}'")
        return CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return _checked(UNARY[type(node.op)](_evaluate(node.operand, text)), text)
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _evaluate(node.left, text), _evaluate(node.right, text)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right, text)
        value = BINARY[type(node.op)](left, right)
        if isinstance(value, complex):  # (-8) ** 0.5
            raise ToolError(f"calculator: {_shown(ast.unparse(node))} has no real value")
        return _checked(value, text)
    if isinstance(node, ast.Call):
        return _call(node, text)
    raise _not_arithmetic(text, _what(node))


def _call(node: ast.Call, text: str) -> int | float:
    if not isinstance(node.func, ast.Name):
        raise _not_arithmetic(text, _what(node.func))
    name = node.func.id
    if name not in FUNCTIONS:
        raise _not_arithmetic(text, f"the function '{name}'")
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise ToolError(
            f"calculator: {_shown(ast.unparse(node))}: {name}() takes plain positional "
            "arguments only"
        )
    function, fewest, most = FUNCTIONS[name]
    if len(node.args) < fewest or (most is not None and len(node.args) > most):
        expected = (
            f"{fewest} or more" if most is None else f"{fewest}" if fewest == most
            else f"{fewest} or {most}"
        )  # fmt: skip
        raise ToolError(
            f"calculator: {name}() takes {expected} arguments, got {len(node.args)} in "
            f"{_shown(ast.unparse(node))}"
        )
    args = [_evaluate(arg, text) for arg in node.args]
    # an int rounded to -n digits computes 10 ** n: the same bound as an exponent
    if (
        name == "round"
        and len(args) == 2
        and not (isinstance(args[1], int) and abs(args[1]) <= MAX_EXPONENT)
    ):
        raise ToolError(
            f"calculator: {_shown(ast.unparse(node))}: round()'s digits must be an integer "
            f"from -{MAX_EXPONENT} to {MAX_EXPONENT}"
        )
    try:
        return _checked(function(*args), text)
    except (ValueError, TypeError) as error:  # sqrt(-1), log(0), round(2.5, 0.5)
        raise ToolError(f"calculator: {_shown(ast.unparse(node))} is undefined ({error})") from None


def _check_power(base: int | float, exponent: int | float, text: str) -> None:
    """Refuse a power that would take long to compute or give an unprintable integer."""
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(
            f"calculator: the exponent {format_number(exponent)} in {_shown(text)} is too "
            f"large; allowed: at most {MAX_EXPONENT} in absolute value"
        )
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        digits = exponent * math.log10(abs(base))
        if digits > MAX_INT_DIGITS:
            raise ToolError(
                f"calculator: a power in {_shown(text)} would have about {digits:.0f} digits; "
                f"allowed: results of at most {MAX_INT_DIGITS} digits"
            )


def _checked(value: int | float, text: str) -> int | float:
    """`value`, refused when it is not a finite number or an int too long to print."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(f"calculator: {_shown(text)} is too large to compute (not finite)")
    if isinstance(value, int) and abs(value) >= INT_LIMIT:
        raise ToolError(
            f"calculator: {_shown(text)} has more than {MAX_INT_DIGITS} digits; "
            f"allowed: results of at most {MAX_INT_DIGITS} digits"
        )
    return value


def _not_arithmetic(text: str, what: str) -> ToolError:
    return ToolError(f"calculator: {_shown(text)} is not arithmetic: {what} is refused; {ALLOWED}")


def _what(node: ast.AST) -> str:
    """A node the calculator refuses, as its message names it."""
    if isinstance(node, ast.Attribute):
        return f"attribute access ('{cut(ast.unparse(node))}')"
    if isinstance(node, ast.Tuple):
        return "a tuple (thousands separators such as 1,000 are not supported: write 1000)"
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        symbol = {ast.BitXor: "^", ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<",
                  ast.RShift: ">>", ast.MatMult: "@", ast.Not: "not", ast.Invert: "~"}  # fmt: skip
        return f"the operator '{symbol.get(type(node.op), type(node.op).__name__)}'"
    names = {
        ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension", ast.GeneratorExp: "a comprehension",
        ast.Compare: "a comparison", ast.BoolOp: "and/or", ast.IfExp: "if/else",
        ast.Subscript: "indexing", ast.NamedExpr: "assignment", ast.JoinedStr: "an f-string",
    }  # fmt: skip
    return names.get(type(node), f"'{cut(ast.unparse(node))}'")


def _shown(text: str) -> str:
    """`text` quoted on one line for a message, cut when long."""
    return f"'{cut(text)}'"


def cut(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def format_number(value: int | float) -> str:
    """A calculator result as text: ints in full, integral floats without ".0" ("4"), other
    floats to 12 significant digits without trailing zeros (0.1 + 0.2 is "0.3")."""
    if isinstance(value, int):
        return str(value)
    # below 1e15 a float holds every integer exactly; above, its trailing digits are noise
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


# words of a request that stand for operators, longest phrases first
WORD_OPERATORS = (
    (r"multiplied\s+by", "*"),
    (r"divided\s+by", "/"),
    (r"to\s+the\s+power\s+of", "**"),
    (r"times", "*"),
    (r"plus", "+"),
    (r"minus", "-"),
    (r"over", "/"),
)
# pieces of an expression inside prose; 1,000 is one piece so that "000 + 1" is never cut out
# of "1,000 + 1"
EXPRESSION_PIECE = re.compile(
    r"\d{1,3}(?:,\d{3})+(?![\d.])|(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
    r"|\*\*|//|[-+*/%(),]|\b(?:"
    + "|".join(sorted([*FUNCTIONS, *CONSTANTS], key=len, reverse=True))
    + r")\b"
)
# an expression cannot start or end with these pieces
NOT_FIRST = {"*", "**", "/", "//", "%", ")", ","}
NOT_LAST = {"*", "**", "/", "//", "%", "(", ",", "+", "-", *FUNCTIONS}
# what one request may cost at most, however it is written: stretches of text looked at,
# and calculate() calls on them
MAX_STRETCHES = 100_000
MAX_ATTEMPTS = 2000


def arithmetic_expression(text: str) -> str | None:
    """The longest arithmetic expression in a request ("What is 12 * 3 - 4?" -> "12 * 3 - 4",
    "how much is 7 divided by 2" -> "7 / 2"), with the operator words written as symbols;
    None when the text holds none with an operator or a function call."""
    normalised = text.translate(UNICODE_OPERATORS)
    for words, symbol in WORD_OPERATORS:
        normalised = re.sub(rf"\b{words}\b", f" {symbol} ", normalised, flags=re.IGNORECASE)
    candidates = list(_candidates(normalised))
    candidates.sort(key=len, reverse=True)  # stable: the first of equally long ones wins
    for candidate in candidates[:MAX_ATTEMPTS]:
        try:
            calculate(candidate)
        except ToolError:
            continue
        tree = ast.parse(candidate, mode="eval")
        if any(isinstance(node, ast.BinOp | ast.Call) for node in ast.walk(tree)):
            return " ".join(candidate.split())  # "7  /  2" where words were operators
    return None


def _candidates(text: str) -> Iterator[str]:
    """Stretches of `text` that may be an expression: runs of expression pieces with nothing
    but spaces between them, cut where two operands meet ("3 apples and 4" gives "3" and
    "4", never "3 4"), from each piece that can start one to each piece that can end one."""
    runs: list[list[re.Match[str]]] = []
    for piece in EXPRESSION_PIECE.finditer(text):
        previous = runs[-1][-1] if runs else None
        if (
            previous is not None
            and not text[previous.end() : piece.start()].strip()
            and not (_ends_operand(previous.group()) and _starts_operand(piece.group()))
        ):
            runs[-1].append(piece)
        else:
            runs.append([piece])
    looked_at = 0
    for run in runs:
        for first, start in enumerate(run):
            if start.group() in NOT_FIRST:
                continue
            for end in run[first:]:
                looked_at += 1
                if looked_at > MAX_STRETCHES:
                    return
                if end.end() - start.start() > MAX_EXPRESSION_CHARS:
                    break
                candidate = text[start.start() : end.end()]
                if end.group() not in NOT_LAST and candidate.count("(") == candidate.count(")"):
                    yield candidate


def _ends_operand(piece: str) -> bool:
    return piece[0].isdigit() or piece[0] == "." or piece in CONSTANTS or piece == ")"


def _starts_operand(piece: str) -> bool:
    return piece[0].isdigit() or piece[0] == "." or piece in (*CONSTANTS, *FUNCTIONS, "(")
