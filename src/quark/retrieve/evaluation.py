"""Retrieval measured on the corpus's own questions: every mode side by side on the test
split, the fusion constant and graph weight picked on the validation split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quark.retrieve.questions import Question, ranking_metrics

if TYPE_CHECKING:
    from quark.retrieve.embedders import Embedder
    from quark.retrieve.store import RetrievalIndex

RRF_CHOICES = (10, 30, 60, 100)
GRAPH_WEIGHTS = (0.25, 0.5, 1.0)
FUSED = ("hybrid", "graph")


@dataclass
class Comparison:
    """Metrics per mode on the test questions (all, and per kind of question), and the
    fusion settings picked on the validation questions."""

    by_mode: dict[str, dict[str, float]] = field(default_factory=dict)
    by_kind: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    rrf_k: int | None = None  # None: not picked here (the index keeps its own)
    graph_weight: float | None = None
    questions: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        flat = {
            f"{mode}/{name}": value
            for mode, found in self.by_mode.items()
            for name, value in found.items()
        }
        for kind, modes in self.by_kind.items():
            flat |= {
                f"{mode}/{kind}/{name}": value
                for mode, found in modes.items()
                for name, value in found.items()
            }
        picked = {"rrf_k": self.rrf_k, "graph_weight": self.graph_weight}
        return flat | {name: float(value) for name, value in picked.items() if value is not None}

    def table(self, found: dict[str, dict[str, float]]) -> tuple[list[str], list[list[Any]]]:
        names = list(next(iter(found.values())).keys()) if found else []
        return ["mode", *names], [[mode, *values.values()] for mode, values in found.items()]


def compare_modes(
    index: RetrievalIndex,
    questions: Sequence[Question],
    modes: Sequence[str],
    embedder: Embedder | None,
    k: int,
    fixed_rrf_k: int | None,
) -> Comparison:
    """Every mode of `modes` the index has, on the test questions."""
    val = [q for q in questions if q.split == "val"]
    test = [q for q in questions if q.split == "test"]
    comparison = Comparison(questions={"val": len(val), "test": len(test)})
    modes = [mode for mode in modes if mode in index.modes]
    vectors: dict[str, np.ndarray | None] = {"val": None, "test": None}
    if embedder is not None and any(index.uses_vectors(mode) for mode in modes):
        for split, chosen in (("val", val), ("test", test)):
            vectors[split] = embedder.encode([q.question for q in chosen]) if chosen else None
    val_texts, test_texts = [q.question for q in val], [q.question for q in test]
    k = max(k, 10)  # the metrics read rankings 10 deep
    comparison.rrf_k = fixed_rrf_k
    if fixed_rrf_k is None and val and any(mode in FUSED for mode in modes):
        fused_mode = "hybrid" if "hybrid" in index.modes else "graph"

        def val_mrr(constant: int) -> float:
            ranked = _ids(
                index.search_batch(val_texts, fused_mode, k, vectors["val"], rrf_k=constant)
            )
            return ranking_metrics(ranked, val)["mrr@10"]

        comparison.rrf_k = max(RRF_CHOICES, key=lambda c: (val_mrr(c), -c))
    if "graph" in modes and val:

        def graph_mrr(weight: float) -> float:
            ranked = _ids(index.search_batch(val_texts, "graph", k, vectors["val"],
                                             rrf_k=comparison.rrf_k, graph_weight=weight))  # fmt: skip
            return ranking_metrics(ranked, val)["mrr@10"]

        comparison.graph_weight = max(GRAPH_WEIGHTS, key=lambda w: (graph_mrr(w), -w))
    if not test:
        return comparison
    kinds = sorted({q.kind for q in test})
    for mode in modes:
        hits = index.search_batch(test_texts, mode, k, vectors["test"], rrf_k=comparison.rrf_k,
                                  graph_weight=comparison.graph_weight)  # fmt: skip
        ranked = _ids(hits)
        comparison.by_mode[mode] = ranking_metrics(ranked, test)
        for kind in kinds:
            members = [i for i, q in enumerate(test) if q.kind == kind]
            comparison.by_kind.setdefault(kind, {})[mode] = ranking_metrics(
                [ranked[i] for i in members], [test[i] for i in members]
            )
    return comparison


def _ids(hits: list[list[Any]]) -> list[list[int]]:
    return [[hit.chunk_id for hit in row] for row in hits]
