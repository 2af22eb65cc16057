"""export=torchao: the model's linear layers quantized by torchao, saved by transformers as
safetensors that `AutoModelForCausalLM.from_pretrained` loads back quantized (torchao installed).

    int8_weight_only   int8 weights per output channel, computed in the activations' precision
    int8_dynamic       int8 weights, activations quantized per token at run time
    int4_weight_only   int4 weights in groups (bf16, CUDA only)

    exports/torchao/  config.json (with its quantization_config), model.safetensors, tokenizer files
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError
from quark.export import copy_model_files, require
from quark.export.decoding import TorchDecoder
from quark.export.validation import Tolerance
from quark.models.hf import save_model

DEFAULT_TOLERANCE = {
    "int8_weight_only": Tolerance(
        min_logit_cosine=0.999, min_top1_agreement=0.97, max_ppl_change_pct=1.0
    ),
    "int8_dynamic": Tolerance(
        min_logit_cosine=0.99, min_top1_agreement=0.95, max_ppl_change_pct=2.0
    ),
    "int4_weight_only": Tolerance(
        min_logit_cosine=0.98, min_top1_agreement=0.85, max_ppl_change_pct=10.0
    ),
}
# int4 groups: the largest torchao offers that divides every linear layer's input size
INT4_GROUP_SIZES = (128, 64, 32)


def check(model_dir: Path, config: dict[str, Any], precision: str) -> None:
    import logging

    # torchao announces its CUDA-only kernels and its enums on import: noise on a CPU machine
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    require("torchao", "torchao")
    if precision == "int4_weight_only":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "export.precision",
                "int4_weight_only runs on CUDA only and no GPU is available",
                "on CPU choose int8_weight_only or int8_dynamic",
            )
        int4_group_size(config)


def int4_group_size(config: dict[str, Any]) -> int:
    sizes = [int(config["hidden_size"]), int(config["intermediate_size"])]
    for group in INT4_GROUP_SIZES:
        if all(size % group == 0 for size in sizes):
            return group
    raise ConfigError(
        "export.precision",
        f"int4_weight_only needs hidden_size and intermediate_size divisible by 32 (they are {sizes})",
        "choose int8_weight_only or int8_dynamic",
    )


def export(
    model: Any, model_dir: Path, out_dir: Path, precision: str, threads: int
) -> TorchDecoder:
    import torch
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )
    from transformers import AutoModelForCausalLM, TorchAoConfig

    if precision == "int4_weight_only":
        scheme: Any = Int4WeightOnlyConfig(group_size=int4_group_size(model.config.to_dict()))
        dtype, device = torch.bfloat16, "cuda"
    elif precision == "int8_dynamic":
        scheme, dtype, device = Int8DynamicActivationInt8WeightConfig(), torch.float32, "cpu"
    else:
        scheme, dtype, device = Int8WeightOnlyConfig(), torch.float32, "cpu"
    quantized = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, device_map=device, quantization_config=TorchAoConfig(scheme)
    )
    save_model(quantized, out_dir)
    copy_model_files(model_dir, out_dir, with_config=False)
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, device_map=device)
    return TorchDecoder(reloaded, device)
