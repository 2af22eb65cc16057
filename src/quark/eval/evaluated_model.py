"""Loading what step=evaluate measures (a quark.lineage ModelLocation): a Hugging Face model
directory in torch, or the export of an optimize run in that export's own runtime (ONNX
Runtime, llama.cpp, torch with torchao or reduced-precision weights), loaded the way
step=optimize validated it.
"""

from __future__ import annotations

import json
from typing import Any

from quark.core.errors import ConfigError
from quark.lineage.models import ModelLocation

KEY = "step.model_dir"
ALLOWED = (
    "give a pretrain, finetune, align or optimize run directory, or a Hugging Face model directory "
    "(config.json and weights)"
)
# the optimize exports evaluate runs, each in its own runtime
EVALUATED_EXPORTS = ("hf", "torchao", "onnx", "onnx_int8", "gguf")


def stop_token_ids(model: ModelLocation, tokenizer: Any) -> list[int]:
    """The ids generation stops at: the generation config's eos ids (fine-tuning writes its
    end-of-message token there), else the tokenizer's end-of-text token."""
    for directory in (model.directory, model.origin):
        path = directory / "generation_config.json" if directory else None
        if path is not None and path.is_file():
            eos = json.loads(path.read_text()).get("eos_token_id")
            if eos is not None:
                return [int(i) for i in (eos if isinstance(eos, list) else [eos])]
    return [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []


def load_torch_model(model: ModelLocation) -> Any:
    """The transformers model of a plain model directory (fp32, on the GPU when there is one),
    or of an hf or torchao export (in the precision it was saved in, on the CPU: where
    step=optimize validated it, except torchao's CUDA-only int4)."""
    import torch
    from transformers import AutoModelForCausalLM

    if model.export is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded: Any = AutoModelForCausalLM.from_pretrained(model.directory, dtype=torch.float32)
        return loaded.to(device).eval()
    device = "cuda" if model.precision == "int4_weight_only" else "cpu"
    return AutoModelForCausalLM.from_pretrained(
        model.directory, dtype="auto", device_map=device
    ).eval()


def load_decoder(model: ModelLocation, torch_model: Any, threads: int) -> Any:
    """A quark.export.decoding.Decoder over the model: torch for `torch_model` (given when
    `model.in_torch`), else the export's own runtime."""
    from quark.export.decoding import TorchDecoder

    if torch_model is not None:
        return TorchDecoder(torch_model, str(next(torch_model.parameters()).device))
    if model.export in ("onnx", "onnx_int8"):
        from quark.export import require

        require("onnxruntime", model.export)
        from quark.export.onnx import OnnxDecoder

        return OnnxDecoder(model.directory / "model.onnx", threads)
    if model.export == "gguf":
        import torch
        from transformers import AutoModelForCausalLM

        from quark.export.gguf_runtime import gguf_decoder

        # llama.cpp when installed; else the file's tensors read back into the source model
        assert model.origin is not None  # resolve() records it for every export
        source = AutoModelForCausalLM.from_pretrained(model.origin, dtype=torch.float32)
        return gguf_decoder(model.directory / "model.gguf", source, str(model.precision), threads)
    raise ConfigError(KEY, f"{model.label}: no runtime for export={model.export}", ALLOWED)
