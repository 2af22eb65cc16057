"""Llama-architecture causal LMs: their shape, and the Hugging Face model built from it.

`LlamaShape` is plain Python so the planner can reason about a model without importing torch;
`build_llama` turns the same shape into a `transformers.LlamaForCausalLM`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.core.errors import ConfigError, QuarkError

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM

# how build_llama draws a fresh model's weights (see `initialize`); the first is the default
INITS = ("scaled", "hf")


@dataclass(frozen=True)
class LlamaShape:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_seq_len: int
    tie_embeddings: bool = False
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    @property
    def attention_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @classmethod
    def from_model_config(cls, model: Any) -> LlamaShape:
        """The shape of a `model` config group: a built-in size, or model=hf read from config.json."""
        if model.get("name_or_path"):
            return cls.from_hf_config(hf_config_file(str(model.name_or_path)))
        return cls(
            vocab_size=int(model.vocab_size),
            hidden_size=int(model.hidden_size),
            num_layers=int(model.num_layers),
            num_heads=int(model.num_heads),
            num_kv_heads=int(model.num_kv_heads),
            intermediate_size=int(model.intermediate_size),
            max_seq_len=int(model.max_seq_len),
            tie_embeddings=bool(model.tie_embeddings),
            head_dim=int(model.head_dim) if model.get("head_dim") else None,
            rope_theta=float(model.get("rope_theta", 10000.0)),
            rms_norm_eps=float(model.get("rms_norm_eps", 1e-5)),
        )

    @classmethod
    def from_hf_config(cls, path: Path) -> LlamaShape:
        """Read a Llama-family config.json (Llama, Mistral, Qwen2 without biases, ...)."""
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise QuarkError(f"{path}: cannot read the model config ({exc})") from None
        required = (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        )
        missing = [key for key in required if key not in config]
        if missing:
            raise QuarkError(
                f"{path}: not a decoder config the planner understands (missing {', '.join(missing)}); "
                "it needs a Llama-style config.json"
            )
        heads = int(config["num_attention_heads"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            intermediate_size=int(config["intermediate_size"]),
            max_seq_len=int(config.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            head_dim=config.get("head_dim"),
            rope_theta=float(
                config.get("rope_theta")
                or (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
            ),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        )

    def to_hf_config(self) -> LlamaConfig:
        import inspect

        from transformers import LlamaConfig

        # transformers 5 takes RoPE settings as `rope_parameters`; 4.x as `rope_theta`.
        if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:
            rope: dict[str, Any] = {
                "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta}
            }
        else:
            rope = {"rope_theta": self.rope_theta}
        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.attention_head_dim,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_seq_len,
            tie_word_embeddings=self.tie_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            attention_bias=False,
            mlp_bias=False,
            **rope,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hf_config_file(name_or_path: str) -> Path:
    """config.json of a local Hugging Face model directory (or the file itself)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        config = path / "config.json"
        if config.is_file():
            return config
        raise ConfigError(
            "model.name_or_path",
            f"{path} has no config.json",
            "give a Hugging Face model directory",
        )
    raise ConfigError(
        "model.name_or_path",
        f"'{name_or_path}' is not a local directory or file",
        "give a local Hugging Face model directory (Quark runs offline by default)",
    )


def build_llama(init: str = "scaled", **shape: Any) -> LlamaForCausalLM:
    """A freshly initialised `LlamaForCausalLM` of the given shape (keys of the model group),
    its weights drawn as `init` says (see `initialize`)."""
    from transformers import LlamaForCausalLM

    keys = LlamaShape.__dataclass_fields__
    llama = LlamaShape(**{k: v for k, v in shape.items() if k in keys})
    model = LlamaForCausalLM(llama.to_hf_config())
    initialize(model, llama, init)
    return model


def initialize(model: LlamaForCausalLM, shape: LlamaShape, init: str) -> None:
    """Draw `model`'s weights afresh as `init` says.

    - `hf`: what transformers does, normal(0, 0.02) for every embedding and linear layer.
    - `scaled`: GPT-NeoX's "small init" (normal with std sqrt(2 / (5 d)), Nguyen and Salazar
      2019) for embeddings and linear layers, and std 1 / (sqrt(d) L) for the two projections
      that write into the residual stream (attention's o_proj, the MLP's down_proj), so the
      residual stream's variance does not grow with depth. LitGPT's `pretrain` and TinyLlama
      start this way; at d = 256 it gives the embeddings and lm_head twice transformers' std.
      bench/pretrain_vs_litgpt.py measures the two (bench/RESULTS.md).
    Norm weights start at one either way.
    """
    import math

    import torch

    if init == "hf":
        return  # LlamaForCausalLM's constructor drew them
    if init != "scaled":
        raise ConfigError(
            "model.init", f"'{init}' is not an initialisation", f"allowed: {', '.join(INITS)}"
        )
    hidden = shape.hidden_size
    std = math.sqrt(2.0 / (5 * hidden))
    residual_std = 1.0 / math.sqrt(hidden) / shape.num_layers
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                writes_residual = name.endswith(("self_attn.o_proj", "mlp.down_proj"))
                module.weight.normal_(0.0, residual_std if writes_residual else std)
                if isinstance(module, torch.nn.Linear) and module.bias is not None:
                    module.bias.zero_()
