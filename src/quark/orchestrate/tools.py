"""The gateway's built-in tools, declared and called as OpenAI's function calling does: a safe
calculator, search over a retrieve run's index, and lookups in its code knowledge graph.

A tool is a name, a description and a JSON Schema of its arguments (`Tool.spec()` is the entry
a chat request's `tools` list carries); the model calls it with its arguments as a JSON string
(`tool_calls[].function.arguments`). `run_tool` checks them against the schema, by hand, for the
small subset the built-ins use (an object of string, integer, number and boolean properties;
required, additionalProperties false, enum, minimum, maximum, default), then runs the tool and
awaits it when it is async. Whatever a tool cannot do is a `ToolError`: one line naming the
argument, what was wrong and what is allowed, fit to hand back to the model as the tool's result.

The calculator never calls `eval`: it parses with `ast` and walks only numbers, the arithmetic
operators, parentheses, pi, e and a short list of math functions, and refuses powers and
results too large to compute in a moment.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import json
import math
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.core.errors import QuarkError

if TYPE_CHECKING:
    import networkx as nx

    from quark.retrieve.store import Hit
    from quark.serve.rag import Retrieval


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
        return f"attribute access ('{_cut(ast.unparse(node))}')"
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
    return names.get(type(node), f"'{_cut(ast.unparse(node))}'")


def _shown(text: str) -> str:
    """`text` quoted on one line for a message, cut when long."""
    return f"'{_cut(text)}'"


def _cut(text: str, limit: int = 80) -> str:
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


# --- tools and their arguments ---------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and its arguments' JSON Schema."""

    name: str
    description: str
    # JSON Schema of the arguments: an object, additionalProperties false
    parameters: dict[str, Any]
    # validated arguments -> a JSON-able result, or an awaitable of one
    call: Callable[[dict[str, Any]], Any]

    def spec(self) -> dict[str, Any]:
        """The OpenAI `tools` entry: {"type": "function", "function": {"name", "description",
        "parameters"}}."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


JSON_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "string": ("a string", lambda value: isinstance(value, str)),
    # bool is an int in Python; JSON's true is not an integer
    "integer": ("an integer", lambda value: isinstance(value, int) and not isinstance(value, bool)),
    "number": (
        "a number",
        lambda value: (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ),
    ),
    "boolean": ("a boolean", lambda value: isinstance(value, bool)),
}


def validate_arguments(tool: Tool, arguments: str | dict[str, Any]) -> dict[str, Any]:
    """The arguments a model sent (a JSON string, as `tool_calls` carry them, or a dict) checked
    against `tool.parameters`, with the schema's defaults filled in."""
    if isinstance(arguments, str):
        try:
            # some models send "" for a call without arguments
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise ToolError(
                f"arguments of {tool.name} are not valid JSON: {error.msg} at character "
                f"{error.pos}; allowed: a JSON object of {_listed(tool.parameters)}"
            ) from None
    if not isinstance(arguments, dict):
        raise ToolError(
            f"arguments of {tool.name} must be a JSON object, got {_value(arguments)}; "
            f"allowed: an object of {_listed(tool.parameters)}"
        )
    properties: dict[str, dict[str, Any]] = tool.parameters.get("properties", {})
    if tool.parameters.get("additionalProperties") is False:
        for name in arguments:
            if name not in properties:
                raise ToolError(
                    f"{tool.name}: unknown argument '{name}'; allowed: {_listed(tool.parameters)}"
                )
    for name in tool.parameters.get("required", []):
        if name not in arguments:
            raise ToolError(
                f"{tool.name}: argument '{name}' is required "
                f"({JSON_TYPES[properties[name]['type']][0]})"
            )
    checked = {}
    for name, rule in properties.items():
        if name in arguments:
            checked[name] = _checked_argument(tool.name, name, arguments[name], rule)
        elif "default" in rule:
            checked[name] = rule["default"]
    return checked


def _checked_argument(tool: str, name: str, value: Any, rule: dict[str, Any]) -> Any:
    if rule["type"] not in JSON_TYPES:
        raise TypeError(f"{tool}: schema type '{rule['type']}' of '{name}' is not supported")
    kind, accepts = JSON_TYPES[rule["type"]]
    if not accepts(value):
        raise ToolError(f"{tool}: argument '{name}' must be {kind}, got {_value(value)}")
    if "enum" in rule and value not in rule["enum"]:
        allowed = ", ".join(str(option) for option in rule["enum"])
        raise ToolError(f"{tool}: argument '{name}' must be one of {allowed}; got {_value(value)}")
    if "minimum" in rule and value < rule["minimum"]:
        raise ToolError(
            f"{tool}: argument '{name}' must be at least {rule['minimum']}, got {_value(value)}"
        )
    if "maximum" in rule and value > rule["maximum"]:
        raise ToolError(
            f"{tool}: argument '{name}' must be at most {rule['maximum']}, got {_value(value)}"
        )
    return value


def _listed(schema: dict[str, Any]) -> str:
    """A schema's properties as a message lists them: "expression (string, required)"."""
    required = set(schema.get("required", []))
    return ", ".join(
        f"{name} ({rule['type']}{', required' if name in required else ''})"
        for name, rule in schema.get("properties", {}).items()
    )


def _value(value: Any) -> str:
    """A value as JSON writes it (true, null, "text"), cut for a message."""
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    return _cut(shown, 60)


async def run_tool(tool: Tool, arguments: str | dict[str, Any]) -> Any:
    """The tool's result for the arguments a model sent: validated, called, awaited if async."""
    result = tool.call(validate_arguments(tool, arguments))
    if inspect.isawaitable(result):
        result = await result
    return result


def _object_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


# --- the built-in tools ------------------------------------------------------------------------


def calculator_tool() -> Tool:
    """`calculator`: the value of an arithmetic expression, as {"expression", "value"}."""

    def call(arguments: dict[str, Any]) -> dict[str, Any]:
        expression = arguments["expression"]
        return {"expression": expression, "value": format_number(calculate(expression))}

    return Tool(
        name="calculator",
        description=(
            "Evaluate an arithmetic expression exactly. Use it for any arithmetic instead of "
            "working it out yourself."
        ),
        parameters=_object_schema(
            {
                "expression": {
                    "type": "string",
                    "description": (
                        "Python syntax: numbers, + - * / // % ** and parentheses, pi, e and "
                        f"the functions {', '.join(FUNCTIONS)}; e.g. (5 + 6) * 2 or sqrt(2) / 3"
                    ),
                }
            },
            ["expression"],
        ),
        call=call,
    )


MAX_K = 20
# a retrieved chunk's text in a tool result: enough to answer from, not a whole file
MAX_CHUNK_CHARS = 1000


def retrieval_tool(retrieval: Retrieval) -> Tool:
    """`retrieve`: the chunks of the index best matching a query, in `retrieval`'s mode, as
    [{"rank", "path", "name", "lines", "text"}], best first."""
    if not 1 <= retrieval.k <= MAX_K:
        raise QuarkError(f"retrieve tool: k={retrieval.k} is out of range; allowed: 1 to {MAX_K}")

    async def call(arguments: dict[str, Any]) -> list[dict[str, Any]]:
        hits = await retrieval.search(arguments["query"], retrieval.mode, arguments["k"])
        return [_hit_record(rank, hit) for rank, hit in enumerate(hits, start=1)]

    return Tool(
        name="retrieve",
        description=(
            f"Search the indexed documents ({retrieval.name}) for the passages that best match "
            "a query. Returns each passage's source path, unit name, lines and text, best first."
        ),
        parameters=_object_schema(
            {
                "query": {"type": "string", "description": "What to look for, in words or names."},
                "k": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_K,
                    "default": retrieval.k,
                    "description": "How many passages to return.",
                },
            },
            ["query"],
        ),
        call=call,
    )


def _hit_record(rank: int, hit: Hit) -> dict[str, Any]:
    """One retrieved chunk as the model reads it. Not serve.rag.source_record: its id, score and
    sha256 are for clients checking citations, and would cost the model tokens for nothing."""
    chunk = hit.chunk
    text = chunk.text.strip()
    if len(text) > MAX_CHUNK_CHARS:
        text = text[: MAX_CHUNK_CHARS - 1] + "…"
    return {
        "rank": rank,
        "path": chunk.path,
        "name": chunk.name,
        "lines": f"{chunk.start_line}-{chunk.end_line}",
        "text": text,
    }


RELATIONS = ("calls", "called_by", "inherits", "defines", "imports")
DEFINITION_KINDS = ("module", "class", "function")
MAX_RELATED = 30


def graph_tool(graph: nx.MultiDiGraph) -> Tool:
    """`graph_lookup`: a module, class or function of the code graph by qualified or short
    name, with where it is, its summary and its neighbours along each relation."""
    definitions = sorted(
        node for node, kind in graph.nodes(data="kind") if kind in DEFINITION_KINDS
    )

    def call(arguments: dict[str, Any]) -> dict[str, Any]:
        node = _resolve(definitions, arguments["name"])
        data = graph.nodes[node]
        external = bool(data.get("external"))
        found: dict[str, Any] = {
            "name": node,
            "kind": data["kind"],
            "path": data.get("path", ""),
            "lines": None if external else f"{data['start_line']}-{data['end_line']}",
            "summary": "imported from outside the indexed code"
            if external
            else data.get("doc", ""),
        }
        wanted = RELATIONS if arguments["relation"] == "all" else (arguments["relation"],)
        omitted = {}
        for relation in wanted:
            if relation == "called_by":
                edges = graph.in_edges(node, data="type")
                related = sorted({source for source, _, kind in edges if kind == "calls"})
            else:
                edges = graph.out_edges(node, data="type")
                related = sorted({target for _, target, kind in edges if kind == relation})
            found[relation] = related[:MAX_RELATED]
            if len(related) > MAX_RELATED:
                omitted[relation] = len(related) - MAX_RELATED
        if omitted:
            found["omitted"] = omitted  # how many names each cut list left out
        return found

    return Tool(
        name="graph_lookup",
        description=(
            "Look up a module, class or function of the indexed Python code by name: where it "
            "is defined, its docstring's summary, what it calls, what calls it, its base "
            "classes, what it defines and what it imports."
        ),
        parameters=_object_schema(
            {
                "name": {
                    "type": "string",
                    "description": (
                        "A qualified or short name, e.g. json.dumps, JSONDecoder or "
                        "JSONDecoder.decode."
                    ),
                },
                "relation": {
                    "type": "string",
                    "enum": [*RELATIONS, "all"],
                    "default": "all",
                    "description": "Which neighbours to list (called_by: what calls it).",
                },
            },
            ["name"],
        ),
        call=call,
    )


def _resolve(definitions: list[str], name: str) -> str:
    """The definition `name` means: its qualified name exactly, else the only one whose
    qualified name ends in `.name`."""
    wanted = name.strip().strip("`").removesuffix("()")
    if wanted in definitions:
        return wanted
    matches = [node for node in definitions if node.endswith(f".{wanted}")]
    if len(matches) == 1:
        return matches[0]
    if matches:
        more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        raise ToolError(
            f"graph_lookup: argument 'name': '{wanted}' is ambiguous, it names "
            f"{', '.join(matches[:5])}{more}; give a qualified name"
        )
    short = {node.rsplit(".", 1)[-1]: node for node in definitions}
    close = difflib.get_close_matches(wanted.rsplit(".", 1)[-1], list(short), n=5)
    hint = f"; similar: {', '.join(short[match] for match in close)}" if close else ""
    raise ToolError(
        f"graph_lookup: argument 'name': no module, class or function named '{wanted}' in the "
        f"code graph{hint}"
    )


def load_index_tools(run_dir: Path, k: int, mode: str) -> list[Tool]:
    """The tools over a completed retrieve run (verified by the caller): `retrieve` searching
    its index in `mode`, `k` chunks unless the model asks for another number, and
    `graph_lookup` when the run has a code graph (a corpus with Python sources)."""
    from quark.serve.rag import load_retrieval

    # the tool returns chunks rather than filling a prompt: no token budget to keep to
    retrieval = load_retrieval(run_dir, k, mode, max_context_tokens=0)
    if mode not in retrieval.index.modes:
        raise QuarkError(
            f"{run_dir}: retrieval mode '{mode}' is not one this index answers; "
            f"allowed: {', '.join(retrieval.index.modes)}"
        )
    tools = [retrieval_tool(retrieval)]
    # the index loaded graph/graph.json already (quark.retrieve.graph.load_graph)
    if retrieval.index.graph is not None:
        tools.append(graph_tool(retrieval.index.graph))
    return tools
