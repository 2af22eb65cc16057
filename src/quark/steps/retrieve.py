"""Step 6, retrieve: a corpus as an index a model can search, and how well it finds things.

    python launch.py step=retrieve                          # part of the standard library
    python launch.py step=retrieve data=text_files 'data.sources.0.paths=[notes/**/*.md]' step.include=[]
    python launch.py step=retrieve index=hnsw               # approximate search
    python launch.py step=retrieve index=bm25               # sparse only, no embedder
    python launch.py step=retrieve step.add_to=outputs/demo/retrieve/<time> data=text_files ...

Reads the data group's sources (the documents a data step would read; `step.include` keeps
some by path), cuts them into chunks (Python by syntax unit, other text by token windows with
overlap), embeds the chunks (`embedder`), indexes them in FAISS and BM25 (`index`), builds the
knowledge graph of the Python sources, then measures retrieval on questions made from the
corpus's docstrings: recall@k, MRR and nDCG for dense, BM25, hybrid and graph-expanded search,
side by side in the manifest and report.html. `step=serve step.retrieval.index=<this run>`
answers chat requests with what it retrieves (quark.serve.rag).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError, QuarkError, one_line
from quark.core.run import Run

log = logging.getLogger("quark")
ADD_TO_ALLOWED = "give a completed retrieve run directory"
HEADLINE = ("chunks", "hybrid/recall@10", "graph/recall@10")


@dataclass(frozen=True)
class RetrieveInputs:
    """What the step reads: the corpus's sources, the embedder's model, an index to add to."""

    sources: dict[str, Path | dict[str, Any]]
    embedder: Path | None
    add_to: Path | None
    corpus: Any = None  # the data group, or the one step.data_dir's run read
    data_run: Path | None = None

    def recorded(self) -> dict[str, Path | dict[str, Any]]:
        found: dict[str, Path | dict[str, Any]] = {"data": self.data_run} if self.data_run else {}
        found |= dict(self.sources)
        if self.embedder is not None:
            found["embedder"] = self.embedder
        if self.add_to is not None:
            found["add_to"] = self.add_to
        return found


def inputs(cfg: DictConfig) -> RetrieveInputs:
    """The sources (hashed), the embedder's directory (checked, not loaded) and the run to add
    to (verified, and built with the same embedder)."""
    from quark.core.run import verify_run
    from quark.data.sources import source_records
    from quark.retrieve.embedders import check_sentence_transformers_dir, installed_minilm

    data_run = Path(str(cfg.step.data_dir)).expanduser() if cfg.step.data_dir else None
    if data_run is not None:
        corpus_data, sources = data_run_sources(data_run)
    else:
        if cfg.data.kind != "corpus":
            raise ConfigError(
                "data", f"'{cfg.data.name}' is a generated task set, not a corpus to index",
                "data=stdlib_code (the default), text_files, jsonl, parquet or hf_dataset",
            )  # fmt: skip
        corpus_data, sources = cfg.data, source_records(cfg.data.sources)
    embedder = None
    if cfg.index.kind != "bm25":
        if cfg.embedder.kind == "quark_model":
            embedder = quark_model_dir(cfg)
        else:
            embedder = (
                Path(str(cfg.embedder.path)).expanduser()
                if cfg.embedder.path
                else installed_minilm()
            )
            check_sentence_transformers_dir(embedder)
    add_to = None
    if cfg.step.add_to:
        add_to = Path(str(cfg.step.add_to)).expanduser()
        if not add_to.is_dir():
            raise ConfigError("step.add_to", f"{add_to} is not a directory", ADD_TO_ALLOWED)
        manifest = verify_run(add_to, "step.add_to", ADD_TO_ALLOWED)
        if manifest.get("step") != "retrieve":
            raise ConfigError(
                "step.add_to", f"{add_to} is a {manifest.get('step')} run", ADD_TO_ALLOWED
            )
        built = _built_index(add_to)
        if (built["dense"] or "bm25") != str(cfg.index.kind):
            raise ConfigError(
                "index", f"{add_to} holds a {built['dense'] or 'bm25'} index and this run asks for "
                f"{cfg.index.kind}", f"index={built['dense'] or 'bm25'} (what it was built as)",
            )  # fmt: skip
    return RetrieveInputs(sources, embedder, add_to, corpus_data, data_run)


def data_run_sources(data_run: Path) -> tuple[Any, dict[str, Path | dict[str, Any]]]:
    """The sources a data run read (its config.yaml), read again here: refused unless each
    still hashes to what the run recorded, so the index holds that run's documents."""
    from omegaconf import OmegaConf

    from quark.core.run import verify_run
    from quark.core.schemas.data import SOURCE_TYPES, SourceSchema
    from quark.data.sources import source_records

    allowed = "give a completed data run of a corpus (python launch.py step=data)"
    if not data_run.is_dir():
        raise ConfigError("step.data_dir", f"{data_run} is not a directory", allowed)
    manifest = verify_run(data_run, "step.data_dir", allowed)
    if manifest.get("step") != "data":
        raise ConfigError("step.data_dir", f"{data_run} is a {manifest.get('step')} run", allowed)
    try:
        config = OmegaConf.load(data_run / "config.yaml")
        kind = config.data.get("kind")
        # each source as the schema has it: a config cut short fails here, not while reading
        sources_cfg = [OmegaConf.merge(OmegaConf.structured(SourceSchema), source)
                       for source in config.data.sources]  # fmt: skip
        unknown = [str(s.type) for s in sources_cfg if s.type not in SOURCE_TYPES]
        if unknown:
            raise ValueError(f"unknown source types {unknown}")
    except Exception as exc:  # OSError, a YAML or OmegaConf error, no data.sources
        raise ConfigError(
            "step.data_dir", f"{data_run / 'config.yaml'} is unreadable ({one_line(str(exc))})",
            allowed,
        ) from None  # fmt: skip
    if kind != "corpus":
        raise ConfigError("step.data_dir", f"{data_run} is not a data run of a corpus", allowed)
    try:
        sources = source_records(sources_cfg)
    except QuarkError as exc:  # its config.yaml names sources that are not there (now)
        raise ConfigError(
            "step.data_dir", f"the sources {data_run} read cannot be read again ({exc})", allowed
        ) from None
    recorded = {item.get("role"): item for item in manifest.get("inputs", [])}
    for role, record in sources.items():
        then = recorded.get(role, {}).get("sha256")
        now = record.get("sha256") if isinstance(record, dict) else None
        if now is not None and then is not None and now != then:
            raise ConfigError(
                "step.data_dir",
                f"{role} of {data_run} has changed since that run read it (sha256 {then[:12]}, "
                f"now {now[:12]})",
                "rerun the data step, or index the sources as they are now (leave step.data_dir out)",
            )
    return config.data, sources


def _built_index(run_dir: Path) -> dict[str, Any]:
    """index/index.json of retrieve run `run_dir` (step.add_to): what its index was built as."""
    path = run_dir / "index" / "index.json"
    try:
        built = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("step.add_to", f"{path} is unreadable ({exc})", ADD_TO_ALLOWED) from None
    if not isinstance(built, dict) or "dense" not in built:
        raise ConfigError("step.add_to", f"{path} is not a retrieve run's index", ADD_TO_ALLOWED)
    return built


def run(cfg: DictConfig, run: Run, inputs: RetrieveInputs) -> dict[str, float]:
    from quark.retrieve.building import (
        chunk_corpus,
        read_corpus,
        set_fusion,
        write_index,
    )
    from quark.retrieve.embedders import quiet_libraries
    from quark.retrieve.store import RetrievalIndex

    quiet_libraries(models=False)
    step = cfg.step
    if step.threads:
        _threads(int(step.threads))
    started = time.perf_counter()

    # 1. The documents, and the index this run adds them to.
    data = inputs.corpus
    corpus = read_corpus(data.sources, list(step.include), str(data.clean.unicode_normalization))
    earlier = RetrievalIndex.load(inputs.add_to) if inputs.add_to is not None else None
    log.info("retrieve: %d documents (%.1f MB) of %d read", len(corpus.documents),
             corpus.bytes / 1e6, corpus.read)  # fmt: skip

    # 2. The embedder (none for a BM25-only index), refused when it is not the earlier one's.
    embedder = _embedder(cfg, inputs) if inputs.embedder is not None else None
    if earlier is not None and embedder is not None:
        earlier.check_embedder(embedder, "embedder")

    # 3. Chunks, embeddings, FAISS, BM25 and the graph, written into the run.
    chunks = chunk_corpus(corpus, embedder, int(step.chunk.tokens), int(step.chunk.overlap))
    built = write_index(run.dir, corpus, chunks, embedder, cfg.index, earlier, progress=True)
    index = RetrievalIndex.load(run.dir)
    log.info("retrieve: %d chunks indexed (%d new, %d retired), modes %s",
             len(index.chunks), built.chunks_added, built.chunks_retired, ", ".join(index.modes))  # fmt: skip

    # 4. Questions from the corpus: every mode compared on the test split.
    metrics: dict[str, float] = {}
    report_tables: dict[str, tuple[list[str], list[list[Any]]]] = {}
    if step.evaluate and index.graph is not None:
        metrics, report_tables = _evaluate(cfg, run, index, embedder)
        rrf_k = metrics.get("rrf_k")
        set_fusion(run.dir, int(rrf_k) if rrf_k is not None else None, metrics.get("graph_weight"))
    elif step.evaluate:
        log.info("retrieve: no Python sources, so no generated questions; retrieval not measured")

    # 5. Outputs and the headline figures.
    for name in ("chunks.jsonl", "index", "graph"):
        if (run.dir / name).exists():
            run.add_output(name)
    index_bytes = sum(f.stat().st_size for f in (run.dir / "index").rglob("*") if f.is_file())
    live = len(index.chunks) - len(index.retired)
    metrics |= {
        "documents": float(len(corpus.documents)),
        "chunks": float(live),
        "chunks_added": float(built.chunks_added),
        "chunks_retired": float(built.chunks_retired),
        "dimension": float(embedder.dimension if embedder else 0),
        "embed_chunks_per_s": built.embed_chunks_per_s,
        "embed_s": built.embed_s,
        "index_s": built.index_s,
        "index_bytes_per_chunk": index_bytes / max(len(index.chunks), 1),
        "build_s": time.perf_counter() - started,
    }
    if index.graph is not None:
        from quark.retrieve.graph import counts

        metrics |= counts(index.graph)
    _report(run, cfg, metrics, report_tables, inputs)
    # the figures `quark runs` shows first
    return dict(sorted(metrics.items(), key=lambda item: item[0] not in HEADLINE))


def quark_model_dir(cfg: DictConfig) -> Path:
    """embedder=quark_model's model: embedder.path, else the newest finetune, else pretrain run."""
    from quark.lineage.model_files import check_weights
    from quark.lineage.models import find_model

    allowed = "give a pretrain, finetune or align run directory or a Hugging Face model directory"
    directory = find_model(cfg, "embedder.path", allowed).directory
    check_weights(directory, "embedder.path", allowed)
    return directory


def _embedder(cfg: DictConfig, inputs: RetrieveInputs) -> Any:
    from omegaconf import OmegaConf

    from quark.retrieve.embedders import load_embedder

    spec = OmegaConf.merge(cfg.embedder, {"path": str(inputs.embedder)})
    return load_embedder(spec)


def _evaluate(
    cfg: DictConfig, run: Run, index: Any, embedder: Any
) -> tuple[dict[str, float], dict[str, tuple[list[str], list[list[Any]]]]]:
    from quark.retrieve.evaluation import compare_modes
    from quark.retrieve.questions import corpus_questions

    questions = corpus_questions(index.graph)
    with open(run.path("questions.jsonl"), "w") as out:
        for question in questions:
            out.write(json.dumps(question.to_json()) + "\n")
    run.add_output("questions.jsonl")
    comparison = compare_modes(
        index, questions, list(cfg.step.modes), embedder, int(cfg.step.k), cfg.index.rrf_k
    )
    for mode, found in comparison.by_mode.items():
        log.info("retrieve: %-6s recall@1 %.3f recall@10 %.3f MRR %.3f nDCG@10 %.3f", mode,
                 found["recall@1"], found["recall@10"], found["mrr@10"], found["ndcg@10"])  # fmt: skip
    tables = {}
    counted = Counter(q.kind for q in questions if q.split == "test")
    settings = (
        f"fusion constant {comparison.rrf_k or index.rrf_k}, graph weight "
        f"{comparison.graph_weight or index.graph_weight}, picked on "
        f"{comparison.questions['val']} validation questions"
    )
    if comparison.by_mode:
        caption = (
            f"Retrieval on {comparison.questions['test']} held-out test questions ({settings})"
        )
        tables[caption] = comparison.table(comparison.by_mode)
    for kind, of_kind in comparison.by_kind.items():
        tables[f"{kind} questions only ({counted[kind]})"] = comparison.table(of_kind)
    metrics = comparison.metrics() | {
        "questions/val": float(comparison.questions["val"]),
        "questions/test": float(comparison.questions["test"]),
    }
    return metrics, tables


def _report(
    run: Run,
    cfg: DictConfig,
    metrics: dict[str, float],
    tables: dict[str, tuple[list[str], list[list[Any]]]],
    inputs: RetrieveInputs,
) -> None:
    from quark.eval.report import Report, write_html

    shown = {
        name: value
        for name, value in metrics.items()
        if "/" not in name or name.startswith("graph/")
    }
    notes = (
        []
        if tables
        else ["Retrieval not measured: the corpus has no Python sources to make questions from."]
    )
    write_html(
        run.path("report.html"),
        Report(
            title="Retrieval report",
            subtitle=f"{cfg.index.kind} index, embedder {cfg.embedder.name if inputs.embedder else 'none'}, "
            f"{int(metrics['chunks'])} chunks of {int(metrics['documents'])} documents",
            metrics=shown,
            notes=notes,
            tables=tables,
            inputs={
                role: str(path)
                for role, path in inputs.recorded().items()
                if isinstance(path, Path)
            },
        ),
    )
    run.add_output("report.html")


def _threads(threads: int) -> None:
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
