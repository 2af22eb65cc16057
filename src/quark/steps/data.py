"""Step 2, data: raw sources to packed token shards, a tokenizer and a data card; or a
generated task set.

    python launch.py step=data                                   # the standard library's code
    python launch.py step=data data=text_files data.sources.0.paths='[corpus/**/*.md]'
    python launch.py step=data data=arithmetic_sft

A corpus goes through four stages, streamed so memory does not grow with the corpus:
read and clean each source, drop exact and near duplicates, train (or reuse) a byte-level BPE
tokenizer on what is kept, then tokenize and pack into shards split train/val by document.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError, QuarkError
from quark.core.files import files_under
from quark.core.run import Run
from quark.data.card import write_card
from quark.data.cleaning import normalize, rejection
from quark.data.dedup import Deduplicator
from quark.data.sources import SourceStats, read_source, source_records
from quark.safety.guard import build_guard, classifier_dir

TASK_KINDS = ("arithmetic_sft", "arithmetic_prefs", "safety_requests", "rag_qa")


@dataclass(frozen=True)
class DataInputs:
    """What the data step reads: each source's files (one hashed corpus record, or a saved
    dataset's directory, by its key data.sources.N) and a reused tokenizer; nothing for a
    generated task set."""

    sources: dict[str, Path | dict[str, Any]]
    tokenizer: Path | None
    classifier: Path | None = None  # safety=classifier's model
    retrieval: Path | None = None  # data=rag_qa's retrieve run

    def recorded(self) -> dict[str, Path | dict[str, Any]]:
        found = self.sources | ({"tokenizer": self.tokenizer} if self.tokenizer else {})
        found |= {"retrieval_index": self.retrieval} if self.retrieval else {}
        return found | ({"safety_classifier": self.classifier} if self.classifier else {})


def inputs(cfg: DictConfig) -> DataInputs:
    if cfg.data.kind == "rag_qa":
        return DataInputs({}, None, retrieval=_rag_index(cfg))
    if cfg.data.kind in TASK_KINDS:
        return DataInputs({}, None)
    found = source_records(cfg.data.sources)
    tokenizer = None
    if cfg.data.tokenizer.path:
        from quark.data.tokenizer import load_tokenizer

        load_tokenizer(str(cfg.data.tokenizer.path))  # a clear error now if it is not one
        tokenizer = Path(str(cfg.data.tokenizer.path)).expanduser()
    return DataInputs(found, tokenizer, classifier_dir(cfg))


def run(cfg: DictConfig, run: Run, inputs: DataInputs) -> dict[str, float]:
    if cfg.data.kind in TASK_KINDS:
        return _task_set(cfg, run, inputs.retrieval)
    data = cfg.data
    os.environ["RAYON_NUM_THREADS"] = str(data.pack.workers)  # read when tokenizers starts its pool
    work = run.path("work", "kept.jsonl")

    # 1-2. Read, normalise, filter and deduplicate every source; keep what passes, streamed.
    removed = {
        rule: 0
        for rule in (
            "too_short",
            "too_long",
            "undecodable",
            "nonprintable",
            "exact_duplicate",
            "near_duplicate",
        )
    }
    dedup = Deduplicator(data.dedup)
    # safety=rules or classifier: documents the guard blocks are dropped (removed["unsafe"]) or kept and
    # counted (safety.data=flag); either way counted per category for the card
    guard = build_guard(cfg.get("safety"), inputs.classifier)
    action = str(cfg.safety.data) if guard is not None else None
    flagged: dict[str, int] = {}
    if guard is not None and action == "drop":
        removed["unsafe"] = 0
    stats: list[SourceStats] = []
    kept = 0
    with open(work, "w") as out:
        for index, source in enumerate(data.sources):
            source_stats = SourceStats(name=f"data.sources.{index}")
            stats.append(source_stats)
            for doc in read_source(source, source_stats):
                text = normalize(doc.text, str(data.clean.unicode_normalization))
                reason = rejection(text, doc.undecodable_bytes, data.clean)
                if not reason and guard is not None:
                    categories = {f.category for f in guard.check_document(text)}
                    for category in categories:
                        flagged[category] = flagged.get(category, 0) + 1
                    reason = "unsafe" if categories and action == "drop" else None
                reason = reason or dedup.duplicate_of(text)
                if reason:
                    removed[reason] += 1
                    continue
                out.write(
                    json.dumps({"source": index, "id": f"{index}:{doc.id}", "text": text}) + "\n"
                )
                kept += 1
            if source_stats.documents == 0:
                raise QuarkError(
                    f"data.sources.{index}: empty corpus (no documents read from {source.type})"
                )
    documents_in = sum(s.documents for s in stats)
    if kept == 0:
        rules = ", ".join(f"{rule}={count}" for rule, count in removed.items() if count)
        raise QuarkError(
            f"data.clean: every one of {documents_in} documents was filtered out ({rules}); loosen data.clean or data.dedup"
        )

    # 3. Tokenizer: trained on the kept documents, or reused, saved in Hugging Face format.
    tokenizer, eos_token, origin = _tokenizer(data, work, run, cfg)
    from quark.data.tokenizer import token_id

    eos_id = token_id(tokenizer, eos_token, "data.tokenizer.eos_token")
    vocab_size = tokenizer.get_vocab_size()

    # 4. Tokenize and pack, applying each source's mixing weight; split by document.
    from quark.data.packing import TokenShardWriter

    writer = TokenShardWriter(
        run.path("shards", "index.json").parent,
        tokenizer,
        eos_id,
        vocab_size,
        data.pack,
        int(cfg.seed),
    )
    weights = [float(s.weight) for s in data.sources]
    rng = random.Random(int(cfg.seed))
    packed = 0
    for record in _kept(work):
        weight = weights[record["source"]]
        copies = int(weight) + (1 if rng.random() < weight - int(weight) else 0)
        for _ in range(copies):
            writer.add(record["id"], record["text"])
            packed += 1
    shard_index = writer.close()
    run.add_output("shards")
    shutil.rmtree(run.dir / "work")
    if shard_index["splits"]["train"]["tokens"] == 0:
        raise QuarkError(
            "data.pack: no training tokens (every document went to validation, or mixing weights dropped them all)"
        )

    # 5. Data card.
    card = {
        "name": str(data.name),
        "notes": _notes(data),
        "sources": [
            {
                "name": s.name,
                "type": str(src.type),
                "weight": float(src.weight),
                "files": len(s.files),
                "documents": s.documents,
                "bytes": s.bytes,
                "undecodable_bytes": s.undecodable_bytes,
            }
            for s, src in zip(stats, data.sources, strict=True)
        ],
        "documents": {"in": documents_in, "kept": kept, "packed": packed},
        "bytes_in": sum(s.bytes for s in stats),
        "removed": removed,
        **(
            {"safety": {"guard": str(cfg.safety.name), "action": action, "documents": flagged}}
            if guard is not None
            else {}
        ),
        "tokenizer": {
            "origin": origin,
            "vocab_size": vocab_size,
            "eos_token": eos_token,
            "eos_id": eos_id,
        },
        "splits": shard_index["splits"],
        "dtype": shard_index["dtype"],
    }
    for path in write_card(run.dir, card, writer.lengths(), int(cfg.step.histogram_bins)):
        run.add_output(path)
    train, val = shard_index["splits"]["train"], shard_index["splits"]["val"]
    return {
        "documents_in": float(documents_in),
        "documents_kept": float(kept),
        "tokens_train": float(train["tokens"]),
        "tokens_val": float(val["tokens"]),
        "vocab_size": float(vocab_size),
    }


def _kept(path: Path):
    with open(path) as handle:
        for line in handle:
            yield json.loads(line)


def _tokenizer(data: Any, work: Path, run: Run, cfg: DictConfig) -> tuple[Any, str, str]:
    from quark.data.tokenizer import load_tokenizer, save_hf_tokenizer, train_tokenizer

    target = run.path("tokenizer", "tokenizer.json").parent
    if data.tokenizer.path:
        tokenizer, config = load_tokenizer(str(data.tokenizer.path))
        source = Path(str(data.tokenizer.path)).expanduser()
        for file in files_under(source if source.is_dir() else source.parent):
            if file.name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                shutil.copy2(file, target / file.name)
        eos = config.get("eos_token") or str(data.tokenizer.eos_token)
        eos = eos["content"] if isinstance(eos, dict) else str(eos)
        run.add_output("tokenizer")
        return tokenizer, eos, f"reused from {source}"
    tokenizer = train_tokenizer((r["text"] for r in _kept(work)), data.tokenizer)
    max_length = (
        int(cfg.model.max_seq_len) if cfg.get("model") and cfg.model.get("max_seq_len") else 2048
    )
    save_hf_tokenizer(tokenizer, target, data.tokenizer, max_length)
    run.add_output("tokenizer")
    return tokenizer, str(data.tokenizer.eos_token), "trained"


def _notes(data: Any) -> list[str]:
    notes = []
    if any(s.type == "stdlib_code" for s in data.sources):
        import platform
        import sys

        notes.append(
            f"stdlib_code is this Python's standard library ({platform.python_implementation()} "
            f"{platform.python_version()}, {sys.base_prefix}): the corpus, and so the shards, depend on the Python build."
        )
    return notes


def _rag_index(cfg: DictConfig) -> Path:
    """data.rag.index, else the newest completed retrieve run with a code graph."""
    from quark.core.run import verify_run
    from quark.lineage.finding import find_run, missing

    allowed = "give a retrieve run of Python sources (python launch.py step=retrieve)"

    def has_graph(run: Path) -> bool:
        return (run / "graph" / "graph.json").is_file()

    found = find_run(cfg, ("retrieve",), key="data.rag.index", holds=has_graph, allowed=allowed)
    if found is None:
        raise missing(cfg, "data.rag.index", "retrieve run with a code graph", allowed)
    step = verify_run(found, "data.rag.index", allowed).get("step")
    if step != "retrieve" or not has_graph(found):
        raise ConfigError(
            "data.rag.index", f"{found} is not a retrieve run with a code graph", allowed
        )
    return found


def _rag_qa(cfg: DictConfig, run: Run, index: Path) -> dict[str, float]:
    """{system, prompt, response} records: questions, the retrieved context, the answer."""
    from quark.data.rag_qa import rag_qa_splits
    from quark.serve.rag import load_retrieval

    rag, task = cfg.data.rag, cfg.data.task
    retrieval = load_retrieval(index, int(rag.k), str(rag.mode), 0)
    counts = {"train": int(task.train), "val": int(task.val), "test": int(task.test)}
    splits = rag_qa_splits(retrieval, counts, int(rag.max_context_chars))
    if "train" not in splits:
        raise ConfigError("data.rag.index", f"{index}'s corpus gives no questions to train on")
    metrics: dict[str, float] = {}
    for split, records in splits.items():
        path = run.path(f"{split}.jsonl")
        with open(path, "w") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")
        run.add_output(path)
        metrics[f"{split}_pairs"] = float(len(records))
        metrics[f"{split}_answer_in_context"] = sum(r["answer_in_context"] for r in records) / len(
            records
        )
    return metrics


def _task_set(cfg: DictConfig, run: Run, retrieval: Path | None = None) -> dict[str, float]:
    if cfg.data.kind == "safety_requests":
        return _safety_requests(cfg, run)
    if cfg.data.kind == "rag_qa":
        assert retrieval is not None  # inputs() found it
        return _rag_qa(cfg, run, retrieval)
    from quark.data.tasks import ArithmeticSpec, expressions, preference_records, sft_records

    task = cfg.data.task
    spec = ArithmeticSpec(
        tuple(task.operators),
        task.min_digits,
        task.max_digits,
        task.min_terms,
        task.max_terms,
        int(cfg.seed),
    )
    counts = {"train": int(task.train), "val": int(task.val), "test": int(task.test)}
    # one list of distinct expressions cut into splits: no expression is in two splits
    pool = expressions(spec, sum(counts.values()))
    records = list(
        sft_records(pool)
        if cfg.data.kind == "arithmetic_sft"
        else preference_records(pool, int(cfg.seed))
    )
    start = 0
    for split, count in counts.items():
        path = run.path(f"{split}.jsonl")
        with open(path, "w") as out:
            for record in records[start : start + count]:
                out.write(json.dumps(record) + "\n")
        run.add_output(path)
        start += count
    card = {
        "name": str(cfg.data.name),
        "kind": str(cfg.data.kind),
        "notes": [f"generated from seed {cfg.seed}: {spec}"],
        "splits": counts,
    }
    for path in write_card(run.dir, card, None, 1):
        run.add_output(path)
    return {f"examples_{split}": float(count) for split, count in counts.items()}


def _safety_requests(cfg: DictConfig, run: Run) -> dict[str, float]:
    """The labelled requests of quark.safety.requests, split by template: {text, label,
    template} per line, and a card counting each split's labels."""
    from collections import Counter

    from quark.safety.requests import SPLITS, generated_splits, template_splits

    task = cfg.data.task
    asked = {split: int(task[split]) for split in SPLITS}
    held_out, seed = float(task.held_out_templates), int(cfg.seed)
    splits = generated_splits(asked, held_out, seed)
    splits = {split: requests for split, requests in splits.items() if requests}  # test=0: none
    for split, requests in splits.items():
        path = run.path(f"{split}.jsonl")
        with open(path, "w") as out:
            for request in requests:
                out.write(json.dumps(request.record()) + "\n")
        run.add_output(path)
    card = {
        "name": str(cfg.data.name),
        "kind": str(cfg.data.kind),
        "notes": [
            f"generated from seed {seed}; templates split {template_splits(held_out, seed)}: "
            "no val or test template is in train"
        ],
        "splits": {split: len(requests) for split, requests in splits.items()},
        "labels": {
            split: dict(sorted(Counter(r.label for r in requests).items()))
            for split, requests in splits.items()
        },
    }
    for path in write_card(run.dir, card, None, 1):
        run.add_output(path)
    return {f"examples_{split}": float(len(requests)) for split, requests in splits.items()}
