"""Schema of the `model` group: a built-in Llama size, or a Hugging Face model by path."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

# how a built-in model's weights start (quark.models.llama.INITS)
INITS = ("scaled", "hf")


@dataclass
class ModelSchema:
    _target_: str = "quark.models.llama.build_llama"
    name: str = MISSING
    # Llama shape. Left null for model=hf, whose shape comes from its config.json.
    vocab_size: int | None = ranged(None, ge=1)
    hidden_size: int | None = ranged(None, ge=1)
    num_layers: int | None = ranged(None, ge=1)
    num_heads: int | None = ranged(None, ge=1)
    num_kv_heads: int | None = ranged(None, ge=1)
    head_dim: int | None = ranged(None, ge=1)
    intermediate_size: int | None = ranged(None, ge=1)
    max_seq_len: int | None = ranged(None, ge=1)
    tie_embeddings: bool = False
    rope_theta: float = ranged(10000.0, gt=0)
    rms_norm_eps: float = ranged(1e-5, gt=0)
    # scaled: GPT-NeoX's small init, output projections scaled by depth (LitGPT's pretrain
    # init); hf: transformers' own, normal(0, 0.02) everywhere. Built-in sizes only.
    init: str = choice("scaled", INITS)
    # model=hf: a local directory with config.json (or a hub name when online).
    name_or_path: str | None = None
    trust_remote_code: bool = False

    def check(self) -> None:
        if self.name_or_path is None:
            shape = (
                "vocab_size",
                "hidden_size",
                "num_layers",
                "num_heads",
                "num_kv_heads",
                "intermediate_size",
                "max_seq_len",
            )
            for key in shape:
                if getattr(self, key) is None:
                    raise ConfigError(
                        f"model.{key}",
                        "not set",
                        "a built-in model needs every shape key, or use model=hf "
                        "model.name_or_path=DIR",
                    )
            heads, kv_heads, hidden = self.num_heads, self.num_kv_heads, self.hidden_size
            assert heads is not None and kv_heads is not None and hidden is not None
            if self.head_dim is None and hidden % heads != 0:
                raise ConfigError(
                    "model.num_heads",
                    f"{heads} does not divide model.hidden_size={hidden}",
                    "choose heads that divide hidden_size, or set model.head_dim",
                )
            if heads % kv_heads != 0:
                raise ConfigError(
                    "model.num_kv_heads",
                    f"{kv_heads} does not divide model.num_heads={heads}",
                    "grouped-query attention needs num_heads to be a multiple of num_kv_heads",
                )
        else:
            check_local_config(self.name_or_path)


def check_local_config(name_or_path: str) -> None:
    """model.name_or_path's config.json, when it is on this machine, is a JSON object: checked
    with the config, before any step reads it (a hub name, or a directory without one, is the
    loader's to refuse)."""
    import json
    from pathlib import Path

    path = Path(name_or_path).expanduser()
    config = path / "config.json" if path.is_dir() else path
    if not config.is_file():
        return
    allowed = "give a Hugging Face model directory whose config.json is a model's config"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(
            "model.name_or_path", f"{config} is unreadable ({exc})", allowed
        ) from None
    if not isinstance(data, dict):
        raise ConfigError("model.name_or_path", f"{config} is not a JSON object", allowed)
