"""Finding the graph's nodes named in free text, and widening a ranking with their neighbours.

The linker reads identifiers in the text (dotted names, snake_case, CamelCase, `name()`) and
matches them against the graph: a qualified name exactly (`json.decoder.JSONDecoder`), its
last parts (`JSONDecoder.decode`), or a bare name when at most `max_ambiguity` definitions
carry it. Plain English words match nothing unless written as code (`dumps`, `loads()`), so
"the object" does not link to every `object`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx

IDENTIFIER = re.compile(r"`?([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(\(\))?`?")
LINKED_KINDS = ("module", "class", "function")


class EntityLinker:
    """The graph nodes a text names."""

    def __init__(self, graph: nx.MultiDiGraph, max_ambiguity: int = 3) -> None:
        self.graph = graph
        self.max_ambiguity = max_ambiguity
        self.by_suffix: dict[str, list[str]] = defaultdict(list)
        for node, data in graph.nodes(data=True):
            if data.get("kind") not in LINKED_KINDS or data.get("external"):
                continue
            parts = node.split(".")
            for start in range(len(parts)):
                self.by_suffix[".".join(parts[start:])].append(node)

    def link(self, text: str) -> list[str]:
        """Nodes named in `text`, most specific mention first, each once."""
        found: list[tuple[int, int, str]] = []
        for match in IDENTIFIER.finditer(text):
            name, called = match.group(1), bool(match.group(2))
            quoted = match.group(0).startswith("`")
            if not (called or quoted or "." in name or _looks_like_code(name)):
                continue
            candidates = self.by_suffix.get(name, [])
            if not candidates or len(candidates) > self.max_ambiguity:
                continue
            for node in candidates:
                found.append((-name.count("."), match.start(), node))
        ordered, seen = [], set()
        for _, _, node in sorted(found):
            if node not in seen:
                seen.add(node)
                ordered.append(node)
        return ordered

    def along(self, node: str, relations: tuple[str, ...]) -> list[str]:
        """Definitions at the end of `node`'s outgoing edges of the given types (what it
        calls, its bases, what it defines or imports), in name order."""
        return sorted(
            {
                other
                for _, other, data in self.graph.out_edges(node, data=True)
                if data["type"] in relations and self.graph.nodes[other].get("kind") in LINKED_KINDS
            }
        )

    def neighbours(self, node: str) -> list[str]:
        """Definitions one edge away from `node`, either direction, by edge type
        (defines, then calls and inherits, then imports)."""
        rank = {"defines": 0, "calls": 1, "inherits": 1, "imports": 2, "documents": 3}
        near: dict[str, int] = {}
        for _, other, data in self.graph.out_edges(node, data=True):
            near[other] = min(near.get(other, 9), rank.get(data["type"], 9))
        for other, _, data in self.graph.in_edges(node, data=True):
            near[other] = min(near.get(other, 9), rank.get(data["type"], 9))
        return [
            other
            for other, _ in sorted(near.items(), key=lambda item: (item[1], item[0]))
            if self.graph.nodes[other].get("kind") in LINKED_KINDS
        ]

    def chunks_of(self, node: str) -> list[int]:
        return list(self.graph.nodes[node].get("chunks", [])) if node in self.graph else []


def _looks_like_code(name: str) -> bool:
    """snake_case, CamelCase or a dunder: a word English prose would not use."""
    return "_" in name.strip("_") or name.startswith("__") or bool(re.search(r"[a-z][A-Z]", name))
