"""The data run a model is measured on (optimize's validation, evaluate's perplexity), and the
check that its token ids mean to the model what they meant when it was tokenized."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError
from quark.lineage.finding import find_run, holds_shards, missing
from quark.lineage.models import ModelLocation


def validation_data(cfg: Any, model: ModelLocation) -> Path:
    """step.data_dir; else the data run a pipeline handed over, if it holds token shards; else
    the data run the model was trained on (through its runs' manifests); else the newest
    completed data run of the experiment that holds token shards. Checked against the model's
    vocabulary. Shared by optimize and evaluate (perplexity)."""
    data_dir = find_run(
        cfg, ("data",), key="step.data_dir", holds=holds_shards, ancestor_of=model.source
    )
    if data_dir is None:
        raise missing(
            cfg,
            "step.data_dir",
            "data run with token shards",
            "give the data run the model was trained on, e.g. step.data_dir=outputs/demo/data/<time>",
        )
    check_data(data_dir, model.directory, model.config)
    return data_dir


def check_data(data_dir: Path, directory: Path, config: dict[str, Any]) -> None:
    """The data run holds shards whose token ids mean what they mean to the model."""
    from quark.data.packing import read_index

    if not holds_shards(data_dir):
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} holds no token shards",
            "give a completed data run of a corpus (not a task set)",
        )
    data_vocab = int(read_index(data_dir / "shards")["vocab_size"])
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


def vocabulary(directory: Path) -> dict[str, int] | None:
    """token -> id of the tokenizer.json in `directory`, or None without one."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    tokenizer = json.loads(path.read_text())
    ids = dict(tokenizer.get("model", {}).get("vocab") or {})
    ids.update({t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])})
    return ids
