"""Greedy exact match: batched left-padded generation answers as one prompt at a time does, and
only a finished answer equal to its reference counts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from quark.data.tokenizer import save_hf_tokenizer, train_tokenizer
from quark.eval.exact_match import greedy_exact_match
from quark.models.llama import build_llama

SPEC = SimpleNamespace(
    vocab_size=300, min_frequency=1, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
)
PROMPTS = ["<|user|>What is 1 + 2?<|end|><|assistant|>", "<|user|>Hi<|end|><|assistant|>", "x = 1"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    directory: Path = tmp_path_factory.mktemp("tokenizer")
    texts = [f"What is {i} + {i % 7}? x = {i}" for i in range(100)]
    save_hf_tokenizer(train_tokenizer(iter(texts), SPEC), directory, SPEC, model_max_length=64)
    return AutoTokenizer.from_pretrained(directory)


def tiny_model(seed: int) -> Any:
    torch.manual_seed(seed)
    return build_llama(
        vocab_size=300,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=64,
        max_seq_len=64,
    )


def test_batched_left_padded_answers_match_one_prompt_at_a_time(tokenizer: Any) -> None:
    model = tiny_model(0)
    # the prompts' different lengths put padding on the left of the batch
    stops = [tokenizer.eos_token_id]
    alone = [
        greedy_exact_match(model, tokenizer, [p], [""], stop_token_ids=stops, max_new_tokens=6)
        for p in PROMPTS
    ]
    batched = greedy_exact_match(
        model, tokenizer, PROMPTS, [""] * 3, stop_token_ids=stops, max_new_tokens=6, batch_size=3
    )
    assert batched.answers == [a.answers[0] for a in alone]
    assert any(batched.answers), "every answer is empty: the comparison proves nothing"
    assert model.training  # the model's mode is restored


def test_only_finished_answers_equal_to_the_reference_count(tokenizer: Any) -> None:
    model = tiny_model(1)
    with torch.no_grad():  # every logit 0: greedy picks token 0 (<|bos|>, decoded as "") always
        model.lm_head.weight.zero_()
    bos = tokenizer.convert_tokens_to_ids("<|bos|>")
    assert bos == 0
    found = greedy_exact_match(
        model, tokenizer, PROMPTS, ["", " ", "1"], stop_token_ids=[bos], max_new_tokens=3
    )
    assert found.answers == ["", "", ""] and found.correct == [True, True, False]
    assert found.accuracy == pytest.approx(2 / 3)
    # the same answers with no stop token within the budget are unfinished, so wrong
    unfinished = greedy_exact_match(
        model,
        tokenizer,
        PROMPTS,
        ["", "", ""],
        stop_token_ids=[tokenizer.eos_token_id],
        max_new_tokens=3,
    )
    assert unfinished.answers == ["", "", ""] and unfinished.accuracy == 0.0
