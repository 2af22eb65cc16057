"""The gateway's built-in tools, declared and called as OpenAI's function calling does: a safe
calculator, search over a retrieve run's index, and lookups in its code knowledge graph.

A tool is a name, a description and a JSON Schema of its arguments (`Tool.spec()` is the entry
a chat request's `tools` list carries); the model calls it with its arguments as a JSON string
(`tool_calls[].function.arguments`). `run_tool` checks them against the schema, by hand, for the
small subset the built-ins use (an object of string, integer, number and boolean properties;
required, additionalProperties false, enum, minimum, maximum, default), then runs the tool and
awaits it when it is async. Whatever a tool cannot do is a `ToolError`: one line naming the
argument, what was wrong and what is allowed, fit to hand back to the model as the tool's result.

The calculator itself, and the arithmetic found in a request, are quark.orchestrate.calculator.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.core.errors import QuarkError
from quark.orchestrate.calculator import FUNCTIONS, ToolError, calculate, cut, format_number

if TYPE_CHECKING:
    import networkx as nx

    from quark.retrieve.store import Hit
    from quark.serve.rag import Retrieval


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
    return cut(shown, 60)


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
