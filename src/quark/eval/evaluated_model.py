"""What step=evaluate measures: a Hugging Face model directory in torch, or the export of an
optimize run in that export's own runtime (ONNX Runtime, llama.cpp, torch with torchao or
reduced-precision weights), loaded the way step=optimize validated it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError
from quark.core.run import MANIFEST, read_manifest
from quark.models.hf import holds_weights

KEY = "step.model_dir"
ALLOWED = (
    "give a pretrain, finetune or optimize run directory, or a Hugging Face model directory "
    "(config.json and weights)"
)
# exports a transformers model loads (the others have a runtime of their own)
TORCH_FORMATS = ("hf", "torchao")


@dataclass(frozen=True)
class EvaluatedModel:
    """A model to evaluate. `directory` holds its config.json and tokenizer: the Hugging Face
    model directory, or the export's directory; an export also names the model it came from."""

    source: Path
    directory: Path
    export: str | None = None
    precision: str | None = None
    origin: Path | None = None

    @property
    def label(self) -> str:
        if self.export is None:
            return str(self.directory)
        return f"{self.export} ({self.precision}) export in {self.directory}"

    @property
    def in_torch(self) -> bool:
        """Whether transformers loads it (so generate() and lm-eval's HFLM can run it)."""
        return self.export is None or self.export in TORCH_FORMATS

    def training_run(self) -> Path | None:
        """The pretrain or finetune run that trained it (for its logs/metrics.csv), if any."""
        run = self.source
        for _ in range(2):  # an optimize run names the trained run as its first input
            if not (run / MANIFEST).is_file():
                return None
            manifest = read_manifest(run)
            if manifest.get("step") in ("pretrain", "finetune"):
                return run
            inputs = manifest.get("inputs") or []
            if not inputs:
                return None
            run = Path(inputs[0]["path"])
        return None


def resolve(source: Path) -> EvaluatedModel:
    """The model in `source`: a run's hf/ export, an optimize run's export, or `source` itself.

    Raises:
        ConfigError: `source` is missing, or neither a model nor a run holding one.
    """
    if not source.exists():
        raise ConfigError(KEY, f"{source} does not exist", ALLOWED)
    if not (source / MANIFEST).is_file():
        return EvaluatedModel(source, hf_directory(source, source))
    step = read_manifest(source).get("step")
    if step != "optimize":
        if not (source / "hf").is_dir():
            raise ConfigError(KEY, f"{source} is a {step} run with no hf/ model", ALLOWED)
        return EvaluatedModel(source, hf_directory(source / "hf", source))
    exports = sorted(p for p in (source / "exports").glob("*") if p.is_dir())
    if len(exports) != 1:
        raise ConfigError(KEY, f"{source} is an optimize run with no export", ALLOWED)
    directory = exports[0]
    report = directory / "validation.json"
    precision = json.loads(report.read_text())["precision"] if report.is_file() else None
    inputs = read_manifest(source).get("inputs") or []
    if not inputs:
        raise ConfigError(KEY, f"{source} does not record the model it exported", ALLOWED)
    origin = resolve(Path(inputs[0]["path"])).directory
    return EvaluatedModel(source, directory, directory.name, precision, origin)


def hf_directory(directory: Path, named: Path) -> Path:
    """`directory` if it holds config.json and weights of a language model."""
    if not holds_weights(directory):
        raise ConfigError(KEY, f"{named} is not a model (no config.json and weights)", ALLOWED)
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            KEY, f"{directory / 'config.json'} is unreadable ({exc})", ALLOWED
        ) from None
    if not isinstance(config, dict) or "vocab_size" not in config:
        raise ConfigError(KEY, f"{directory / 'config.json'} is not a language model's", ALLOWED)
    return directory


def has_chat_template(directory: Path) -> bool:
    """Whether the tokenizer saved in `directory` carries a chat template (a fine-tuned model's
    does), read from the files: no tokenizer is loaded."""
    if (directory / "chat_template.jinja").is_file():
        return True
    config = directory / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def stop_token_ids(model: EvaluatedModel, tokenizer: Any) -> list[int]:
    """The ids generation stops at: the generation config's eos ids (fine-tuning writes its
    end-of-message token there), else the tokenizer's end-of-text token."""
    for directory in (model.directory, model.origin):
        path = directory / "generation_config.json" if directory else None
        if path is not None and path.is_file():
            eos = json.loads(path.read_text()).get("eos_token_id")
            if eos is not None:
                return [int(i) for i in (eos if isinstance(eos, list) else [eos])]
    return [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []


def load_torch_model(model: EvaluatedModel) -> Any:
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


def load_decoder(model: EvaluatedModel, torch_model: Any, threads: int) -> Any:
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
