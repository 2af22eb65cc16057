"""The gateway's built-in tools: arguments checked against a tool's schema, lookups in a real
code graph, and the retrieval tool over a fake search and over a real BM25 index built here
(the calculator: test_calculator.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from omegaconf import OmegaConf

from quark.core.errors import QuarkError
from quark.core.schemas.retrieve import IndexSchema
from quark.orchestrate.tools import (
    Tool,
    ToolError,
    calculator_tool,
    graph_tool,
    load_index_tools,
    retrieval_tool,
    run_tool,
    validate_arguments,
)
from quark.retrieve.building import Corpus, chunk_corpus, write_index
from quark.retrieve.chunks import Chunk
from quark.retrieve.graph import build_graph
from quark.retrieve.store import Hit


def run(tool: Tool, arguments: str | dict[str, Any]) -> Any:
    return asyncio.run(run_tool(tool, arguments))


# --- arguments against a schema -----------------------------------------------------------------


def echo_tool() -> Tool:
    return Tool(
        name="echo",
        description="Give the arguments back.",
        parameters={
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "count": {"type": "integer", "minimum": 1, "maximum": 5, "default": 2},
                "scale": {"type": "number"},
                "loud": {"type": "boolean", "default": False},
                "mode": {"type": "string", "enum": ["plain", "fancy"]},
            },
            "required": ["text"],
            "additionalProperties": False,
        },
        call=lambda arguments: arguments,
    )


def test_validate_arguments_reads_json_and_fills_defaults() -> None:
    tool = echo_tool()
    assert validate_arguments(tool, '{"text": "hi"}') == {"text": "hi", "count": 2, "loud": False}
    given = {"text": "hi", "count": 5, "scale": 3, "loud": True, "mode": "fancy"}
    assert validate_arguments(tool, json.dumps(given)) == given  # a number accepts an int
    assert validate_arguments(tool, {"text": "x", "scale": 0.5})["scale"] == 0.5


def test_empty_arguments_are_an_empty_object() -> None:
    optional = Tool("noop", "Nothing.", {"type": "object", "properties": {}}, lambda a: a)
    assert validate_arguments(optional, "") == {}
    with pytest.raises(ToolError, match="echo: argument 'text' is required"):
        validate_arguments(echo_tool(), "  ")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"text": "hi"', "arguments of echo are not valid JSON: Expecting ',' delimiter"),
        ('["hi"]', 'arguments of echo must be a JSON object, got ["hi"]; allowed: an object of'),
        ("{}", "echo: argument 'text' is required (a string)"),
        ('{"text": "a", "colour": "red"}', "echo: unknown argument 'colour'; allowed: text"),
        ('{"text": 3}', "echo: argument 'text' must be a string, got 3"),
        ('{"text": null}', "echo: argument 'text' must be a string, got null"),
        ('{"text": "a", "count": 2.5}', "argument 'count' must be an integer, got 2.5"),
        ('{"text": "a", "count": 2.0}', "argument 'count' must be an integer, got 2.0"),
        ('{"text": "a", "count": true}', "argument 'count' must be an integer, got true"),
        ('{"text": "a", "scale": "2"}', "argument 'scale' must be a number, got \"2\""),
        ('{"text": "a", "scale": false}', "argument 'scale' must be a number, got false"),
        ('{"text": "a", "scale": NaN}', "argument 'scale' must be a number, got NaN"),
        ('{"text": "a", "loud": 1}', "argument 'loud' must be a boolean, got 1"),
        (
            '{"text": "a", "mode": "odd"}',
            "argument 'mode' must be one of plain, fancy; got \"odd\"",
        ),
        ('{"text": "a", "count": 0}', "argument 'count' must be at least 1, got 0"),
        ('{"text": "a", "count": 6}', "argument 'count' must be at most 5, got 6"),
    ],
)
def test_validate_arguments_names_the_argument_and_what_is_allowed(
    arguments: str, message: str
) -> None:
    with pytest.raises(ToolError) as refused:
        validate_arguments(echo_tool(), arguments)
    assert message in str(refused.value)


def test_spec_is_the_openai_tools_entry() -> None:
    spec = calculator_tool().spec()
    assert spec["type"] == "function"
    function = spec["function"]
    assert set(function) == {"name", "description", "parameters"}
    assert function["name"] == "calculator" and function["description"]
    parameters = function["parameters"]
    assert parameters["type"] == "object" and parameters["additionalProperties"] is False
    assert parameters["required"] == ["expression"]
    assert parameters["properties"]["expression"]["type"] == "string"
    json.dumps(spec)  # what a request body carries must be JSON


def test_the_calculator_tool_runs_from_the_models_json() -> None:
    tool = calculator_tool()
    assert run(tool, '{"expression": "12 * 3 - 4"}') == {"expression": "12 * 3 - 4", "value": "32"}
    assert run(tool, {"expression": "7 / 2"})["value"] == "3.5"
    with pytest.raises(ToolError, match="division by zero"):
        run(tool, '{"expression": "1 / 0"}')
    with pytest.raises(ToolError, match="calculator: argument 'expression' is required"):
        run(tool, "{}")


# --- the code graph -----------------------------------------------------------------------------

SOURCES = [
    (
        "geometry/shapes.py",
        '''"""Shapes on a plane."""
import math
from geometry.units import to_metres


class Shape:
    """A plane figure."""

    def area(self):
        return 0


class Circle(Shape):
    """A round shape of a given radius.

    The radius is kept in metres.
    """

    def __init__(self, radius):
        self.radius = to_metres(radius)

    def area(self):
        return math.pi * self.radius ** 2
''',
    ),
    (
        "geometry/units.py",
        '''"""Units of length."""


def to_metres(value):
    """Convert centimetres to metres."""
    return value / 100


def describe(shape):
    return to_metres(shape.area())
''',
    ),
]


@pytest.fixture(scope="module")
def lookup() -> Tool:
    return graph_tool(build_graph(SOURCES, []))


def test_graph_lookup_finds_an_exact_name_with_its_callers(lookup: Tool) -> None:
    found = run(lookup, '{"name": "geometry.units.to_metres"}')
    assert found == {
        "name": "geometry.units.to_metres",
        "kind": "function",
        "path": "geometry/units.py",
        "lines": "4-6",
        "summary": "Convert centimetres to metres.",
        "calls": [],
        "called_by": ["geometry.shapes.Circle.__init__", "geometry.units.describe"],
        "inherits": [],
        "defines": [],
        "imports": [],
    }


def test_graph_lookup_resolves_a_unique_suffix(lookup: Tool) -> None:
    circle = run(lookup, {"name": "Circle"})
    assert circle["name"] == "geometry.shapes.Circle"
    assert circle["summary"] == "A round shape of a given radius."
    assert circle["inherits"] == ["geometry.shapes.Shape"]
    assert circle["defines"] == ["geometry.shapes.Circle.__init__", "geometry.shapes.Circle.area"]
    assert run(lookup, {"name": "Circle.area"})["name"] == "geometry.shapes.Circle.area"
    assert run(lookup, {"name": "`describe()`"})["calls"] == ["geometry.units.to_metres"]


def test_graph_lookup_lists_one_relation_when_asked(lookup: Tool) -> None:
    module = run(lookup, {"name": "geometry.shapes", "relation": "imports"})
    assert module["imports"] == ["geometry.units", "math"]
    assert module["lines"] == "1-23" and module["kind"] == "module"
    assert not {"calls", "called_by", "inherits", "defines"} & set(module)
    init = run(lookup, {"name": "Circle.__init__", "relation": "calls"})
    assert init["calls"] == ["geometry.units.to_metres"]
    external = run(lookup, {"name": "math"})
    assert external["lines"] is None and "outside" in external["summary"]


def test_graph_lookup_refuses_ambiguous_and_unknown_names(lookup: Tool) -> None:
    with pytest.raises(ToolError) as ambiguous:
        run(lookup, {"name": "area"})
    assert str(ambiguous.value) == (
        "graph_lookup: argument 'name': 'area' is ambiguous, it names "
        "geometry.shapes.Circle.area, geometry.shapes.Shape.area; give a qualified name"
    )
    with pytest.raises(ToolError, match=r"no module, class or function named 'Circel'.*"
                       r"similar: geometry\.shapes\.Circle"):  # fmt: skip
        run(lookup, {"name": "Circel"})
    with pytest.raises(ToolError, match="argument 'relation' must be one of calls, called_by"):
        run(lookup, {"name": "Circle", "relation": "friends"})


def test_graph_lookup_cuts_long_lists_and_says_how_much(lookup: Tool) -> None:
    callers = "\n".join(f"def caller_{i}():\n    return hub()\n" for i in range(35))
    graph = build_graph([("hub.py", f"def hub():\n    return 1\n\n{callers}")], [])
    found = run(graph_tool(graph), {"name": "hub.hub", "relation": "called_by"})
    assert len(found["called_by"]) == 30 and found["omitted"] == {"called_by": 5}


# --- retrieval ----------------------------------------------------------------------------------


def chunk(name: str, text: str) -> Chunk:
    return Chunk("geometry/units.py", "function", name, 4, 6, 0, len(text), text, "0" * 64)


def test_the_retrieval_tool_searches_with_the_models_k_or_the_default() -> None:
    asked: list[tuple[str, str, int]] = []

    async def search(query: str, mode: str, k: int) -> list[Hit]:
        asked.append((query, mode, k))
        return [Hit(7, 0.9, chunk("units.to_metres", "  def to_metres(v): ...\n")),
                Hit(2, 0.5, chunk("units.describe", "x" * 1500))][:k]  # fmt: skip

    retrieval = SimpleNamespace(name="retrieve/run", k=3, mode="hybrid", search=search)
    tool = retrieval_tool(retrieval)  # type: ignore[arg-type]
    assert tool.parameters["properties"]["k"]["default"] == 3
    records = run(tool, '{"query": "metres"}')
    assert asked == [("metres", "hybrid", 3)]
    assert records[0] == {
        "rank": 1,
        "path": "geometry/units.py",
        "name": "units.to_metres",
        "lines": "4-6",
        "text": "def to_metres(v): ...",
    }
    assert len(records[1]["text"]) == 1000 and records[1]["text"].endswith("…")
    assert len(run(tool, {"query": "metres", "k": 1})) == 1 and asked[-1][2] == 1
    with pytest.raises(ToolError, match="argument 'k' must be at most 20, got 50"):
        run(tool, {"query": "metres", "k": 50})
    with pytest.raises(QuarkError, match="k=30 is out of range; allowed: 1 to 20"):
        retrieval_tool(SimpleNamespace(name="r", k=30, mode="bm25", search=search))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bm25_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real BM25-only retrieve run over SOURCES: no embedder, built in a moment."""
    directory = tmp_path_factory.mktemp("retrieve") / "run"
    corpus = Corpus(list(SOURCES), len(SOURCES))
    spec = OmegaConf.structured(IndexSchema(kind="bm25"))
    write_index(directory, corpus, chunk_corpus(corpus, None, 96, 16), None, spec, None, False)
    return directory


def test_load_index_tools_serves_a_real_runs_index_and_graph(bm25_run: Path) -> None:
    tools = {tool.name: tool for tool in load_index_tools(bm25_run, 2, "bm25")}
    assert set(tools) == {"retrieve", "graph_lookup"}
    records = run(tools["retrieve"], '{"query": "convert centimetres to metres"}')
    assert len(records) == 2 and records[0]["name"] == "geometry.units.to_metres"
    assert "value / 100" in records[0]["text"]
    circle = run(tools["graph_lookup"], '{"name": "Circle", "relation": "inherits"}')
    assert circle["inherits"] == ["geometry.shapes.Shape"]
    with pytest.raises(QuarkError, match="retrieval mode 'dense' is not one this index answers"):
        load_index_tools(bm25_run, 2, "dense")


def test_importing_the_tools_loads_no_heavy_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, quark.orchestrate.tools; "
        "print([m for m in ('torch', 'networkx', 'sentence_transformers', 'faiss') "
        "if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
