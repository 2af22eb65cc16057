"""A tiny Llama trained in-process for a few seconds on a regular little language: trained
weights, unlike random ones, have confident next-token choices, so quantized exports can be
held to top-1 agreement and perplexity (no mocks: a real model, just small)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

COLOURS = ("red", "blue", "green")
WINDOW = 32  # tokens per training and validation window (plus one target)


def sentences(seed: int, count: int) -> list[str]:
    return [
        " ".join(
            f"item{(i + seed) % 7} has value {j * (i + seed) % 13} and colour {COLOURS[j % 3]}"
            for j in range(40)
        )
        for i in range(count)
    ]


@dataclass
class TinyLlama:
    model_dir: Path  # config.json, model.safetensors, tokenizer files
    windows: np.ndarray  # held-out token windows, int64 [n, WINDOW + 1]

    def model(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> TinyLlama:
    from quark.data.tokenizer import save_hf_tokenizer, train_tokenizer
    from quark.models.llama import build_llama

    directory = tmp_path_factory.mktemp("tiny_llama")
    spec = SimpleNamespace(
        vocab_size=400,
        min_frequency=2,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
    )
    tokenizer = train_tokenizer(sentences(0, 30), spec)
    save_hf_tokenizer(tokenizer, directory, spec, model_max_length=256)

    def windows(texts: list[str]) -> np.ndarray:
        ids = np.concatenate([tokenizer.encode(t).ids for t in texts])
        count = len(ids) // (WINDOW + 1)
        return ids[: count * (WINDOW + 1)].reshape(count, WINDOW + 1).astype(np.int64)

    train, held_out = windows(sentences(0, 30)), windows(sentences(3, 4))
    torch.manual_seed(0)
    # 64 wide with 192-wide MLPs: every weight row a whole number of 32-value q8_0 blocks;
    # 384 embeddings for a smaller tokenizer: a padded vocabulary, as a real one may be
    model = build_llama(
        vocab_size=384,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=192,
        max_seq_len=256,
        tie_embeddings=False,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batches = torch.from_numpy(train)
    threads = torch.get_num_threads()
    # one thread: a model this small gains nothing from two, and on a busy machine two
    # threads waiting on each other make each step ten times slower
    torch.set_num_threads(1)
    try:
        for step in range(80):
            picked = torch.randint(
                len(batches), (8,), generator=torch.Generator().manual_seed(step)
            )
            loss = model(input_ids=batches[picked], labels=batches[picked]).loss  # shifted inside
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(directory)
    assert json.loads((directory / "config.json").read_text())["model_type"] == "llama"
    return TinyLlama(directory, held_out[:8])
