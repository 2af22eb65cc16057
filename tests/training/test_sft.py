"""Supervised fine-tuning samples: the chat template, the loss mask, packing, and the order a
run reads them in (sharded by rank, resumed at the next unseen sample)."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from omegaconf import OmegaConf

from quark.core.errors import ConfigError
from quark.data.pairs import Pair, render_prompts
from quark.data.tokenizer import save_hf_tokenizer, train_tokenizer
from quark.training.sft import (
    IGNORE,
    Example,
    SampleDataModule,
    check_lengths,
    collate,
    encode_pairs,
    load_chat_tokenizer,
    pack,
)

from ..conftest import CONF

STEP = OmegaConf.load(CONF / "step" / "finetune.yaml")
SPEC = SimpleNamespace(
    vocab_size=400, min_frequency=1, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
)
PAIRS = [Pair("What is 3 + 4?", "7"), Pair("What is 12 + 30 + 5?", "47"), Pair("Hi", "Hello!")]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A Quark-trained tokenizer (chat markers included) with the shipped chat template."""
    directory = tmp_path_factory.mktemp("tokenizer")
    texts = [f"What is {i} + {i * 7 % 10}? The answer is {i + i * 7 % 10}." for i in range(200)]
    save_hf_tokenizer(train_tokenizer(iter(texts), SPEC), directory, SPEC, model_max_length=128)
    loaded, _ = load_chat_tokenizer(directory, STEP.chat_template, STEP.stop_token)
    return loaded


def test_the_shipped_chat_template_renders_prompt_and_answer(tokenizer: Any) -> None:
    assert render_prompts(tokenizer, PAIRS[:1], None) == [
        "<|user|>What is 3 + 4?<|end|><|assistant|>"
    ]
    assert render_prompts(tokenizer, PAIRS[:1], "Be brief.") == [
        "<|system|>Be brief.<|end|><|user|>What is 3 + 4?<|end|><|assistant|>"
    ]
    conversation = [
        {"role": "user", "content": "What is 3 + 4?"},
        {"role": "assistant", "content": "7"},
    ]
    assert (
        tokenizer.apply_chat_template(conversation, tokenize=False)
        == "<|user|>What is 3 + 4?<|end|><|assistant|>7<|end|>"
    )


def test_labels_are_ignored_exactly_on_prompt_and_padding_tokens(tokenizer: Any) -> None:
    examples = encode_pairs(tokenizer, PAIRS, None)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    for pair, example in zip(PAIRS, examples, strict=True):
        prompt = tokenizer.encode(
            render_prompts(tokenizer, [pair], None)[0], add_special_tokens=False
        )
        assert example.input_ids[: len(prompt)] == prompt
        assert example.labels[: len(prompt)] == [IGNORE] * len(prompt)
        answer = example.labels[len(prompt) :]
        assert answer == example.input_ids[len(prompt) :]  # every answer token is a target
        assert tokenizer.decode(answer[:-1]) == pair.response and answer[-1] == end
    batch = collate(tokenizer.pad_token_id)(examples)
    lengths = [len(e.input_ids) for e in examples]
    for row, n in enumerate(lengths):
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert batch["labels"][row, n:].eq(IGNORE).all()
        assert batch["labels"][row, :n].tolist() == examples[row].labels
        assert batch["input_ids"][row, n:].eq(tokenizer.pad_token_id).all()


def test_packing_keeps_whole_examples_and_every_answer_label(tokenizer: Any) -> None:
    examples = encode_pairs(tokenizer, PAIRS * 5, None)
    seq_len = 2 * max(len(e.input_ids) for e in examples)
    packed = pack(examples, seq_len)
    assert len(packed) < len(examples)
    assert all(len(p.input_ids) <= seq_len for p in packed)
    assert list(itertools.chain(*(p.input_ids for p in packed))) == list(
        itertools.chain(*(e.input_ids for e in examples))
    )
    assert list(itertools.chain(*(p.labels for p in packed))) == list(
        itertools.chain(*(e.labels for e in examples))
    )
    # each sample starts with a whole example's prompt: no answer is split across samples
    assert all(p.labels[0] == IGNORE for p in packed)


def test_an_example_longer_than_seq_len_is_refused_never_cut(tokenizer: Any) -> None:
    examples = encode_pairs(tokenizer, PAIRS, None)
    longest = max(len(e.input_ids) for e in examples)
    check_lengths(examples, longest, "train")
    with pytest.raises(ConfigError) as error:
        check_lengths(examples, longest - 1, "train")
    assert str(error.value) == (
        f"step.seq_len: {longest - 1} is shorter than example 2 of train.jsonl ({longest} tokens); "
        f"allowed: >= {longest}"
    )


def test_a_template_or_stop_token_that_does_not_fit_is_refused(
    tmp_path: Path, tokenizer: Any
) -> None:
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"^step\.chat_template: does not render"):
        load_chat_tokenizer(tmp_path, "{% for m in messages %}", "<|end|>")
    with pytest.raises(ConfigError, match=r"^step\.stop_token: '</s>' is not one token"):
        load_chat_tokenizer(tmp_path, STEP.chat_template, "</s>")


def train_ids(
    datamodule: SampleDataModule, step: int, rank: int, world: int, batches: int
) -> list[int]:
    """The first ids of each sample of the first `batches` batches a rank reads from `step` on,
    in a run of 20 steps."""
    datamodule.trainer = SimpleNamespace(  # type: ignore[assignment]  # what train_dataloader reads
        global_step=step,
        accumulate_grad_batches=1,
        global_rank=rank,
        world_size=world,
        max_steps=20,
    )
    loader = datamodule.train_dataloader()
    # the whole run is one Lightning epoch: a new epoch would iterate the loader anew
    assert len(loader) == 20
    return [int(i) for batch in itertools.islice(loader, batches) for i in batch["input_ids"][:, 0]]


def test_samples_are_sharded_by_rank_and_resume_at_the_next_unseen_one() -> None:
    # example k is the single token k: a sample's first id names it
    examples = [Example([k], [k]) for k in range(10)]
    datamodule = SampleDataModule(
        examples, examples, collate(0), micro_batch_size=2, seed=5, val_samples=4
    )
    stream = train_ids(datamodule, step=0, rank=0, world=1, batches=15)  # three passes
    assert sorted(stream[:10]) == list(range(10)) and stream[:10] != stream[10:20]
    # resumed after 4 steps of 2: samples 8, 9, ... of the same stream
    assert train_ids(datamodule, step=4, rank=0, world=1, batches=5) == stream[8:18]
    # two ranks of micro-batch 2 read the samples one rank of micro-batch 4 would, interleaved
    rank0 = train_ids(datamodule, step=3, rank=0, world=2, batches=4)
    rank1 = train_ids(datamodule, step=3, rank=1, world=2, batches=4)
    assert rank0 == stream[12:28:2] and rank1 == stream[13:29:2]
    assert len(datamodule.val_dataloader().dataset) == 4
