"""Inference exports of a trained causal LM, one module per format (the `export` config group):

    hf         safetensors in fp32, bf16 or fp16                       (hf.py)
    onnx       ONNX with key/value-cache inputs, for ONNX Runtime       (onnx.py)
    onnx_int8  the same, dynamically quantized to int8                  (onnx_int8.py)
    torchao    torchao int8 weight-only / int8 dynamic / int4 (CUDA)    (torchao.py)
    gguf       GGUF for llama.cpp, f32, f16 or q8_0                     (gguf.py)

A format module provides

    DEFAULT_TOLERANCE: dict[str, Tolerance]     # by precision, when export.tolerance leaves a key null
    def check(model_dir: Path, config: dict, precision: str) -> None
        '''Raise ConfigError if the model (its config.json) cannot take this export; cheap.'''
    def export(model, model_dir: Path, out_dir: Path, precision: str, threads: int) -> Decoder
        '''Write the export into out_dir and return it loaded back from disk, to be validated.'''

Each export directory also holds the model's config.json and tokenizer, so it stands alone.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from types import ModuleType

from quark.models.hf import TOKENIZER_FILES


def format_module(name: str) -> ModuleType:
    """The module that writes export `name` (a key of quark.core.schemas.export.PRECISIONS)."""
    return importlib.import_module(f"quark.export.{name}")


def copy_model_files(model_dir: Path, out_dir: Path, with_config: bool = True) -> None:
    """Copy the tokenizer files (and config.json) of `model_dir` that exist into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = TOKENIZER_FILES + (("config.json", "generation_config.json") if with_config else ())
    for name in names:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)


def require(package: str, export: str) -> ModuleType:
    """Import `package`, which export `export` needs; missing, it is bad input (exit 2) with
    the install command."""
    try:
        return importlib.import_module(package)
    except ImportError:
        from quark.core.errors import ConfigError

        raise ConfigError(
            "export",
            f"export={export} needs the Python package {package}, which is not installed",
            "install the export extra: pip install -e '.[export]'",
        ) from None


def quiet_exporters() -> None:
    """Exporters' progress lines, graph-pass notes and optional-kernel notices would repeat
    through Hydra's log and bury the summary."""
    import logging
    import warnings

    from transformers.utils import logging as transformers_logging

    for name in ("torchao", "torch.onnx", "onnxscript", "onnx_ir", "gguf", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*", category=FutureWarning)
