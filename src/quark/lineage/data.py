"""The data run a model is measured on (optimize's validation, evaluate's perplexity), and the
check that its token ids mean to the model what they meant when it was tokenized."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError
from quark.lineage.finding import find_run, holds_shards, missing
from quark.lineage.models import ModelLocation

SHARDS_ALLOWED = "give a completed data run of a corpus (not a task set)"


def validation_data(cfg: Any, model: ModelLocation) -> Path:
    """step.data_dir; else the data run a pipeline handed over, if it holds token shards; else
    the data run the model was trained on (through its runs' manifests); else the newest
    completed data run of the experiment that holds token shards. Checked against the model's
    vocabulary. Shared by optimize and evaluate (perplexity)."""
    data_dir = find_run(
        cfg, ("data",), key="step.data_dir", holds=holds_shards, ancestor_of=model.source,
        allowed=SHARDS_ALLOWED,
    )  # fmt: skip
    if data_dir is None:
        raise missing(
            cfg,
            "step.data_dir",
            "data run with token shards",
            "give the data run the model was trained on, e.g. step.data_dir=outputs/demo/data/<time>",
        )
    check_data(data_dir, model.directory, model.config)
    return data_dir


def shard_index(data_dir: Path, key: str = "step.data_dir") -> dict[str, Any]:
    """shards/index.json of the data run `data_dir`, once it is an index whose shard files are
    all there and as long as it says (a run's files are also checked by its manifest; a plain
    directory only by this).

    Raises:
        ConfigError: on `key`, naming the file and what is wrong.
    """
    import numpy as np

    path = data_dir / "shards" / "index.json"
    if not path.is_file():
        raise ConfigError(key, f"{data_dir} holds no token shards", SHARDS_ALLOWED)
    try:
        index = json.loads(path.read_text())
        itemsize = np.dtype(index["dtype"]).itemsize
        shards = [s for split in ("train", "val") for s in index["splits"][split]["shards"]]
        int(index["vocab_size"])  # there, and a number: what steps check the model against
        sizes = {str(s["name"]): int(s["tokens"]) * itemsize for s in shards}
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(key, f"{path} is unreadable ({exc})", SHARDS_ALLOWED) from None
    except (KeyError, TypeError):
        raise ConfigError(
            key, f"{path} is not a token shard index (dtype, vocab_size, splits)", SHARDS_ALLOWED
        ) from None
    for name, size in sizes.items():
        for file in (path.parent / f"{name}.bin", path.parent / f"{name}.idx"):
            if not file.is_file():
                raise ConfigError(key, f"{file} is missing", SHARDS_ALLOWED)
        found = (path.parent / f"{name}.bin").stat().st_size
        if found != size:
            raise ConfigError(
                key, f"{path.parent / name}.bin holds {found} bytes, not the {size} of its index",
                SHARDS_ALLOWED,
            )  # fmt: skip
    return dict(index)


def check_data(data_dir: Path, directory: Path, config: dict[str, Any]) -> None:
    """The data run holds shards whose token ids mean what they mean to the model."""
    data_vocab = int(shard_index(data_dir)["vocab_size"])
    if data_vocab > int(config["vocab_size"]):
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} has token ids up to {data_vocab - 1} and the model in {directory} "
            f"{config['vocab_size']} embeddings",
            "give a data run made with the model's tokenizer",
        )
    ours, theirs = vocabulary(directory), vocabulary(data_dir / "tokenizer")
    if ours and theirs and ours != theirs:
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} was tokenized with another vocabulary than the model's ({directory})",
            "give a data run made with the model's tokenizer",
        )


def vocabulary(directory: Path, key: str = "step.data_dir") -> dict[str, int] | None:
    """token -> id of the tokenizer.json in `directory`, or None without one.

    Raises:
        ConfigError: on `key`, when the file does not parse as a tokenizer.
    """
    path = directory / "tokenizer.json"
    if not path.exists():
        return None
    try:
        tokenizer = json.loads(path.read_text())
        ids = dict(tokenizer.get("model", {}).get("vocab") or {})
        ids.update({t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])})
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise ConfigError(
            key, f"{path} is not a readable tokenizer ({exc})", "a tokenizer.json of Hugging "
            "Face's tokenizers library, as a data run writes it",
        ) from None  # fmt: skip
    return ids
