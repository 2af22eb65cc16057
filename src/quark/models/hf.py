"""Hugging Face causal LMs loaded from a local directory (or a hub name when online)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from quark.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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
