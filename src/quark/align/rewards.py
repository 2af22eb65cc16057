"""The rewards of online RL (align=grpo), named by `align.reward`:

arithmetic       1 when the completion is the record's `answer` exactly (after stripping
                 whitespace), else 0: a verifiable reward
reward_model     the score of a reward model (an align=reward_model run, or a directory
                 AutoModelForSequenceClassification loads) on the conversation answered
module:function  any Python callable, TRL's convention: function(prompts, completions,
                 **columns) -> one float per completion, where prompts are the user's last
                 messages and every other field of the records is a keyword of lists
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quark.core.errors import ConfigError
from quark.data.prompts import PromptRecord

KEY = "align.reward"
ALLOWED = (
    "arithmetic, reward_model (with align.reward_model_dir or a reward model run in the "
    "experiment), or a Python callable as module:function"
)


def arithmetic(
    prompts: Sequence[str], completions: Sequence[str], answer: Sequence[Any], **_: Any
) -> list[float]:
    """1.0 for a completion that is the answer exactly, else 0.0."""
    return [float(c.strip() == str(a).strip()) for c, a in zip(completions, answer, strict=True)]


Scorer = Callable[[Sequence[PromptRecord], Sequence[str]], Sequence[float]]


@dataclass
class Reward:
    """A reward, checked: what the config named, the record fields it reads, and what scores
    a completion given the record that asked it (and the reward model, moved with the
    policy)."""

    name: str
    needs: tuple[str, ...]
    score: Scorer
    model: Any = None

    def to(self, device: torch.device) -> None:
        if self.model is not None:
            self.model.to(device)

    def __call__(self, records: Sequence[PromptRecord], completions: Sequence[str]) -> torch.Tensor:
        """One reward per completion (`records[i]` asked `completions[i]`).

        Raises:
            ConfigError: the reward raised, or returned other than one finite number per
                completion.
        """
        try:
            values = list(self.score(records, completions))
        except ConfigError:
            raise
        except Exception as exc:  # a user's function: any error is theirs to see, in one line
            problem = " ".join(str(exc).split())[:200]
            raise ConfigError(
                KEY, f"{self.name} raised {type(exc).__name__}: {problem}", ALLOWED
            ) from None
        if len(values) != len(completions) or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in values
        ):
            raise ConfigError(
                KEY,
                f"{self.name} returned {len(values)} values for {len(completions)} completions "
                f"(first: {values[:3]})",
                "return one finite number per completion",
            )
        return torch.tensor(values, dtype=torch.float32)


def load_reward(spec: str, reward_model_dir: Path | None) -> Reward:
    """The reward `align.reward` names; `reward_model_dir` is the reward model's directory
    when the name is reward_model.

    Raises:
        ConfigError: an unknown name, a callable that cannot be imported, or a directory that
            holds no reward model.
    """
    if spec == "arithmetic":
        return Reward(spec, ("answer",), trl_convention(arithmetic))
    if spec == "reward_model":
        if reward_model_dir is None:
            raise ConfigError(KEY, "reward_model needs a reward model", ALLOWED)
        return _reward_model(reward_model_dir)
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ConfigError(KEY, f"'{spec}' is not a reward", ALLOWED)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(KEY, f"cannot import {module_name} ({exc})", ALLOWED) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(KEY, f"{module_name} has no callable {function_name}", ALLOWED)
    return Reward(spec, (), trl_convention(function))


def trl_convention(function: Callable[..., Sequence[float]]) -> Scorer:
    """A scorer calling `function(prompts, completions, **columns)` as TRL calls reward
    functions: the prompts are the user's last messages, and each field of the records is a
    keyword holding one value per completion."""

    def score(records: Sequence[PromptRecord], completions: Sequence[str]) -> Sequence[float]:
        names = sorted({name for r in records for name in r.fields})
        columns = {name: [r.fields.get(name) for r in records] for name in names}
        prompts = [r.conversation[-1]["content"] for r in records]
        return function(prompts=prompts, completions=list(completions), **columns)

    return score


def _reward_model(directory: Path) -> Reward:
    """The score of the sequence classifier in `directory` on each conversation answered,
    rendered with its tokenizer's chat template."""
    import json

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    key, allowed = (
        "align.reward_model_dir",
        "give an align=reward_model run (its reward_model/) or such a directory",
    )
    config = directory / "config.json"
    architectures = (
        json.loads(config.read_text()).get("architectures") if config.is_file() else None
    )
    if not architectures or not str(architectures[0]).endswith("ForSequenceClassification"):
        raise ConfigError(
            key,
            f"{directory} holds no sequence-classification model (config.json architectures: "
            f"{architectures})",
            allowed,
        )
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if not tokenizer.chat_template:
        raise ConfigError(key, f"the tokenizer in {directory} has no chat template", allowed)
    model = AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    model.requires_grad_(False)
    pad_id = int(model.config.pad_token_id)

    def score(records: Sequence[PromptRecord], completions: Sequence[str]) -> list[float]:
        texts = [
            tokenizer.apply_chat_template(
                [*r.conversation, {"role": "assistant", "content": c}], tokenize=False
            )
            for r, c in zip(records, completions, strict=True)
        ]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        device = next(model.parameters()).device
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        return [float(v) for v in logits[:, 0].float().cpu()]

    return Reward("reward_model", (), score, model)
