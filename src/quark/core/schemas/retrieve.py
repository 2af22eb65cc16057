"""Schemas of the retrieval groups: `embedder`, `index`, and conf/step/retrieve.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

EMBEDDERS = ("sentence_transformers", "quark_model")
INDEX_KINDS = ("flat", "hnsw", "ivfpq", "bm25")
MODES = ("dense", "bm25", "hybrid", "graph")


@dataclass
class EmbedderSchema:
    name: str = "minilm"
    # sentence_transformers: a sentence-transformers directory (null: the installed
    # all-MiniLM-L6-v2); quark_model: a causal LM's mean-pooled hidden states
    kind: str = choice("sentence_transformers", EMBEDDERS)
    # sentence_transformers: a local directory (null: the installed all-MiniLM-L6-v2);
    # quark_model: a pretrain, finetune or align run, or an HF model directory (null: the
    # newest finetune, else pretrain run of the experiment)
    path: str | None = None
    batch_size: int = ranged(64, ge=1)
    # tokens the embedder reads of a text (longer texts are truncated by it, so chunks are cut
    # to fit); null: the model's own limit
    max_tokens: int | None = ranged(None, ge=8)
    device: str = choice("cpu", ("cpu", "cuda"))


@dataclass
class HnswSchema:
    m: int = ranged(32, ge=2)  # neighbours per node
    ef_construction: int = ranged(200, ge=1)
    ef_search: int = ranged(64, ge=1)


@dataclass
class IvfPqSchema:
    # inverted lists; null: about 4 sqrt(chunks)
    nlist: int | None = ranged(None, ge=1)
    m: int = ranged(16, ge=1)  # subquantizers: must divide the embedding's dimensions
    nbits: int = ranged(8, ge=1, le=16)  # bits per subquantizer code
    nprobe: int = ranged(16, ge=1)  # lists searched per query


@dataclass
class Bm25Schema:
    k1: float = ranged(1.5, ge=0)
    b: float = ranged(0.75, ge=0, le=1)


@dataclass
class IndexSchema:
    name: str = "flat"
    # flat (exact), hnsw, ivfpq: a FAISS index of the embeddings, with BM25 beside it (modes
    # dense, bm25, hybrid, graph); bm25: sparse only, no embedder
    kind: str = choice("flat", INDEX_KINDS)
    hnsw: HnswSchema = field(default_factory=HnswSchema)
    ivfpq: IvfPqSchema = field(default_factory=IvfPqSchema)
    bm25: Bm25Schema = field(default_factory=Bm25Schema)
    # the hybrid and graph modes' reciprocal rank fusion constant; null: picked on the
    # validation questions among 10, 30, 60, 100
    rrf_k: int | None = ranged(None, ge=1)
    # a knowledge graph of the corpus's Python sources
    graph: bool = True


@dataclass
class ChunkSchema:
    tokens: int = ranged(256, ge=8)  # a chunk's most tokens (the embedder's tokens)
    overlap: int = ranged(32, ge=0)  # tokens shared by neighbouring windows


@dataclass
class RetrieveStepSchema:
    name: str = "retrieve"
    # a data run of a corpus: index the documents it read (its sources, checked against the
    # hashes it recorded); null: the data group's sources
    data_dir: str | None = None
    # document ids (a file's path, relative for the standard library) to keep, as globs; []:
    # every document of the data group's sources
    include: list[str] = field(default_factory=list)
    chunk: ChunkSchema = field(default_factory=ChunkSchema)
    # a retrieve run to add this corpus to: its chunks stay, a document's changed chunks are
    # retired, new ones are added to its index (no rebuild); null: build a new index
    add_to: str | None = None
    # the generated question set: retrieval compared across modes on its test split
    evaluate: bool = True
    modes: list[str] = field(default_factory=lambda: list(MODES))
    k: int = ranged(10, ge=1)  # the ranking depth the metrics read
    threads: int | None = ranged(None, ge=1)

    def check(self) -> None:
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown:
            raise ConfigError(
                "step.modes", f"{unknown} are not retrieval modes", f"allowed: {', '.join(MODES)}"
            )
        if self.chunk.overlap >= self.chunk.tokens:
            raise ConfigError(
                "step.chunk.overlap",
                f"{self.chunk.overlap} is not less than step.chunk.tokens ({self.chunk.tokens})",
                "allowed: 0 <= overlap < tokens",
            )
