"""Hugging Face causal LMs loaded from a local directory (or a hub name when online)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
# the files of a Hugging Face tokenizer saved with a model, any of which a model directory may
# have; copied with the model wherever it goes
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def save_model(model: PreTrainedModel, directory: Path) -> None:
    """`model.save_pretrained(directory)`, without the DeepSpeed import it would otherwise cost
    a process that never used DeepSpeed (see deepspeed_left_unimported)."""
    with deepspeed_left_unimported():
        model.save_pretrained(directory)


@contextmanager
def deepspeed_left_unimported() -> Iterator[None]:
    """save_pretrained unwraps the model through accelerate, which imports DeepSpeed (1.2 s)
    whenever it is installed, to check whether the model is a DeepSpeedEngine. No object can be
    one while DeepSpeed is not imported: then accelerate is told it is not installed."""
    import accelerate.utils.other as accelerate_other

    if "deepspeed" in sys.modules or not hasattr(accelerate_other, "is_deepspeed_available"):
        yield
        return
    installed = accelerate_other.is_deepspeed_available
    accelerate_other.is_deepspeed_available = lambda: False
    try:
        yield
    finally:
        accelerate_other.is_deepspeed_available = installed


def hub_offline() -> bool:
    # Quark never reaches a hub unless the user says so: offline unless HF_HUB_OFFLINE=0.
    return os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False, **_: Any) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained`, local files only while offline."""

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


def check_seq_len(seq_len: int, positions: int, key: str = "step.seq_len") -> None:
    """A sequence of `seq_len` tokens must fit the model's `positions`."""
    if seq_len > positions:
        raise ConfigError(
            key, f"{seq_len} exceeds the model's {positions} positions", f"allowed: <= {positions}"
        )
