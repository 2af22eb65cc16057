"""LoRA through PEFT: adapters on a model's target modules, and the two exports of a LoRA run
(the adapter alone, and the model with the adapter merged into its weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError


def add_lora(model: Any, peft_cfg: DictConfig) -> Any:
    """`model` wrapped by PEFT with LoRA adapters on `peft.target_modules`, everything else
    frozen except `peft.modules_to_save`.

    Raises:
        ConfigError: a target module or module to save that the model does not have.
    """
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    linear = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if type(module).__name__ == "Linear"
        }
    )
    for key in ("target_modules", "modules_to_save"):
        missing = [m for m in peft_cfg[key] if m not in names]
        if missing:
            raise ConfigError(
                f"peft.{key}",
                f"{', '.join(missing)} not found in the model",
                f"the model's linear modules are: {', '.join(linear)}",
            )
    config = LoraConfig(
        r=int(peft_cfg.rank),
        lora_alpha=int(peft_cfg.alpha),
        lora_dropout=float(peft_cfg.dropout),
        target_modules=list(peft_cfg.target_modules),
        modules_to_save=list(peft_cfg.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def trainable_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merged_model(peft_model: Any, sample: Any) -> tuple[Any, float]:
    """The base model with the adapters merged into its weights, and the largest logit
    difference between it and the PEFT model on `sample` (token ids, batch first)."""
    import torch

    peft_model.eval()
    with torch.no_grad():
        before = peft_model(input_ids=sample).logits.float()
        merged = peft_model.merge_and_unload()
        after = merged(input_ids=sample).logits.float()
    return merged, float((before - after).abs().max())


def save_adapter(peft_model: Any, adapter_dir: Path, tokenizer: Any) -> None:
    """The adapter in PEFT format (adapter_config.json, adapter_model.safetensors) with the
    tokenizer, so `PeftModel.from_pretrained(base, adapter_dir)` rebuilds the trained model."""
    peft_model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
