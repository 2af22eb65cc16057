"""Vector index scale (issue 13): flat, HNSW and IVF-PQ at 100k chunks, measured in one run.

    chunks     100k distinct source lines of this Python's standard library (20+ characters),
               embedded with all-MiniLM-L6-v2 (the default embedder): real embeddings, with
               the clustering real text has; 1000 more lines are the queries, none indexed
    build      chunks/s of adding every vector (IVF-PQ: training included), and the embedder's
               own chunks/s on these lines
    query      one query at a time, FAISS on one thread: p50 and p95 latency
    recall     recall@10 of each approximate index against the flat index's exact top 10
    memory     the serialized index's bytes per chunk (FAISS keeps the same in memory)

    .venv/bin/python bench/retrieve_scale.py [--chunks 100000] [--queries 1000]

The embeddings are cached under /tmp (keyed by the line set) so that reruns only index.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def source_lines(count: int, seed: int = 0) -> list[str]:
    """`count` distinct stripped lines of 20+ characters from the standard library, shuffled."""
    from quark.data.sources import stdlib_files

    root = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    lines: list[str] = []
    for path in stdlib_files():
        for line in path.read_text(errors="replace").splitlines():
            text = line.strip()
            if len(text) >= 20 and text not in seen:
                seen.add(text)
                lines.append(text)
    random.Random(seed).shuffle(lines)
    if len(lines) < count:
        raise SystemExit(f"only {len(lines)} distinct lines under {root}; ask for fewer")
    return lines[:count]


def embedded(lines: list[str]) -> tuple[np.ndarray, float]:
    """The lines' MiniLM embeddings (cached), and the embedder's chunks/s (0 when cached)."""
    key = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    cache = Path(f"/tmp/quark_bench_retrieve_{key}.npy")
    if cache.is_file():
        return np.load(cache), 0.0
    from omegaconf import OmegaConf

    from quark.retrieve.embedders import load_embedder

    embedder = load_embedder(OmegaConf.create(
        {"name": "minilm", "kind": "sentence_transformers", "path": None, "batch_size": 256,
         "max_tokens": 128, "device": "cpu"}
    ))  # fmt: skip
    started = time.perf_counter()
    vectors = embedder.encode(lines, progress=True)
    rate = len(lines) / (time.perf_counter() - started)
    np.save(cache, vectors)
    return vectors, rate


def measure(name: str, index, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray | None):
    import faiss

    faiss.omp_set_num_threads(2)
    started = time.perf_counter()
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    build_s = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    latencies, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, ids = index.search(query[None, :], 10)
        latencies.append(time.perf_counter() - started)
        found.append(ids[0])
    found_ids = np.array(found)
    recall = (
        1.0
        if exact is None
        else float(
            np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found_ids, exact, strict=True)])
        )
    )
    size = len(faiss.serialize_index(index))
    return {
        "index": name,
        "build_chunks_per_s": len(vectors) / build_s,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "recall@10": recall,
        "bytes_per_chunk": size / len(vectors),
    }, found_ids


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    lines = source_lines(args.chunks + args.queries)
    vectors, embed_rate = embedded(lines)
    corpus, queries = vectors[: args.chunks], vectors[args.chunks :]
    dimension = corpus.shape[1]
    rows = []
    flat, exact = measure("flat", faiss.IndexFlatIP(dimension), corpus, queries, None)
    rows.append(flat)
    for ef in (64, 128):
        hnsw = faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 200
        hnsw.hnsw.efSearch = ef
        rows.append(measure(f"hnsw M=32 efSearch={ef}", hnsw, corpus, queries, exact)[0])
    nlist = int(4 * args.chunks**0.5)
    for nprobe in (16, 64):
        ivfpq = faiss.IndexIVFPQ(faiss.IndexFlatIP(dimension), dimension, nlist, 16, 8,
                                 faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        ivfpq.nprobe = nprobe
        rows.append(
            measure(f"ivfpq nlist={nlist} m=16x8 nprobe={nprobe}", ivfpq, corpus, queries, exact)[0]
        )
    print(f"{args.chunks} chunks x {dimension} dimensions, {args.queries} queries; "
          f"embedder: {embed_rate:.0f} chunks/s" + (" (cached)" if not embed_rate else ""))  # fmt: skip
    print("| index | build chunks/s | query p50 | query p95 | recall@10 vs flat | bytes/chunk |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['index']} | {row['build_chunks_per_s']:,.0f} | {row['p50_ms']:.2f} ms | "
              f"{row['p95_ms']:.2f} ms | {row['recall@10']:.3f} | {row['bytes_per_chunk']:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
