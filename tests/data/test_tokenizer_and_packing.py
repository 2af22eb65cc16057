"""Tokenizer round-trip through Hugging Face, shard format, split disjointness."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from quark.core.errors import ConfigError
from quark.data.packing import (
    TokenShardWriter,
    read_index,
    read_shard,
    split_of,
    split_score,
    token_dtype,
)
from quark.data.tokenizer import CHAT_MARKERS, save_hf_tokenizer, train_tokenizer

SPEC = SimpleNamespace(
    vocab_size=400, min_frequency=1, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
)
TEXTS = [f"def function_{i}(x):\n    return x * {i} + 'caf\u00e9'\n" for i in range(300)]


def test_trained_tokenizer_loads_in_transformers_and_round_trips(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = train_tokenizer(iter(TEXTS), SPEC)
    save_hf_tokenizer(tokenizer, tmp_path, SPEC, model_max_length=512)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    text = "def function_7(x):\n    return x * 7 + 'caf\u00e9'  # \u00fcnicode \u4e2d\u6587\n"
    assert hf.decode(hf.encode(text, add_special_tokens=False)) == text
    assert (
        hf.encode(text, add_special_tokens=False)
        == tokenizer.encode(text, add_special_tokens=False).ids
    )
    assert hf.eos_token == "<|eos|>" and hf.pad_token == "<|pad|>" and hf.bos_token == "<|bos|>"
    for marker in CHAT_MARKERS:
        assert len(hf.encode(marker, add_special_tokens=False)) == 1
    assert len(hf) == 400 and hf.model_max_length == 512


def test_a_vocabulary_too_small_for_the_specials_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"data\.tokenizer\.vocab_size"):
        train_tokenizer(iter(TEXTS), SimpleNamespace(**{**vars(SPEC), "vocab_size": 100}))


def test_split_is_stable_seeded_and_about_the_asked_fraction() -> None:
    ids = [f"doc{i}" for i in range(20000)]
    splits = [split_of(i, 0.1, seed=3) for i in ids]
    assert splits == [split_of(i, 0.1, seed=3) for i in ids]
    assert 0.09 < splits.count("val") / len(ids) < 0.11
    assert splits != [split_of(i, 0.1, seed=4) for i in ids]
    assert {split_of(i, 0.0, seed=3) for i in ids} == {"train"}


def test_shards_hold_every_document_followed_by_eos(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(iter(TEXTS), SPEC)
    eos = tokenizer.token_to_id("<|eos|>")
    pack = SimpleNamespace(batch_documents=7, val_fraction=0.2, shard_tokens=400)
    writer = TokenShardWriter(tmp_path, tokenizer, eos, tokenizer.get_vocab_size(), pack, seed=0)
    for index, text in enumerate(TEXTS):
        writer.add(f"doc{index}", text)
    index = writer.close()
    assert read_index(tmp_path) == index
    assert index["dtype"] == "uint16" and token_dtype(70000) == np.uint32

    seen = {"train": [], "val": []}
    for split in ("train", "val"):
        assert len(index["splits"][split]["shards"]) > 1  # shard_tokens=400 forces several
        for shard in index["splits"][split]["shards"]:
            tokens, offsets = read_shard(tmp_path, shard["name"], index["dtype"])
            assert len(tokens) == shard["tokens"] and len(offsets) == shard["documents"]
            ends = [*offsets[1:].tolist(), len(tokens)]
            for start, end in zip(offsets.tolist(), ends, strict=True):
                assert tokens[end - 1] == eos
                seen[split].append(tokenizer.decode(tokens[start : end - 1].tolist()))
    expected = {
        s: [t for i, t in enumerate(TEXTS) if split_of(f"doc{i}", 0.2, 0) == s] for s in seen
    }
    assert seen == expected  # every document, in order, in exactly one split
    assert index["splits"]["train"]["tokens"] + index["splits"]["val"]["tokens"] == sum(
        len(tokenizer.encode(t).ids) + 1 for t in TEXTS
    )


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_a_small_corpus_whose_hashes_miss_val_still_gets_one_val_document(
    tmp_path: Path, order: str
) -> None:
    tokenizer = train_tokenizer(iter(TEXTS), SPEC)
    eos = tokenizer.token_to_id("<|eos|>")
    ids = [f"doc{i}" for i in range(200) if split_of(f"doc{i}", 0.2, 0) == "train"][:6]
    lowest = min(ids, key=lambda i: split_score(i, 0))
    texts = {doc_id: TEXTS[int(doc_id[3:])] for doc_id in ids}
    pack = SimpleNamespace(batch_documents=4, val_fraction=0.2, shard_tokens=10_000)
    writer = TokenShardWriter(tmp_path, tokenizer, eos, tokenizer.get_vocab_size(), pack, seed=0)
    added = ids if order == "forward" else ids[::-1]
    for doc_id in added:
        writer.add(doc_id, texts[doc_id])
    index = writer.close()

    def documents(split: str) -> list[str]:
        [shard] = index["splits"][split]["shards"]
        tokens, offsets = read_shard(tmp_path, shard["name"], index["dtype"])
        ends = [*offsets[1:].tolist(), len(tokens)]
        return [
            tokenizer.decode(tokens[a : b - 1].tolist())
            for a, b in zip(offsets.tolist(), ends, strict=True)
        ]

    # the lowest-hashing document, whatever the order; the rest stay in train, in order
    assert documents("val") == [texts[lowest]]
    assert documents("train") == [texts[i] for i in added if i != lowest]


def test_a_single_document_stays_in_train(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(iter(TEXTS), SPEC)
    pack = SimpleNamespace(batch_documents=4, val_fraction=0.2, shard_tokens=10_000)
    writer = TokenShardWriter(tmp_path, tokenizer, 1, tokenizer.get_vocab_size(), pack, seed=0)
    doc_id = next(f"doc{i}" for i in range(50) if split_of(f"doc{i}", 0.2, 0) == "train")
    writer.add(doc_id, TEXTS[0])
    index = writer.close()
    assert index["splits"]["train"]["documents"] == 1 and index["splits"]["val"]["documents"] == 0
