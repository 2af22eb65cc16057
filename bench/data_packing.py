"""Data step benchmarks, each a ratio against a baseline measured in the same run.

throughput: Quark's tokenize-and-pack (TokenShardWriter: encode_batch, eos, uint16 shards,
    offsets, split) against raw `Tokenizer.encode_batch` on the same text, same batch size and
    threads, runs alternating. Target (issue 3): ratio >= 0.8.
memory: peak RSS of a whole `launch.py step=data` run on a corpus and on ten times that corpus.
    The copies are the same files with their lines shuffled (a different seed per copy): not
    duplicates (they survive exact and near dedup) yet the same vocabulary, so the tokenizer
    trainer's word table does not grow. Target: peak RSS at 10x at most 1.5x that at 1x.

    .venv/bin/python bench/data_packing.py throughput
    .venv/bin/python bench/data_packing.py memory
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def stdlib_texts() -> list[str]:
    from quark.data.sources import decode, stdlib_files

    return [decode(p.read_bytes())[0] for p in stdlib_files()]


def throughput(rounds: int) -> None:
    os.environ.setdefault("RAYON_NUM_THREADS", "2")
    from quark.data.packing import TokenShardWriter
    from quark.data.tokenizer import train_tokenizer

    texts = stdlib_texts()
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    spec = SimpleNamespace(
        vocab_size=8192,
        min_frequency=2,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
    )
    tokenizer = train_tokenizer(iter(texts), spec)
    eos = tokenizer.token_to_id("<|eos|>")
    batch = 512
    pack = SimpleNamespace(batch_documents=batch, val_fraction=0.02, shard_tokens=50_000_000)

    def raw() -> float:
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            tokenizer.encode_batch(texts[i : i + batch], add_special_tokens=False)
        return time.perf_counter() - start

    def packed() -> float:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            writer = TokenShardWriter(
                Path(out), tokenizer, eos, tokenizer.get_vocab_size(), pack, seed=0
            )
            for index, text in enumerate(texts):
                writer.add(str(index), text)
            writer.close()
            return time.perf_counter() - start

    raw(), packed()  # warm up
    raw_times, packed_times = [], []
    for _ in range(rounds):
        raw_times.append(raw())
        packed_times.append(packed())
    raw_rate, packed_rate = (
        megabytes / statistics.median(raw_times),
        megabytes / statistics.median(packed_times),
    )
    print(
        f"corpus: stdlib_code, {len(texts)} documents, {megabytes:.1f} MB; batch {batch}; RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}; {rounds} rounds alternating"
    )
    print(f"raw Tokenizer.encode_batch: {raw_rate:.2f} MB/s (median)")
    print(f"quark tokenize-and-pack:    {packed_rate:.2f} MB/s (median)")
    print(f"ratio: {packed_rate / raw_rate:.3f} (target >= 0.8)")


def write_corpus(directory: Path, copies: int) -> int:
    from quark.data.sources import stdlib_files

    total = 0
    for number, path in enumerate(stdlib_files()):
        lines = path.read_bytes().splitlines(keepends=True)
        for copy in range(copies):
            shuffled = list(lines)
            if copy:
                random.Random(copy * 100_003 + number).shuffle(shuffled)
            target = directory / f"copy{copy:02d}" / f"{number:05d}.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"".join(shuffled))
            total += target.stat().st_size
    return total


def peak_rss_mb(corpus: Path, outputs: Path) -> tuple[float, float]:
    probe = (
        "import resource, subprocess, sys, time; start = time.time();"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.time() - start)"
    )
    command = [
        sys.executable,
        "launch.py",
        "step=data",
        "data=text_files",
        f"data.sources.0.paths=[{corpus}/**/*.py]",
    ]
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs)}
    done = subprocess.run(
        [sys.executable, "-c", probe, *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rss, seconds = done.stdout.split()
    return float(rss), float(seconds)


def memory() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base, tenfold = Path(tmp) / "x1", Path(tmp) / "x10"
        small = write_corpus(base, 1)
        large = write_corpus(tenfold, 10)
        rss_small, seconds_small = peak_rss_mb(base, Path(tmp) / "out")
        rss_large, seconds_large = peak_rss_mb(tenfold, Path(tmp) / "out")
    print(f"1x corpus:  {small / 1e6:.1f} MB, peak RSS {rss_small:.0f} MB, {seconds_small:.0f} s")
    print(f"10x corpus: {large / 1e6:.1f} MB, peak RSS {rss_large:.0f} MB, {seconds_large:.0f} s")
    print(f"peak RSS ratio: {rss_large / rss_small:.2f} (target <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("throughput", "memory"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    throughput(args.rounds) if args.part == "throughput" else memory()


if __name__ == "__main__":
    main()
