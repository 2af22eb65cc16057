"""The code knowledge graph: what Python sources define and how the pieces connect.

Nodes (networkx MultiDiGraph, keyed by qualified name): modules, classes and functions of the
corpus with their path, lines and docstring's first line; modules imported from outside the
corpus (`external`); and each docstring as a node of its own (`doc:<name>`). Typed edges:
`defines` (module -> class/function, class -> method), `imports` (module -> module),
`calls` (function -> function it calls, resolved by name), `inherits` (class -> base class),
`documents` (docstring -> what it documents). Saved as node-link JSON (what Quark reloads)
and GraphML (for Gephi, yEd or any graph database's importer).

Calls are resolved statically, by the names in scope: a method of the same class through
`self.`/`cls.`, a function or class of the same module, an imported name, else the only
module-level function or class of that bare name in the corpus (builtins excepted). Calls
through other objects' attributes (`self.parser.parse()`) and dynamic dispatch are not
followed.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.retrieve.chunks import Chunk, module_name, source_lines

if TYPE_CHECKING:
    import networkx as nx

EDGE_TYPES = ("defines", "imports", "calls", "inherits", "documents")
BUILTINS = frozenset(dir(builtins))
DEFINITIONS = ("module", "class", "function")


def build_graph(documents: Iterable[tuple[str, str]], chunks: Iterable[Chunk]) -> nx.MultiDiGraph:
    """The graph of the Python documents among (path, text), each definition node listing the
    ids (positions in `chunks`) of the chunks that hold it."""
    import networkx as nx

    graph = nx.MultiDiGraph()
    trees: list[tuple[str, str, ast.Module]] = []
    for path, text in documents:
        if not path.endswith(".py"):
            continue
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        module = module_name(path)
        trees.append((path, module, tree))
        _add(graph, module, "module", path, tree, 1, len(source_lines(text)))
        _definitions(graph, module, path, tree.body)
    # module-level classes and functions by their own name, for calls no scope resolves
    # (a method cannot be called by its bare name; builtins shadow nothing of the corpus)
    by_short: dict[str, list[str]] = defaultdict(list)
    for node, data in graph.nodes(data=True):
        parent = node.rsplit(".", 1)[0]
        if (
            data["kind"] in ("class", "function")
            and graph.nodes.get(parent, {}).get("kind") == "module"
        ):
            short = node.rsplit(".", 1)[-1]
            if short not in BUILTINS:
                by_short[short].append(node)
    for _path, module, tree in trees:
        _links(graph, module, tree, by_short)
    for index, chunk in enumerate(chunks):
        if chunk.name in graph and graph.nodes[chunk.name]["kind"] in DEFINITIONS:
            graph.nodes[chunk.name]["chunks"].append(index)
    return graph


def _add(
    graph: nx.MultiDiGraph, name: str, kind: str, path: str, node: Any, first: int, last: int
) -> None:
    doc = ast.get_docstring(node) if node is not None else None
    summary = first_sentence(doc) if doc else ""
    graph.add_node(
        name, kind=kind, path=path, start_line=first, end_line=last, doc=summary, chunks=[]
    )
    if doc:
        graph.add_node(f"doc:{name}", kind="docstring", path=path, text=doc, chunks=[])
        graph.add_edge(f"doc:{name}", name, type="documents")


def _definitions(graph: nx.MultiDiGraph, parent: str, path: str, body: list[ast.stmt]) -> None:
    for node in body:
        if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        name = f"{parent}.{node.name}"
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        _add(graph, name, kind, path, node, node.lineno, node.end_lineno or node.lineno)
        graph.add_edge(parent, name, type="defines")
        _definitions(graph, name, path, node.body)


def _links(
    graph: nx.MultiDiGraph, module: str, tree: ast.Module, by_short: dict[str, list[str]]
) -> None:
    """imports, inherits and calls edges of one module."""
    imported: dict[str, str] = {}  # a name in the module's scope -> what it refers to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                _import_edge(graph, module, alias.name)
                imported[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node.module, node.level, graph)
            if source:
                _import_edge(graph, module, source)
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{source}.{alias.name}"

    def resolve(name: str, scope: str) -> str | None:
        """The definition a (dotted) name used in `scope` refers to, if it is in the graph."""
        head, _, rest = name.partition(".")
        candidates = []
        if head in ("self", "cls") and rest:
            owner = scope.rsplit(".", 1)[0]  # the method's class
            candidates.append(f"{owner}.{rest}")
        candidates.append(f"{module}.{name}")
        if head in imported:
            candidates.append(imported[head] + (f".{rest}" if rest else ""))
        for candidate in candidates:
            if candidate in graph and graph.nodes[candidate]["kind"] in ("class", "function"):
                return candidate
        unique = by_short.get(name.rsplit(".", 1)[-1], [])
        return unique[0] if len(unique) == 1 and "." not in name else None

    def visit(body: list[ast.stmt], scope: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                name = f"{scope}.{node.name}"
                for base in node.bases:
                    target = resolve(_dotted(base), scope) if _dotted(base) else None
                    if target:
                        graph.add_edge(name, target, type="inherits")
                visit(node.body, name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{scope}.{node.name}"
                called = set()
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Call) and _dotted(inner.func):
                        target = resolve(_dotted(inner.func), name)
                        if target and target != name:
                            called.add(target)
                for target in sorted(called):
                    graph.add_edge(name, target, type="calls")
                visit(node.body, name)

    visit(tree.body, module)


def _import_edge(graph: nx.MultiDiGraph, module: str, target: str) -> None:
    if target not in graph:
        graph.add_node(target, kind="module", path="", external=True, doc="", chunks=[])
    if not graph.has_edge(module, target):
        graph.add_edge(module, target, type="imports")


def _absolute(module: str, name: str | None, level: int, graph: nx.MultiDiGraph) -> str:
    """`from .x import y` inside `module` as an absolute module name."""
    if level == 0:
        return name or ""
    package = module.split(".")
    is_package = graph.nodes[module]["path"].endswith("__init__.py")
    base = package if is_package else package[:-1]
    if level - 1 > len(base):  # beyond the top package: Python refuses it too
        return ""
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _dotted(node: ast.expr) -> str:
    """`a.b.c` for a Name or Attribute chain; '' for anything else (calls on calls...)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def first_sentence(doc: str) -> str:
    """A docstring's first sentence, on one line."""
    paragraph = doc.strip().split("\n\n", 1)[0]
    text = " ".join(paragraph.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


def save_graph(graph: nx.MultiDiGraph, directory: Path) -> list[Path]:
    """graph.json (node-link, reloaded by `load_graph`) and graph.graphml in `directory`."""
    import networkx as nx

    directory.mkdir(parents=True, exist_ok=True)
    as_json = directory / "graph.json"
    as_json.write_text(json.dumps(nx.node_link_data(graph, edges="edges")))
    # GraphML holds scalar attributes only: the chunk lists as text
    flat = graph.copy()
    for _, data in flat.nodes(data=True):
        data["chunks"] = ",".join(str(i) for i in data.get("chunks", []))
        data.setdefault("external", False)
        for key in ("path", "doc", "text"):
            data.setdefault(key, "")
        data.setdefault("start_line", 0)
        data.setdefault("end_line", 0)
    as_graphml = directory / "graph.graphml"
    nx.write_graphml(flat, as_graphml)
    return [as_json, as_graphml]


def load_graph(path: Path) -> nx.MultiDiGraph:
    import networkx as nx

    return nx.node_link_graph(
        json.loads(path.read_text()), directed=True, multigraph=True, edges="edges"
    )


def counts(graph: nx.MultiDiGraph) -> dict[str, float]:
    """Nodes per kind and edges per type, for the manifest."""
    found: dict[str, float] = defaultdict(float)
    for _, data in graph.nodes(data=True):
        found[f"graph/nodes/{data['kind']}"] += 1
    for _, _, data in graph.edges(data=True):
        found[f"graph/edges/{data['type']}"] += 1
    return dict(found)
