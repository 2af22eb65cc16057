"""Token shards: documents tokenized in batches, separated by eos, appended to memory-mappable
flat files, with an index. Memory stays bounded by one batch and one shard's offsets.

    shards/train_00000.bin     raw little-endian uint16 (vocab <= 65536) or uint32 token ids
    shards/train_00000.idx     uint64 offsets: where each document starts in the shard
    shards/index.json          dtype, eos id, vocabulary size, shards and token counts per split

`read_shard` maps a shard back without loading it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INDEX = "index.json"
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


# Train documents held back, in order, while the val split is still empty: at most this many
# (a small corpus is far below it; a large one reaches val long before).
HELD_FOR_VAL = 4096


def split_score(doc_id: str, seed: int) -> float:
    """A document's place in [0, 1) from a seeded hash of its id: stable across runs and
    independent of order."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(doc_id: str, val_fraction: float, seed: int) -> str:
    """'val' or 'train' for a document, from its seeded hash, so a document never lands in
    both splits."""
    return "val" if split_score(doc_id, seed) < val_fraction else "train"


@dataclass
class _SplitWriter:
    directory: Path
    split: str
    dtype: np.dtype
    shard_tokens: int
    shards: list[dict[str, Any]] = field(default_factory=list)
    _handle: Any = None
    _offsets: list[int] = field(default_factory=list)
    _tokens_in_shard: int = 0
    tokens: int = 0
    documents: int = 0
    lengths: list[int] = field(default_factory=list)

    def add(self, ids: np.ndarray) -> None:
        if self._handle is None or self._tokens_in_shard >= self.shard_tokens:
            self._close_shard()
            name = f"{self.split}_{len(self.shards):05d}"
            # kept open across add() calls, closed by _close_shard()
            self._handle = open(self.directory / f"{name}.bin", "wb")  # noqa: SIM115
            self.shards.append({"name": name, "tokens": 0, "documents": 0})
            self._offsets, self._tokens_in_shard = [], 0
        self._offsets.append(self._tokens_in_shard)
        self._handle.write(ids.astype(self.dtype, copy=False).tobytes())
        self._tokens_in_shard += len(ids)
        self.tokens += len(ids)
        self.documents += 1
        self.lengths.append(len(ids))

    def _close_shard(self) -> None:
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        shard = self.shards[-1]
        shard.update(tokens=self._tokens_in_shard, documents=len(self._offsets))
        np.asarray(self._offsets, dtype=np.uint64).tofile(self.directory / f"{shard['name']}.idx")

    def close(self) -> dict[str, Any]:
        self._close_shard()
        return {"tokens": self.tokens, "documents": self.documents, "shards": self.shards}


class TokenShardWriter:
    """Tokenizes documents in batches (`encode_batch`, parallel in Rust) and appends them, each
    followed by eos, to the shards of its split."""

    def __init__(
        self, directory: Path, tokenizer: Any, eos_id: int, vocab_size: int, pack: Any, seed: int
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer = tokenizer
        self.eos = np.array([eos_id], dtype=np.int64)
        self.eos_id = eos_id
        self.vocab_size = vocab_size
        self.dtype = token_dtype(vocab_size)
        self.batch_documents = int(pack.batch_documents)
        self.val_fraction = float(pack.val_fraction)
        self.seed = seed
        self.splits = {
            s: _SplitWriter(directory, s, self.dtype, int(pack.shard_tokens))
            for s in ("train", "val")
        }
        self._pending: list[tuple[str, str]] = []
        # Train documents (score, ids) not yet written because val has none so far: a small
        # corpus whose hashes all fall above val_fraction still gets one val document, the
        # lowest-scoring, instead of an empty split that pretraining refuses.
        self._held: list[tuple[float, np.ndarray]] | None = [] if self.val_fraction > 0 else None

    def add(self, doc_id: str, text: str) -> None:
        self._pending.append((doc_id, text))
        if len(self._pending) >= self.batch_documents:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        encodings = self.tokenizer.encode_batch(
            [text for _, text in self._pending], add_special_tokens=False
        )
        for (doc_id, _), encoding in zip(self._pending, encodings, strict=True):
            ids = np.concatenate([np.asarray(encoding.ids, dtype=np.int64), self.eos])
            score = split_score(doc_id, self.seed)
            if score < self.val_fraction:
                self.splits["val"].add(ids)
                self._release_held()
            elif self._held is not None:
                self._held.append((score, ids))
                if len(self._held) >= HELD_FOR_VAL:
                    self._release_held()
            else:
                self.splits["train"].add(ids)
        self._pending = []

    def _release_held(self) -> None:
        for _, ids in self._held or []:
            self.splits["train"].add(ids)
        self._held = None

    def close(self) -> dict[str, Any]:
        """Flush, close every shard, write index.json; return the index."""
        self._flush()
        held = self._held
        if held and len(held) > 1:
            lowest = min(range(len(held)), key=lambda i: held[i][0])
            self.splits["val"].add(held.pop(lowest)[1])
        self._release_held()
        index = {
            "format_version": FORMAT_VERSION,
            "dtype": self.dtype.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "splits": {name: writer.close() for name, writer in self.splits.items()},
        }
        (self.directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return index

    def lengths(self) -> list[int]:
        return self.splits["train"].lengths + self.splits["val"].lengths


def read_index(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / INDEX).read_text())


def read_shard(directory: Path, name: str, dtype: str) -> tuple[np.memmap, np.ndarray]:
    """A shard's tokens (memory-mapped) and its document start offsets."""
    tokens = np.memmap(Path(directory) / f"{name}.bin", dtype=np.dtype(dtype), mode="r")
    offsets = np.fromfile(Path(directory) / f"{name}.idx", dtype=np.uint64)
    return tokens, offsets
