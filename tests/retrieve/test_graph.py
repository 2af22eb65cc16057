"""The code knowledge graph: definitions, typed edges resolved by scope, saved and reloaded;
the entity linker and the neighbours retrieval expands with."""

from __future__ import annotations

import re
from pathlib import Path

import networkx as nx

from quark.retrieve.chunks import chunk_document
from quark.retrieve.graph import build_graph, counts, load_graph, save_graph
from quark.retrieve.linking import EntityLinker

DOCUMENTS = [
    (
        "shop/__init__.py",
        '"""A tiny shop."""\nfrom .basket import Basket\n',
    ),
    (
        "shop/basket.py",
        '''"""Baskets of items."""
import json
from .prices import price_of, Priced


class Basket(Priced):
    """Items a customer is buying."""

    def total(self):
        """Add up the prices of the items."""
        return sum(price_of(item) for item in self.items) + self.fee()

    def fee(self):
        return 1

    def dump(self):
        return json.dumps(self.items)
''',
    ),
    (
        "shop/prices.py",
        '''"""Prices."""


class Priced:
    """Priced things."""


def price_of(item):
    """Look the item's price up."""
    return 3
''',
    ),
]


def words(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


def shop_graph() -> nx.MultiDiGraph:
    chunks = [c for path, text in DOCUMENTS for c in chunk_document(path, text, words, 200, 10)]
    return build_graph(DOCUMENTS, chunks)


def edges(graph: nx.MultiDiGraph, kind: str) -> set[tuple[str, str]]:
    return {(a, b) for a, b, data in graph.edges(data=True) if data["type"] == kind}


def test_definitions_and_edges_resolve_through_scope_and_imports() -> None:
    graph = shop_graph()
    assert graph.nodes["shop.basket.Basket.total"]["kind"] == "function"
    assert graph.nodes["shop.basket.Basket.total"]["doc"] == "Add up the prices of the items."
    assert graph.nodes["shop"]["path"] == "shop/__init__.py"
    assert graph.nodes["json"]["external"] is True
    assert edges(graph, "calls") == {
        ("shop.basket.Basket.total", "shop.prices.price_of"),  # through `from .prices import`
        ("shop.basket.Basket.total", "shop.basket.Basket.fee"),  # through self.
    }  # json.dumps is outside the corpus: no edge
    assert edges(graph, "inherits") == {("shop.basket.Basket", "shop.prices.Priced")}
    assert edges(graph, "imports") == {
        ("shop", "shop.basket"),
        ("shop.basket", "json"),
        ("shop.basket", "shop.prices"),
    }
    assert ("shop.basket.Basket", "shop.basket.Basket.dump") in edges(graph, "defines")
    assert ("doc:shop.prices.price_of", "shop.prices.price_of") in edges(graph, "documents")
    # every definition knows its chunks
    assert graph.nodes["shop.basket.Basket.fee"]["chunks"]
    assert counts(graph)["graph/edges/calls"] == 2


def test_the_graph_is_saved_as_json_and_graphml_and_reloads(tmp_path: Path) -> None:
    graph = shop_graph()
    save_graph(graph, tmp_path)
    again = load_graph(tmp_path / "graph.json")
    assert set(again.nodes) == set(graph.nodes)
    assert edges(again, "calls") == edges(graph, "calls")
    graphml = nx.read_graphml(tmp_path / "graph.graphml")
    assert graphml.nodes["shop.prices.price_of"]["kind"] == "function"
    assert graphml.number_of_edges() == graph.number_of_edges()


def test_the_linker_finds_named_code_and_not_english_words() -> None:
    linker = EntityLinker(shop_graph())
    assert linker.link("what does `Basket.total` call?") == ["shop.basket.Basket.total"]
    assert linker.link("is price_of() cached") == ["shop.prices.price_of"]
    assert linker.link("the shop.prices module") == ["shop.prices"]
    # 'total' and 'fee' as plain words are English, not references
    assert linker.link("the total fee of a basket") == []
    assert linker.along("shop.basket.Basket.total", ("calls",)) == [
        "shop.basket.Basket.fee",
        "shop.prices.price_of",
    ]
    assert linker.neighbours("shop.basket.Basket")[:1] == ["shop.basket"]  # defines first


def test_builtins_and_methods_are_not_resolved_by_bare_name(tmp_path: Path) -> None:
    documents = [
        (
            "a.py",
            "class Box:\n    def sorted(self):\n        return 1\n\ndef helper():\n    return 2\n",
        ),
        ("b.py", "def g(xs):\n    helper()\n    return sorted(xs)\n"),
    ]
    graph = build_graph(documents, [])
    # helper is the one module-level function of that name; sorted() is the builtin
    assert edges(graph, "calls") == {("b.g", "a.helper")}
