"""Where a run's model is: one answer for finetune, optimize, evaluate and serve.

    a training run (pretrain, finetune)   its hf/ directory
    an optimize run                       its export, exports/<format>/, and the model it came from
    a plain directory                     itself: Hugging Face (config.json and weights), or an
                                          export (model.onnx, model.gguf) with config.json

Every directory is checked the same way before any step loads it: config.json is a language
model's, the weights or export file are there, and the tokenizer's files parse; a step then
checks its weight files (quark.lineage.model_files.check_weights) before it loads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError
from quark.core.run import MANIFEST, verify_run
from quark.lineage.model_files import check_onnx, check_tokenizer, read_json
from quark.models.hf import WEIGHT_FILES

# the file an export runs from, by format; hf and torchao exports hold Hugging Face weights
EXPORT_FILES = {"onnx": "model.onnx", "onnx_int8": "model.onnx", "gguf": "model.gguf"}
# exports transformers loads itself (the others have a runtime of their own)
TORCH_EXPORTS = ("hf", "torchao")


@dataclass(frozen=True)
class ModelLocation:
    """A model, found. `directory` holds its config.json and tokenizer and its weights or export
    file; `source` is what was named (a run directory or `directory` itself); an export also
    names its format, precision and the model directory it was exported from (`origin`)."""

    source: Path
    directory: Path
    config: dict[str, Any]
    step: str | None = None
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
        return self.export is None or self.export in TORCH_EXPORTS

    @property
    def positions(self) -> int | None:
        value = self.config.get("max_position_embeddings")
        return int(value) if value else None


def locate_model(
    source: Path,
    key: str,
    allowed: str,
    exports: Sequence[str] = (),
    needs_tokenizer: bool = True,
) -> ModelLocation:
    """The model in `source`, checked; `exports` are the optimize exports the caller can run
    (none: Hugging Face models only).

    Raises:
        ConfigError: on `key`, naming `source` and what is wrong, with `allowed`.
    """
    source = Path(source)
    if not source.exists():
        raise ConfigError(key, f"{source} does not exist", allowed)
    if not source.is_dir():
        raise ConfigError(key, f"{source} is not a directory", allowed)
    if not (source / MANIFEST).is_file():
        export = _plain_format(source, exports)
        runnable = [f for f in ("onnx", "onnx_int8") if f in exports]
        if (
            export is None
            and runnable
            and not any((source / name).is_file() for name in WEIGHT_FILES)
        ):
            raise ConfigError(
                key, f"{source} is not a model (no config.json with weights or model.onnx)", allowed
            )
        location = _checked(source, source, key, allowed, export, None)
        if export is not None:  # a run's export is checked by its sha256 instead
            check_onnx(source / EXPORT_FILES[export], key, allowed)
        return location
    # a run is read only once it completed and its files are still the ones it recorded
    manifest = verify_run(source, key, allowed)
    step = manifest.get("step")
    if step != "optimize":
        if not (source / "hf").is_dir():
            raise ConfigError(key, f"{source} is a {step} run with no hf/ model", allowed)
        return _checked(source, source / "hf", key, allowed, None, str(step), needs_tokenizer)
    found = sorted(p for p in (source / "exports").glob("*") if p.is_dir())
    if len(found) != 1:
        raise ConfigError(key, f"{source} is an optimize run with no export", allowed)
    directory, export = found[0], found[0].name
    if export not in exports:
        can = (
            f"exports {', '.join(exports)}" if exports else "no exports (Hugging Face models only)"
        )
        raise ConfigError(
            key, f"{source} is an optimize run of export={export}; this step runs {can}", allowed
        )
    report = directory / "validation.json"
    precision = json.loads(report.read_text()).get("precision") if report.is_file() else None
    model_input = next(iter(manifest.get("inputs") or []), None)
    if model_input is None:
        raise ConfigError(key, f"{source} does not record the model it exported", allowed)
    origin = locate_model(Path(model_input["path"]), key, allowed).directory
    location = _checked(source, directory, key, allowed, export, "optimize", needs_tokenizer)
    return ModelLocation(source, directory, location.config, "optimize", export, precision, origin)


def find_model(
    cfg: Any,
    key: str,
    allowed: str,
    exports: Sequence[str] = (),
    needs_tokenizer: bool = True,
) -> ModelLocation:
    """The model a step reads, checked: cfg.<key> when set; else the run a pipeline handed
    over (an optimize run's export first, when the step runs `exports`; else a run of a step
    that trains models); else the newest completed run of the latest model-training step that
    has one (finetune, else pretrain)."""
    from quark.core.step_registry import model_steps
    from quark.lineage.finding import find_run, missing

    trainers = model_steps()
    handed = (("optimize",) if exports else ()) + trainers
    source = find_run(
        cfg, trainers, key=key, holds=holds_model, handed_steps=handed, allowed=allowed
    )
    if source is None:
        raise missing(
            cfg,
            key,
            f"{', '.join(trainers[:-1])} or {trainers[-1]} run",
            "train one first (python launch.py step=pretrain), or " + allowed,
        )
    return locate_model(source, key, allowed, exports, needs_tokenizer)


def training_run(location: ModelLocation) -> Path | None:
    """The run that trained the model (its logs/metrics.csv): `source` itself, or the nearest
    ancestor run of a step that trains models; None for a plain directory."""
    from quark.core.step_registry import model_steps
    from quark.lineage.finding import nearest_ancestor

    trainers = model_steps()
    if location.step in trainers:
        return location.source
    if location.step is None:
        return None
    return nearest_ancestor(location.source, lambda _path, step: step in trainers)


def holds_model(run_dir: Path) -> bool:
    """Whether a run holds a language model: a training run's hf/ or an optimize run's
    exports/ (an align=reward_model run holds a reward model in reward_model/ instead)."""
    return (run_dir / "hf").is_dir() or (run_dir / "exports").is_dir()


def chat_template_of(directory: Path) -> str | None:
    """The chat template saved with the tokenizer in `directory` (a fine-tuned model's has
    one), read from the files: no tokenizer is loaded."""
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text()
    config = directory / "tokenizer_config.json"
    template = read_json(config).get("chat_template") if config.is_file() else None
    return template if isinstance(template, str) and template else None


def has_chat_template(directory: Path) -> bool:
    """Whether the tokenizer saved in `directory` carries a chat template."""
    return chat_template_of(directory) is not None


def _plain_format(directory: Path, exports: Sequence[str]) -> str | None:
    """None for a Hugging Face model directory; else the export format of an export directory
    that the caller can run (model.onnx next to config.json)."""
    if any((directory / name).is_file() for name in WEIGHT_FILES):
        return None
    # a GGUF file alone is not enough: its runtime falls back to the model it came from
    for export in ("onnx", "onnx_int8"):
        if export in exports and (directory / EXPORT_FILES[export]).is_file():
            return export
    return None


def _checked(
    source: Path,
    directory: Path,
    key: str,
    allowed: str,
    export: str | None,
    step: str | None,
    needs_tokenizer: bool = True,
) -> ModelLocation:
    """A ModelLocation of `directory` once its files are what a model needs."""
    config_file = directory / "config.json"
    weights = (
        (directory / EXPORT_FILES[export]).is_file()
        if export in EXPORT_FILES
        else any((directory / name).is_file() for name in WEIGHT_FILES)
    )
    if not config_file.is_file() or not weights:
        what = f"{EXPORT_FILES[export]}" if export in EXPORT_FILES else "weights"
        raise ConfigError(key, f"{source} is not a model (no config.json and {what})", allowed)
    try:
        config = read_json(config_file)
    except ValueError as exc:
        raise ConfigError(key, f"{config_file} is unreadable ({exc})", allowed) from None
    if "vocab_size" not in config:
        raise ConfigError(key, f"{config_file} is not a language model's config", allowed)
    check_tokenizer(directory, key, "a model saved with its tokenizer", required=needs_tokenizer)
    return ModelLocation(source, directory, config, step, export)
