"""Schema of the `peft` group: how finetune trains the model, fully or through LoRA adapters."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

METHODS = ("none", "lora")
# every linear layer of a Llama block
LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class PeftSchema:
    # none: every weight trains; lora: low-rank adapters on target_modules, the rest frozen
    name: str = choice("none", METHODS)
    # LoRA: rank of the update B @ A added to each target weight
    rank: int = ranged(8, ge=1)
    # LoRA: the update is scaled by alpha / rank
    alpha: int = ranged(16, ge=1)
    dropout: float = ranged(0.0, ge=0, lt=1)
    # LoRA: the modules (by their last name, e.g. q_proj) that get adapters
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR_MODULES))
    # LoRA: modules trained fully besides the adapters (e.g. embed_tokens, lm_head)
    modules_to_save: list[str] = field(default_factory=list)
    # LoRA: write the merged model to hf/ (loads without peft); the adapter always goes to adapter/
    merge: bool = True

    def check(self) -> None:
        if self.name == "lora" and not self.target_modules:
            raise ConfigError(
                "peft.target_modules", "is empty", "name at least one module, e.g. [q_proj, v_proj]"
            )
