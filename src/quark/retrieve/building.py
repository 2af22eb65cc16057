"""Making a retrieve run's index: documents to chunks, chunks to vectors, both to indexes,
written in the layout `quark.retrieve.store` loads; and adding to an earlier run's index."""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quark.core.errors import ConfigError, QuarkError
from quark.retrieve.chunks import Chunk, chunk_document

if TYPE_CHECKING:
    from quark.retrieve.embedders import Embedder
    from quark.retrieve.store import RetrievalIndex

log = logging.getLogger("quark")
WHITESPACE_TOKENS = r"\S+"
# tokens kept free in the embedder's window for a chunk's title and special tokens
TITLE_TOKENS = 40


@dataclass
class Corpus:
    """The documents read for the index: (id, text) in source order."""

    documents: list[tuple[str, str]] = field(default_factory=list)
    read: int = 0  # documents the sources gave, before step.include

    @property
    def bytes(self) -> int:
        return sum(len(text.encode("utf-8")) for _, text in self.documents)


def read_corpus(sources: Sequence[Any], include: Sequence[str], normalization: str) -> Corpus:
    """The data group's sources (quark.data.sources), normalised as the data step does, the
    documents whose id matches an `include` glob (all when it is empty)."""
    from quark.data.cleaning import normalize
    from quark.data.sources import SourceStats, read_source

    corpus = Corpus()
    for index, source in enumerate(sources):
        stats = SourceStats(name=f"data.sources.{index}")
        for doc in read_source(source, stats):
            corpus.read += 1
            if include and not any(fnmatch.fnmatch(doc.id, pattern) for pattern in include):
                continue
            text = normalize(doc.text, normalization)
            if text.strip():
                corpus.documents.append((doc.id, text))
    if not corpus.documents:
        what = f"none of the {corpus.read} documents read matches step.include={list(include)}"
        raise QuarkError(
            f"data.sources: empty corpus ({what if corpus.read else 'no documents read'}); "
            "name documents that exist (step.include=[] keeps every one)"
        )
    return corpus


def chunk_corpus(
    corpus: Corpus, embedder: Embedder | None, tokens: int, overlap: int
) -> list[Chunk]:
    """Every document's chunks, windows counted in the embedder's tokens (whitespace-separated
    words for a BM25-only index). A window leaves room for the title the embedder reads first."""
    import re

    if embedder is not None:
        count = embedder.token_spans
        # room for the title the embedder reads first (up to about 30 tokens) and its
        # special tokens, so that no window's end is truncated away
        window = min(tokens, embedder.max_tokens - TITLE_TOKENS)
        if window < 8:
            raise ConfigError(
                "embedder.max_tokens",
                f"{embedder.max_tokens} leaves no room for a chunk after its title "
                f"({TITLE_TOKENS} tokens)",
                f"allowed: at least {TITLE_TOKENS + 8}",
            )
    else:
        pattern = re.compile(WHITESPACE_TOKENS)

        def count(text: str) -> list[tuple[int, int]]:
            return [match.span() for match in pattern.finditer(text)]

        window = tokens
    chunks: list[Chunk] = []
    for path, text in corpus.documents:
        chunks += chunk_document(path, text, count, window, min(overlap, window - 1))
    return chunks


@dataclass
class Built:
    """What building measured."""

    chunks_added: int
    chunks_kept: int
    chunks_retired: int
    embed_s: float
    index_s: float
    embed_chunks_per_s: float


def write_index(
    directory: Path,
    corpus: Corpus,
    chunks: list[Chunk],
    embedder: Embedder | None,
    spec: Any,
    earlier: RetrievalIndex | None,
    progress: bool,
) -> Built:
    """Write chunks.jsonl, index/ and graph/ into `directory`: a new index, or `earlier`'s with
    this corpus added (its chunks kept, the chunks of a document given again retired when its
    text changed, chunks it already holds not embedded again)."""
    from quark.retrieve.graph import build_graph, save_graph
    from quark.retrieve.store import build_bm25, new_dense_index

    all_chunks, retired = (
        list(earlier.chunks) if earlier else [],
        set(earlier.retired if earlier else ()),
    )
    kept = len(all_chunks)
    if earlier is not None:
        # a chunk is known only when everything about it is the same: text, name, kind and
        # spans (text that moved, or a renamed unit, is embedded again with its new title)
        live = {chunk: i for i, chunk in enumerate(all_chunks) if i not in retired}
        given = {path for path, _ in corpus.documents}
        fresh = [chunk for chunk in chunks if chunk not in live]
        current = set(chunks)
        retired |= {i for chunk, i in live.items() if chunk.path in given and chunk not in current}
    else:
        fresh = chunks
    all_chunks += fresh

    # 1. Embeddings of the new chunks, and the dense index they go into.
    embed_s = index_s = 0.0
    dense = earlier.dense if earlier is not None else None
    rate = 0.0
    if embedder is not None:
        started = time.perf_counter()
        vectors = (
            embedder.encode([c.embedded_text() for c in fresh], progress=progress)
            if fresh
            else np.zeros((0, embedder.dimension), dtype=np.float32)
        )
        embed_s = time.perf_counter() - started
        rate = len(fresh) / embed_s if fresh and embed_s > 0 else 0.0
        started = time.perf_counter()
        if dense is None:
            dense = new_dense_index(str(spec.kind), embedder.dimension, spec, vectors)
        if len(vectors):
            dense.add(vectors)
        index_s = time.perf_counter() - started
    # 2. BM25 over every chunk (bm25s has no incremental add; rebuilding it takes seconds).
    started = time.perf_counter()
    bm25 = build_bm25(all_chunks, float(spec.bm25.k1), float(spec.bm25.b))
    index_s += time.perf_counter() - started

    # 3. The files.
    (directory / "index").mkdir(parents=True, exist_ok=True)
    with open(directory / "chunks.jsonl", "w") as out:
        for chunk in all_chunks:
            out.write(json.dumps(chunk.to_json()) + "\n")
    if dense is not None:
        import faiss

        faiss.write_index(dense, str(directory / "index" / "dense.faiss"))
    bm25.save(str(directory / "index" / "bm25"))
    meta = {
        "dense": None if embedder is None else str(spec.kind),
        "params": _params(spec),
        "embedder": None if embedder is None else embedder.describe(),
        "chunks": len(all_chunks),
        "retired": sorted(retired),
        # an add keeps the earlier run's tuned fusion until this run tunes its own; a new
        # index starts at 60 and a quarter weight for the top hits' neighbours
        "rrf_k": int(spec.rrf_k or (earlier.rrf_k if earlier is not None else 60)),
        "graph_weight": earlier.graph_weight if earlier is not None else 0.25,
        "added_to": str(earlier.directory) if earlier is not None else None,
    }
    (directory / "index" / "index.json").write_text(json.dumps(meta, indent=2) + "\n")
    sources = _graph_documents(corpus, earlier)
    if spec.graph and any(path.endswith(".py") for path, _ in sources):
        graph = build_graph(sources, all_chunks)
        for node in list(graph.nodes):
            chunk_ids = graph.nodes[node].get("chunks", [])
            graph.nodes[node]["chunks"] = [i for i in chunk_ids if i not in retired]
        if graph.number_of_nodes():  # none when no Python source parsed
            save_graph(graph, directory / "graph")
            _save_graph_sources(directory, corpus, earlier)
    return Built(len(fresh), kept, len(retired), embed_s, index_s, rate)


def set_fusion(directory: Path, rrf_k: int | None, graph_weight: float | None) -> None:
    """Record the fusion settings the evaluation picked (those it did not pick stay)."""
    meta_file = directory / "index" / "index.json"
    meta = json.loads(meta_file.read_text())
    if rrf_k is not None:
        meta["rrf_k"] = int(rrf_k)
    if graph_weight is not None:
        meta["graph_weight"] = float(graph_weight)
    meta_file.write_text(json.dumps(meta, indent=2) + "\n")


def _graph_documents(corpus: Corpus, earlier: RetrievalIndex | None) -> list[tuple[str, str]]:
    """The Python documents the graph is built from: this corpus's, and an earlier run's that
    this corpus does not give again (kept as it stored them in graph/sources.jsonl)."""
    documents = list(corpus.documents)
    if earlier is not None:
        given = {path for path, _ in documents}
        stored = earlier.directory / "graph" / "sources.jsonl"
        if stored.is_file():
            for line in stored.read_text().splitlines():
                record = json.loads(line)
                if record["path"] not in given:
                    documents.append((record["path"], record["text"]))
    return documents


def _save_graph_sources(directory: Path, corpus: Corpus, earlier: RetrievalIndex | None) -> None:
    """The Python sources behind the graph, so a later add can rebuild it whole."""
    with open(directory / "graph" / "sources.jsonl", "w") as out:
        for path, text in _graph_documents(corpus, earlier):
            if path.endswith(".py"):
                out.write(json.dumps({"path": path, "text": text}) + "\n")


def _params(spec: Any) -> dict[str, Any]:
    if spec.kind == "hnsw":
        return {"m": int(spec.hnsw.m), "ef_construction": int(spec.hnsw.ef_construction),
                "ef_search": int(spec.hnsw.ef_search)}  # fmt: skip
    if spec.kind == "ivfpq":
        return {"nlist": spec.ivfpq.nlist, "m": int(spec.ivfpq.m), "nbits": int(spec.ivfpq.nbits),
                "nprobe": int(spec.ivfpq.nprobe)}  # fmt: skip
    return {}
