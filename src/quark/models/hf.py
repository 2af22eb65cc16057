"""Hugging Face causal LMs loaded from a local directory (or a hub name when online)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


# the files that hold a Hugging Face model's weights, one of which a model directory has
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def holds_weights(directory: Path) -> bool:
    """Whether `directory` has a config.json and weights: a model transformers can load."""
    return (directory / "config.json").is_file() and any(
        (directory / name).is_file() for name in WEIGHT_FILES
    )


def run_model_dir(source: Path, key: str, allowed: str) -> Path:
    """The Hugging Face model directory of `source`: a run's hf/ export, or `source` itself;
    anything else is a ConfigError on `key` (finetune's init_from, optimize's model_dir)."""
    from quark.core.run import MANIFEST, read_manifest

    if not source.exists():
        raise ConfigError(key, f"{source} does not exist", allowed)
    directory = source
    if (source / MANIFEST).is_file():
        directory = source / "hf"
        if not directory.is_dir():
            step = read_manifest(source).get("step")
            raise ConfigError(key, f"{source} is a {step} run with no hf/ model", allowed)
    if not holds_weights(directory):
        raise ConfigError(key, f"{source} is not a model (no config.json and weights)", allowed)
    return directory


def hub_offline() -> bool:
    # Quark never reaches a hub unless the user says so: offline unless HF_HUB_OFFLINE=0.
    return os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False, **_: Any) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained`, local files only while offline."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    local = Path(name_or_path).expanduser()
    if not local.exists() and hub_offline():
        raise ConfigError(
            "model.name_or_path",
            f"'{name_or_path}' is not a local directory and the hub is off (HF_HUB_OFFLINE)",
            "give a local model directory, or set HF_HUB_OFFLINE=0 to download",
        )
    return AutoModelForCausalLM.from_pretrained(
        str(local) if local.exists() else name_or_path,
        trust_remote_code=trust_remote_code,
        local_files_only=hub_offline(),
    )
