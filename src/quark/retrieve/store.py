"""A retrieve run's index on disk, and search over it in four modes.

    chunks.jsonl          the chunk table: a chunk's id is its line number (0-based)
    index/index.json      what was built: dense kind and parameters, the embedder's
                          fingerprint, chunk count, retired chunks (superseded by a later add)
    index/dense.faiss     the FAISS index (flat, HNSW or IVF-PQ), inner product on unit vectors
    index/bm25/           the BM25 index (bm25s) over identifier-aware terms
    graph/graph.json      the code knowledge graph (quark.retrieve.graph), when the corpus has
                          Python sources

Modes: `dense` (the embedder and FAISS), `bm25`, `hybrid` (both fused by reciprocal rank),
`graph` (hybrid fused with the chunks of the graph nodes the query names and of the
neighbours of those nodes and of the top hits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quark.core.errors import ConfigError, QuarkError
from quark.retrieve.chunks import Chunk

if TYPE_CHECKING:
    from quark.retrieve.embedders import Embedder

MODES = ("dense", "bm25", "hybrid", "graph")
DENSE_KINDS = ("flat", "hnsw", "ivfpq")
WORD = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|[0-9]+")
TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
# the top hits whose units' neighbours the graph mode adds
EXPANDED_HITS = 3
# the weight in the graph mode's fusion of the units along the edges a query asks about: a
# question that names a unit and a relation is answered by the graph more surely than by text
ALONG_WEIGHT = 3.0
# words of a query that ask about one kind of edge
RELATION_CUES = {
    "calls": ("call", "invoke", "use"),  # whole words: not "recall", "because"
    "inherits": ("inherit", "base", "subclass", "parent", "derive"),
    "imports": ("import", "depend"),
    "defines": ("define", "method", "member", "contain"),
}


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float
    chunk: Chunk

    def to_json(self) -> dict[str, Any]:
        return {"id": self.chunk_id, "score": self.score, "title": self.chunk.title,
                **self.chunk.to_json()}  # fmt: skip


def terms(text: str) -> list[str]:
    """BM25's terms: each identifier whole and in its snake_case and CamelCase parts,
    lower-cased (`JSONDecoder.raw_decode` -> jsondecoder, json, decoder, raw_decode, raw,
    decode), so a question in words finds code by its names."""
    found = []
    for token in TERM.findall(text):
        lowered = token.lower()
        if len(lowered) > 1:
            found.append(lowered)
        parts = [part.lower() for piece in token.split("_") for part in WORD.findall(piece)]
        if len(parts) > 1:
            found.extend(part for part in parts if len(part) > 1)
    return found


def new_dense_index(kind: str, dimension: int, spec: Any, training: np.ndarray) -> Any:
    """An empty FAISS index of `kind` over inner products (cosine on unit vectors); IVF-PQ
    trained on `training`."""
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dimension)
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dimension, int(spec.hnsw.m), faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = int(spec.hnsw.ef_construction)
        hnsw.hnsw.efSearch = int(spec.hnsw.ef_search)
        return hnsw
    if kind == "ivfpq":
        subquantizers, bits = int(spec.ivfpq.m), int(spec.ivfpq.nbits)
        if dimension % subquantizers:
            raise ConfigError(
                "index.ivfpq.m",
                f"{subquantizers} does not divide the embedder's {dimension} dimensions",
                f"allowed: a divisor of {dimension}, e.g. 8, 16, 32",
            )
        count = len(training)
        nlist = int(spec.ivfpq.nlist or max(1, min(int(4 * count**0.5), count // 39)))
        needed = max(nlist, 2**bits)
        if count < needed:
            raise ConfigError(
                "index",
                f"ivfpq needs at least {needed} chunks to train ({nlist} lists, {2**bits} "
                f"codes per subquantizer) and the corpus has {count}",
                "use index=flat or index=hnsw, or lower index.ivfpq.nbits / index.ivfpq.nlist",
            )
        quantizer = faiss.IndexFlatIP(dimension)
        ivfpq = faiss.IndexIVFPQ(
            quantizer, dimension, nlist, subquantizers, bits, faiss.METRIC_INNER_PRODUCT
        )
        # faiss warns (on stderr, once per subquantizer) below 39 points a centroid; the
        # hard minimum is checked above, the recall cost of fewer points is measured in bench/
        ivfpq.cp.min_points_per_centroid = 1
        ivfpq.pq.cp.min_points_per_centroid = 1
        ivfpq.train(training)
        ivfpq.nprobe = min(int(spec.ivfpq.nprobe), nlist)
        return ivfpq
    raise ConfigError("index.kind", f"'{kind}' is not a dense index", f"allowed: {DENSE_KINDS}")


def bm25s_module() -> Any:
    """bm25s, its logger (set to DEBUG when imported) back at WARNING."""
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def build_bm25(chunks: Sequence[Chunk], k1: float, b: float) -> Any:
    bm25s = bm25s_module()
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(
        [terms(chunk.embedded_text()) or ["_"] for chunk in chunks], show_progress=False
    )
    return retriever


class RetrievalIndex:
    """A retrieve run's chunks, indexes and graph, loaded for search."""

    def __init__(
        self,
        directory: Path,
        meta: dict[str, Any],
        chunks: list[Chunk],
        dense: Any,
        bm25: Any,
        graph: Any,
    ) -> None:
        from quark.retrieve.linking import EntityLinker

        self.directory, self.meta, self.chunks = directory, meta, chunks
        self.dense, self.bm25, self.graph = dense, bm25, graph
        self.retired = set(meta.get("retired", []))
        self.linker = EntityLinker(graph) if graph is not None else None
        self.rrf_k = int(meta.get("rrf_k", 60))
        self.graph_weight = float(meta.get("graph_weight", 0.25))

    @property
    def modes(self) -> list[str]:
        """The modes this index answers."""
        found = ["bm25"]
        if self.dense is not None:
            found[:0] = ["dense"]
            found.append("hybrid")
        if self.graph is not None:
            found.append("graph")
        return found

    def uses_vectors(self, mode: str) -> bool:
        """Whether `mode` searches the dense index (graph does when there is one)."""
        return mode in ("dense", "hybrid") or (mode == "graph" and self.dense is not None)

    @property
    def embedder_record(self) -> dict[str, Any] | None:
        return self.meta.get("embedder")

    @classmethod
    def load(cls, directory: Path) -> RetrievalIndex:
        """The index in a retrieve run (verified against its manifest by the caller)."""
        bm25s = bm25s_module()

        meta_file = directory / "index" / "index.json"
        if not meta_file.is_file():
            raise QuarkError(f"{directory}: not a retrieve run (no index/index.json)")
        meta = json.loads(meta_file.read_text())
        chunks = [
            Chunk.from_json(json.loads(line))
            for line in (directory / "chunks.jsonl").read_text().splitlines()
        ]
        dense: Any = None
        if meta.get("dense"):
            import faiss

            dense = faiss.read_index(str(directory / "index" / "dense.faiss"))
            if meta["dense"] == "hnsw":
                dense.hnsw.efSearch = int(meta["params"]["ef_search"])
            if meta["dense"] == "ivfpq":
                dense.nprobe = int(meta["params"]["nprobe"])
        bm25 = bm25s.BM25.load(str(directory / "index" / "bm25"))
        graph = None
        if (directory / "graph" / "graph.json").is_file():
            from quark.retrieve.graph import load_graph

            graph = load_graph(directory / "graph" / "graph.json")
        return cls(directory, meta, chunks, dense, bm25, graph)

    def check_embedder(self, embedder: Embedder, key: str = "embedder") -> None:
        """Refuse a query embedder other than the one the index was built with."""
        built = self.embedder_record
        if built is None:
            raise ConfigError(
                key, f"{self.directory} is a BM25-only index: it has no dense vectors",
                "query it in mode bm25 (or graph), or rebuild it with a dense index",
            )  # fmt: skip
        if built["dimension"] != embedder.dimension or built["fingerprint"] != embedder.fingerprint:
            raise ConfigError(
                key,
                f"the index in {self.directory} was built with the {built['kind']} embedder at "
                f"{built['path']} ({built['dimension']} dimensions, fingerprint "
                f"{built['fingerprint'][:12]}), and the query embedder is {embedder.kind} at "
                f"{embedder.path} ({embedder.dimension} dimensions, fingerprint "
                f"{embedder.fingerprint[:12]})",
                "query with the embedder that built the index, or rebuild the index",
            )

    def search(self, query: str, mode: str, k: int, embedder: Embedder | None = None) -> list[Hit]:
        """The `k` best chunks for `query` in `mode`, best first."""
        if mode not in self.modes:
            raise ConfigError(
                "mode", f"'{mode}' is not a mode of this index", f"allowed: {self.modes}"
            )
        vector = None
        if self.uses_vectors(mode):
            if embedder is None:
                raise ValueError("dense, hybrid and graph search need the embedder")
            vector = embedder.encode([query])
        return self.search_batch([query], mode, k, vectors=vector)[0]

    def search_batch(
        self, queries: Sequence[str], mode: str, k: int, vectors: np.ndarray | None = None,
        rrf_k: int | None = None, graph_weight: float | None = None,
    ) -> list[list[Hit]]:  # fmt: skip
        """`search` for many queries at once; `vectors` their embeddings (not for bm25);
        `rrf_k` and `graph_weight` in place of the index's own (tuning)."""
        depth = k + len(self.retired)
        fuse = self.rrf_k if rrf_k is None else rrf_k
        weight = self.graph_weight if graph_weight is None else graph_weight
        # each retriever's ranking of every query: (chunk id, its own score), best first
        lists: list[list[list[tuple[int, float]]]] = []
        if self.uses_vectors(mode):
            assert vectors is not None
            query_vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            scores, found = self.dense.search(query_vectors, min(depth * 2, len(self.chunks)))
            lists.append(
                [
                    [(int(i), float(s)) for i, s in zip(ids, row, strict=True) if i >= 0]
                    for ids, row in zip(found, scores, strict=True)
                ]
            )
        if mode in ("bm25", "hybrid", "graph"):
            lists.append(self._bm25(queries, depth * 2))
        results = []
        for row, query in enumerate(queries):
            rankings = [[chunk_id for chunk_id, _ in ranking[row]] for ranking in lists]
            weights = [1.0] * len(rankings)
            if mode == "graph":
                live = [i for i in fused(rankings, fuse) if i not in self.retired]
                top = live[:EXPANDED_HITS]
                along, named, around = self._graph_rankings(query, top)
                rankings += [along, named, around]
                weights += [ALONG_WEIGHT, 1.0, weight]
            scored = fused_scores(rankings, fuse, weights) if len(rankings) > 1 else lists[0][row]
            hits = [
                Hit(chunk_id, score, self.chunks[chunk_id])
                for chunk_id, score in scored
                if chunk_id not in self.retired
            ]
            results.append(hits[:k])
        return results

    def _bm25(self, queries: Sequence[str], depth: int) -> list[list[tuple[int, float]]]:
        ranked: list[list[tuple[int, float]]] = []
        for query in queries:
            query_terms = terms(query)
            if not query_terms:
                ranked.append([])
                continue
            found, scores = self.bm25.retrieve(
                [query_terms], k=min(depth, len(self.chunks)), show_progress=False, n_threads=1
            )
            ranked.append(
                [(int(i), float(s)) for i, s in zip(found[0], scores[0], strict=True) if s > 0]
            )
        return ranked

    def _graph_rankings(self, query: str, top: list[int]) -> tuple[list[int], list[int], list[int]]:
        """Three rankings from the graph: the chunks at the other end of the edges the query
        asks about ("what does `X` call" -> what X calls) from the nodes it names; the chunks
        of those nodes; and the chunks of every other neighbour of them and of the top hits'
        units."""
        assert self.linker is not None
        named = self.linker.link(query)
        units = [self.chunks[i].name for i in top if self.chunks[i].name in self.graph]
        asked = asked_relations(query)
        along: list[int] = []
        for node in named:
            for other in self.linker.along(node, asked):
                along += self.linker.chunks_of(other)
        mentioned: list[int] = []
        for node in named:
            mentioned += self.linker.chunks_of(node)
        around: list[int] = []
        for node in [*named, *units]:
            for other in self.linker.neighbours(node):
                around += self.linker.chunks_of(other)
        along, mentioned = _unique(along), _unique(mentioned)
        taken = set(along) | set(mentioned)
        return (
            along,
            [i for i in mentioned if i not in set(along)],
            [i for i in _unique(around) if i not in taken],
        )


def asked_relations(query: str) -> tuple[str, ...]:
    """The edge types a query's words ask about."""
    words = set(re.findall(r"[a-z]+", query.lower()))
    asked = []
    for relation, cues in RELATION_CUES.items():
        # a cue and its inflections: call, calls, called, calling
        if any(
            word.startswith(cue) and len(word) <= len(cue) + 3 for cue in cues for word in words
        ):
            asked.append(relation)
    return tuple(asked)


def _unique(ids: list[int]) -> list[int]:
    seen: set[int] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


def fused_scores(
    rankings: Sequence[Sequence[int]], rrf_k: int, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion (Cormack et al. 2009): sum over rankings of
    weight / (rrf_k + rank)."""
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def fused(rankings: Sequence[Sequence[int]], rrf_k: int) -> list[int]:
    return [chunk_id for chunk_id, _ in fused_scores(rankings, rrf_k)]
