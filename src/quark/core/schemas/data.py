"""Schema of the `data` group: sources, cleaning, deduplication, tokenizer, packing; or a
generated task set."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

SOURCE_TYPES = ("stdlib_code", "text_files", "jsonl", "parquet", "hf_dataset")
KINDS = ("corpus", "arithmetic_sft", "arithmetic_prefs", "safety_requests", "rag_qa")


@dataclass
class SourceSchema:
    type: str = choice("stdlib_code", SOURCE_TYPES)
    # Average copies of each kept document: 0.5 keeps half (seeded), 2 repeats each twice.
    weight: float = ranged(1.0, gt=0)
    # text_files, jsonl, parquet: files or globs (** recurses)
    paths: list[str] = field(default_factory=list)
    # jsonl, parquet, hf_dataset: the field holding the text
    text_field: str = "text"
    # hf_dataset: a directory saved with save_to_disk, or a hub name when online
    name_or_path: str | None = None
    split: str = "train"


@dataclass
class CleanSchema:
    unicode_normalization: str = choice("NFC", ("NFC", "NFKC", "none"))
    min_chars: int = ranged(64, ge=0)
    max_chars: int = ranged(1_000_000, ge=1)
    max_nonprintable_ratio: float = ranged(0.01, ge=0, le=1)
    max_undecodable_ratio: float = ranged(0.001, ge=0, le=1)


@dataclass
class DedupSchema:
    exact: bool = True
    near: bool = True
    threshold: float = ranged(0.85, gt=0, le=1)
    num_perm: int = ranged(128, ge=16)
    shingle_size: int = ranged(5, ge=1)


@dataclass
class TokenizerSchema:
    # an existing Hugging Face tokenizer directory to reuse; null trains a new one
    path: str | None = None
    vocab_size: int = ranged(8192, ge=1)
    min_frequency: int = ranged(2, ge=1)
    bos_token: str = "<|bos|>"
    eos_token: str = "<|eos|>"
    pad_token: str = "<|pad|>"


@dataclass
class PackSchema:
    val_fraction: float = ranged(0.02, ge=0, lt=1)
    # documents per encode_batch call
    batch_documents: int = ranged(512, ge=1)
    # threads tokenizing each batch (the tokenizers library's Rayon pool)
    workers: int = ranged(2, ge=1)
    shard_tokens: int = ranged(50_000_000, ge=1)


@dataclass
class TaskSchema:
    operators: list[str] = field(default_factory=lambda: ["+", "-", "*"])
    min_digits: int = ranged(1, ge=1, le=18)
    max_digits: int = ranged(2, ge=1, le=18)
    min_terms: int = ranged(2, ge=2)
    max_terms: int = ranged(3, ge=2)
    train: int = ranged(20000, ge=1)
    val: int = ranged(500, ge=0)
    test: int = ranged(500, ge=0)
    # safety_requests: share of the templates kept out of train for val, and as many for test
    held_out_templates: float = ranged(0.2, gt=0, lt=0.5)


@dataclass
class RagQaSchema:
    # rag_qa: a retrieve run whose index answers the questions; null: the newest of the
    # experiment
    index: str | None = None
    k: int = ranged(3, ge=1, le=50)
    mode: str = choice("hybrid", ("dense", "bm25", "hybrid", "graph"))
    # the context's size: what a small model's window holds beside the question
    max_context_chars: int = ranged(400, ge=64)


@dataclass
class DataSchema:
    name: str = MISSING
    kind: str = choice("corpus", KINDS)
    sources: list[SourceSchema] = field(default_factory=lambda: [SourceSchema()])
    clean: CleanSchema = field(default_factory=CleanSchema)
    dedup: DedupSchema = field(default_factory=DedupSchema)
    tokenizer: TokenizerSchema = field(default_factory=TokenizerSchema)
    pack: PackSchema = field(default_factory=PackSchema)
    task: TaskSchema = field(default_factory=TaskSchema)
    rag: RagQaSchema = field(default_factory=RagQaSchema)

    def check(self) -> None:
        if self.kind == "corpus" and not self.sources:
            raise ConfigError(
                "data.sources", "is empty", "list at least one source, e.g. {type: stdlib_code}"
            )
        if self.clean.min_chars > self.clean.max_chars:
            raise ConfigError(
                "data.clean.min_chars",
                f"{self.clean.min_chars} exceeds data.clean.max_chars={self.clean.max_chars}",
                "min_chars <= max_chars",
            )
        if self.kind == "safety_requests" and self.task.val < 1:
            raise ConfigError(
                "data.task.val",
                "is 0: a classifier trained on this set needs validation texts",
                "allowed: >= 1",
            )
        if self.task.min_digits > self.task.max_digits:
            raise ConfigError(
                "data.task.min_digits",
                f"{self.task.min_digits} exceeds data.task.max_digits",
                "min_digits <= max_digits",
            )
        if self.task.min_terms > self.task.max_terms:
            raise ConfigError(
                "data.task.min_terms",
                f"{self.task.min_terms} exceeds data.task.max_terms",
                "min_terms <= max_terms",
            )
