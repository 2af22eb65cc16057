"""Byte-level BPE tokenizers: trained with `tokenizers`, saved in Hugging Face format so
`AutoTokenizer.from_pretrained(dir)` loads them; or an existing HF tokenizer reused by path."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError

# Chat markers the finetune step's template uses.
CHAT_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


def special_tokens(spec: Any) -> dict[str, str]:
    return {"bos": str(spec.bos_token), "eos": str(spec.eos_token), "pad": str(spec.pad_token)}


def train_tokenizer(texts: Iterable[str], spec: Any) -> Any:
    """Train byte-level BPE on `texts` (streamed) with the configured vocabulary and specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = [*special_tokens(spec).values(), *CHAT_MARKERS]
    # 256 byte symbols are always in a byte-level vocabulary
    minimum = len(specials) + 256
    if int(spec.vocab_size) < minimum:
        raise ConfigError(
            "data.tokenizer.vocab_size",
            f"{spec.vocab_size} cannot hold the {len(specials)} special tokens and 256 byte symbols",
            f"allowed: >= {minimum}",
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(spec.vocab_size),
        min_frequency=int(spec.min_frequency),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_hf_tokenizer(
    tokenizer: Any, directory: Path, spec: Any, model_max_length: int
) -> list[Path]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    names = special_tokens(spec)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names["bos"],
        "eos_token": names["eos"],
        "pad_token": names["pad"],
        "additional_special_tokens": list(CHAT_MARKERS),
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {f"{k}_token": v for k, v in names.items()} | {
        "additional_special_tokens": list(CHAT_MARKERS)
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return [
        directory / n
        for n in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
    ]


def load_tokenizer(path: str) -> tuple[Any, dict[str, Any]]:
    """The `tokenizers.Tokenizer` of an HF tokenizer directory and its tokenizer_config."""
    from tokenizers import Tokenizer

    key, allowed = "data.tokenizer.path", "give a Hugging Face tokenizer directory (fast tokenizer)"
    directory = Path(path).expanduser()
    file = directory / "tokenizer.json" if directory.is_dir() else directory
    if not file.is_file():
        raise ConfigError(key, f"{directory} has no tokenizer.json", allowed)
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:
        raise ConfigError(key, f"{file} is not a readable tokenizer ({exc})", allowed) from None
    config_file = file.parent / "tokenizer_config.json"
    try:
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(key, f"{config_file} is unreadable ({exc})", allowed) from None
    if not isinstance(config, dict):
        raise ConfigError(key, f"{config_file} is not a JSON object", allowed)
    return tokenizer, config


def token_id(tokenizer: Any, token: str, key: str) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise ConfigError(
            key, f"'{token}' is not in the tokenizer's vocabulary", "name a token the tokenizer has"
        )
    return int(found)
