"""Perplexity and exact match through a Decoder (any runtime) agree with plain torch and with
batched generate(): what step=evaluate relies on to measure exports like source models."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from quark.data.tokenizer import save_hf_tokenizer, train_tokenizer
from quark.eval.exact_match import decoder_exact_match, greedy_exact_match
from quark.eval.perplexity import perplexity
from quark.export.decoding import TorchDecoder
from quark.models.llama import build_llama

SPEC = SimpleNamespace(
    vocab_size=300, min_frequency=1, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    directory: Path = tmp_path_factory.mktemp("tokenizer")
    texts = [f"What is {i} + {i % 7}? {i + i % 7}" for i in range(100)]
    save_hf_tokenizer(train_tokenizer(iter(texts), SPEC), directory, SPEC, model_max_length=64)
    return AutoTokenizer.from_pretrained(directory)


def tiny_model() -> Any:
    torch.manual_seed(0)
    model = build_llama(
        vocab_size=300,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=64,
        max_seq_len=64,
    )
    return model.eval()


def test_perplexity_is_exp_of_torch_cross_entropy_over_every_window() -> None:
    model = tiny_model()
    windows = np.random.default_rng(0).integers(0, 300, size=(5, 17)).astype(np.int64)
    # batches of 2: the last one short, and every target counted once
    found = perplexity(TorchDecoder(model), windows, batch_size=2)
    tokens = torch.from_numpy(windows)
    with torch.no_grad():
        logits = model(input_ids=tokens[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 300), tokens[:, 1:].reshape(-1))
    assert found["val_tokens"] == 5 * 16
    assert found["val_loss"] == pytest.approx(float(loss), rel=1e-6)
    assert found["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-6)


def test_exact_match_through_a_decoder_answers_as_batched_generate_does(tokenizer: Any) -> None:
    model = tiny_model()
    prompts = ["What is 3 + 4?", "What is 12 + 5? 1", "x"]
    stops = [tokenizer.eos_token_id]
    # references: what batched generate answers, so some count as right and some do not
    batched = greedy_exact_match(
        model, tokenizer, prompts, ["", "", ""], stop_token_ids=stops, max_new_tokens=5
    )
    references = [batched.answers[0], "not this", batched.answers[2]]
    expected = greedy_exact_match(
        model, tokenizer, prompts, references, stop_token_ids=stops, max_new_tokens=5
    )
    found = decoder_exact_match(
        TorchDecoder(model), tokenizer, prompts, references, stop_token_ids=stops, max_new_tokens=5
    )
    assert found.answers == expected.answers
    assert found.correct == expected.correct
    assert any(found.answers), "every answer is empty: the comparison proves nothing"
