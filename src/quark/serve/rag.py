"""Retrieval in the server: a retrieve run's index searched for a chat request, its chunks put
in the prompt and their sources returned; embeddings and ranked chunks on endpoints of their own.

The retrieved text goes into a system message ahead of the conversation (after the client's
own system message, if any), numbered so the answer can cite [1], [2]; chunks are added best
first until step.retrieval.max_context_tokens of the served model's tokens are used, the last
one cut to fit. The query is the last user message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.serve.protocol import APIError

if TYPE_CHECKING:
    from quark.retrieve.embedders import Embedder
    from quark.retrieve.store import Hit, RetrievalIndex

INSTRUCTION = (
    "Answer the question using the numbered sources below, and name the sources you use as "
    "[1], [2]."
)


@dataclass
class Retrieval:
    """A loaded retrieve run: its index, the embedder that built it, and the defaults."""

    name: str  # what a request names it by: the run's step and time, e.g. retrieve/2026-...
    index: RetrievalIndex
    embedder: Embedder | None
    k: int
    mode: str
    max_context_tokens: int

    def check(self, index: str | None, mode: str | None, k: int | None) -> tuple[str, int]:
        """The mode and k a request gets, refused (400/404) when the index cannot give them."""
        if index is not None and index != self.name:
            raise APIError(
                404, f"the index '{index}' is not served; this server serves '{self.name}'",
                param="retrieval.index", code="index_not_found",
            )  # fmt: skip
        mode = mode or self.mode
        if mode not in self.index.modes:
            raise APIError(
                400, f"retrieval mode '{mode}' is not one this index answers; allowed: "
                f"{', '.join(self.index.modes)}", param="retrieval.mode",
            )  # fmt: skip
        return mode, k or self.k

    async def search(self, query: str, mode: str, k: int) -> list[Hit]:
        """The best `k` chunks, searched in a worker thread (encoding and FAISS release the
        GIL; the event loop keeps streaming other answers meanwhile)."""
        return await asyncio.to_thread(self.index.search, query, mode, k, self.embedder)

    async def embed(self, texts: list[str]) -> tuple[Any, int]:
        """The texts' vectors and their token count, in a worker thread."""
        embedder = self.embedder
        if embedder is None:
            raise APIError(
                404, f"the index '{self.name}' is BM25-only: this server has no embedder",
                code="no_embedder",
            )  # fmt: skip

        def work() -> tuple[Any, int]:
            return embedder.encode(texts), sum(len(embedder.token_spans(t)) for t in texts)

        return await asyncio.to_thread(work)


def load_retrieval(directory: Path, k: int, mode: str, max_context_tokens: int) -> Retrieval:
    """The index in retrieve run `directory` (verified by the caller) and its own embedder,
    refused if the embedder's weights are no longer the ones it was built with."""
    from omegaconf import OmegaConf

    from quark.retrieve.embedders import load_embedder, quiet_libraries
    from quark.retrieve.store import RetrievalIndex

    quiet_libraries(models=False)
    index = RetrievalIndex.load(directory)
    embedder = None
    record = index.embedder_record
    if record is not None:
        spec = OmegaConf.create(
            {"name": record.get("name"), "kind": record["kind"], "path": record["path"],
             "batch_size": 32, "max_tokens": record["max_tokens"], "device": "cpu"}
        )  # fmt: skip
        embedder = load_embedder(spec)
        index.check_embedder(embedder, "step.retrieval.index")
    name = f"{directory.parent.name}/{directory.name}"
    return Retrieval(name, index, embedder, k, mode, max_context_tokens)


def with_context(
    messages: list[dict[str, str]], hits: list[Hit], tokenizer: Any, budget: int
) -> tuple[list[dict[str, str]], list[Hit]]:
    """`messages` with the retrieved chunks in a system message, and the hits that fit in
    `budget` tokens (the last cut short)."""
    parts, kept = [INSTRUCTION], []
    used = len(tokenizer.encode(INSTRUCTION, add_special_tokens=False))
    for number, hit in enumerate(hits, start=1):
        block = f"\n\n[{number}] {hit.chunk.title}\n{hit.chunk.text.strip()}"
        ids = tokenizer.encode(block, add_special_tokens=False)
        if used + len(ids) > budget:
            room = budget - used
            if room < 16:
                break
            # decoding a cut and encoding again can merge differently: cut until it fits
            while room > 0 and len(ids) > budget - used:
                block = tokenizer.decode(ids[:room], skip_special_tokens=True)
                ids = tokenizer.encode(block, add_special_tokens=False)
                room -= 4
            if not block.strip():
                break
        parts.append(block)
        kept.append(hit)
        used += len(ids)
    if not kept:  # nothing retrieved, or nothing fits: the conversation as it was
        return messages, []
    context = "".join(parts)
    if messages and messages[0]["role"] in ("system", "developer"):
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{context}"}
        return [first, *messages[1:]], kept
    return [{"role": "system", "content": context}, *messages], kept


def query_of(messages: list[dict[str, str]]) -> str:
    """The last user message: what the retrieval searches for."""
    for message in reversed(messages):
        if message["role"] == "user" and message["content"].strip():
            return message["content"]
    raise APIError(400, "retrieval needs a user message to search for", param="messages")


def source_record(rank: int, hit: Hit) -> dict[str, Any]:
    """One source as a response lists it."""
    chunk = hit.chunk
    return {
        "rank": rank,
        "id": hit.chunk_id,
        "score": hit.score,
        "title": chunk.title,
        "path": chunk.path,
        "name": chunk.name,
        "kind": chunk.kind,
        "start_line": chunk.start_line,
        "end_line": chunk.end_line,
        "sha256": chunk.sha256,
    }
