"""Supervised fine-tuning samples: prompt/response pairs rendered with a chat template, the loss
masked to the response, optionally packed several to a sample, in a resumable order.

A pair becomes the token ids of the rendered prompt (ending with the template's generation
prompt, e.g. `<|assistant|>`) followed by the ids of the rest of the rendered conversation (the
response and its end marker). The two parts are tokenized separately, so the prompt is exactly
what generation sees later, and only the second part carries labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from quark.core.errors import ConfigError
from quark.data.pairs import Pair, messages
from quark.training.shards import training_sampler

IGNORE = -100  # label where no loss is taken (CausalLMModule.loss)


@dataclass(frozen=True)
class Example:
    """One training sample: token ids and their labels (IGNORE on prompt tokens)."""

    input_ids: list[int]
    labels: list[int]


def encode_pairs(tokenizer: Any, pairs: Sequence[Pair], system_prompt: str | None) -> list[Example]:
    """Token ids and labels of each pair: IGNORE over the rendered prompt, the ids over the rest."""
    return encode_answers(
        tokenizer,
        [messages(p.prompt, p.system or system_prompt) for p in pairs],
        [p.response for p in pairs],
    )


def encode_answers(
    tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]], answers: Sequence[str]
) -> list[Example]:
    """Token ids and labels of each conversation answered by the assistant with its answer:
    IGNORE over the conversation rendered up to the generation prompt, the ids over the rest
    (the answer and the template's end of message)."""
    prompts = [
        tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
        for c in conversations
    ]
    continuations = []
    for conversation, answer, prompt in zip(conversations, answers, prompts, strict=True):
        whole = tokenizer.apply_chat_template(
            [*conversation, {"role": "assistant", "content": answer}], tokenize=False
        )
        if not whole.startswith(prompt) or len(whole) == len(prompt):
            raise ConfigError(
                "step.chat_template",
                "a conversation with the answer does not start with the prompt rendered with "
                "add_generation_prompt",
                "the template must render the generation prompt exactly as the start of the "
                "assistant's message",
            )
        continuations.append(whole[len(prompt) :])
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(continuations, add_special_tokens=False)["input_ids"]
    return [
        Example(list(p) + list(a), [IGNORE] * len(p) + list(a))
        for p, a in zip(prompt_ids, answer_ids, strict=True)
    ]


class HasTokens(Protocol):
    @property
    def input_ids(self) -> list[int]: ...


def check_lengths(examples: Sequence[HasTokens], seq_len: int, split: str) -> None:
    """Examples are never cut (a cut answer teaches a wrong one, a cut text can lose what
    labels it): a longer one is an error, naming `split` (train: train.jsonl) or, when it is
    a path, the file."""
    longest = max(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    length = len(examples[longest].input_ids)
    if length > seq_len:
        raise ConfigError(
            "step.seq_len",
            f"{seq_len} is shorter than example {longest + 1} of "
            f"{split if '/' in split else split + '.jsonl'} ({length} tokens)",
            f"allowed: >= {length}",
        )


def pack(examples: Sequence[Example], seq_len: int) -> list[Example]:
    """Whole examples, in order, concatenated into samples of at most `seq_len` tokens."""
    packed: list[Example] = []
    ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        if ids and len(ids) + len(example.input_ids) > seq_len:
            packed.append(Example(ids, labels))
            ids, labels = [], []
        ids = ids + example.input_ids
        labels = labels + example.labels
    if ids:
        packed.append(Example(ids, labels))
    return packed


class SampleDataset(Dataset):
    def __init__(self, samples: Sequence[Any]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.samples[index]


def collate(pad_id: int) -> Callable[[list[Example]], dict[str, torch.Tensor]]:
    """Right-pads a batch to its longest sample: pad_id, label IGNORE, attention 0."""

    def batch(examples: list[Example]) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return batch


class SampleDataModule(L.LightningDataModule):
    """Samples held in memory (fine-tuning examples, preference pairs), batched by `collate_fn`:
    the training samples in a seeded order that resumes at the next unseen sample and is
    sharded by rank (quark.training.shards.training_sampler); the first `val_samples`
    validation samples for the validation metrics."""

    def __init__(
        self,
        train: Sequence[Any],
        val: Sequence[Any],
        collate_fn: Callable[[list[Any]], Any],
        micro_batch_size: int,
        seed: int,
        val_samples: int,
    ) -> None:
        super().__init__()
        self.train = SampleDataset(train)
        self.val = SampleDataset(val[:val_samples])
        self.collate = collate_fn
        self.micro_batch_size = micro_batch_size
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        # Called after a checkpoint is restored: start where the interrupted run stopped.
        sampler = training_sampler(self.trainer, len(self.train), self.micro_batch_size, self.seed)
        return DataLoader(
            self.train, batch_size=self.micro_batch_size, sampler=sampler, collate_fn=self.collate
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.micro_batch_size, collate_fn=self.collate)


@dataclass
class ChatModel:
    """A causal LM and its tokenizer set up for chat: the template on the tokenizer, the ids
    generation stops at, the padding id, and the generation config saved with the export."""

    model: Any
    tokenizer: Any
    stop_ids: list[int]
    pad_id: int
    generation_config: Any


def load_chat_model(
    model_dir: Path, tokenizer_dir: Path, chat_template: str, stop_token: str
) -> ChatModel:
    """The fp32 model in `model_dir` and the tokenizer in `tokenizer_dir` with `chat_template`.

    Raises:
        ConfigError: the tokenizer has more tokens than the model has embeddings, or see
            `load_chat_tokenizer`.
    """
    from transformers import AutoModelForCausalLM

    tokenizer, stop_id = load_chat_tokenizer(tokenizer_dir, chat_template, stop_token)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    # more embedding rows than tokens is fine (padded vocabularies), fewer is not
    rows = int(model.config.vocab_size)
    if len(tokenizer) > rows:
        raise ConfigError(
            "step.tokenizer",
            f"the tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens, more than the "
            f"model's {rows} embeddings in {model_dir}",
            "use the tokenizer the model was trained with (null takes the model directory's own)",
        )
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    stop_ids = [stop_id, *([int(eos_id)] if eos_id not in (None, stop_id) else [])]
    pad_id = stop_id if pad_id is None else int(pad_id)  # padding is masked: any id will do
    generation = model.generation_config
    generation.eos_token_id = stop_ids
    generation.pad_token_id = pad_id
    return ChatModel(model, tokenizer, stop_ids, pad_id, generation)


def load_chat_tokenizer(directory: Path, chat_template: str, stop_token: str) -> tuple[Any, int]:
    """The tokenizer saved in `directory` with `chat_template` set (so it is saved with the
    export), and the id of `stop_token`, which ends every message.

    Raises:
        ConfigError: no tokenizer there, a template that does not render, or a stop token the
            tokenizer does not have as one token.
    """
    from jinja2 import TemplateError
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            "step.tokenizer",
            f"no tokenizer can be loaded from {directory} ({' '.join(str(exc).split())[:200]})",
            "give a Hugging Face tokenizer directory, or a model directory saved with one",
        ) from None
    tokenizer.chat_template = chat_template
    try:
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}],
            tokenize=False,
        )
    except TemplateError as exc:
        raise ConfigError(
            "step.chat_template",
            f"does not render ({exc})",
            "a Jinja template over messages (role, content) and add_generation_prompt",
        ) from None
    stop_id = tokenizer.get_vocab().get(stop_token)
    if stop_id is None:
        raise ConfigError(
            "step.stop_token",
            f"'{stop_token}' is not one token of the tokenizer in {directory}",
            "name the single token the chat template ends each message with",
        )
    return tokenizer, int(stop_id)
