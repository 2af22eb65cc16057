"""Checks of a model directory's files, read as JSON or from their headers (nothing is loaded):
what a step refuses before its run starts, naming the config key that pointed there, rather
than failing deep inside transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError, one_line
from quark.models.hf import TOKENIZER_FILES


def check_tokenizer(directory: Path, key: str, allowed: str, required: bool = True) -> None:
    """The tokenizer files in `directory` parse (read as JSON, nothing loaded); with
    `required`, there is one.

    Raises:
        ConfigError: on `key`: a tokenizer file that is unreadable, or none where required.
    """
    if not directory.is_dir():
        problem = "does not exist" if not directory.exists() else "is not a directory"
        raise ConfigError(key, f"{directory} {problem}", allowed)
    for name in TOKENIZER_FILES:
        if name.endswith(".json") and (directory / name).exists():
            try:
                read_json(directory / name)
            except ValueError as exc:
                raise ConfigError(
                    key, f"{directory / name} is unreadable ({exc})", allowed
                ) from None
    if required and not any(
        (directory / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")
    ):
        raise ConfigError(key, f"{directory} has no tokenizer", allowed)


def check_weights(directory: Path, key: str, allowed: str) -> None:
    """The Hugging Face weight files in `directory` are whole, read from their headers (no
    tensor is loaded): a safetensors file holds every byte its header points to, a sharded
    model's index names shards that are there, a pytorch_model.bin is a torch.save archive.
    Steps call it before they load a model, so that a file cut short is refused before the
    run starts rather than deep inside transformers.

    Raises:
        ConfigError: on `key`, naming the file and what is wrong, with `allowed`.
    """
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).exists():
            _check_weight_file(directory / name, key, allowed)
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / name
        if not index.exists():
            continue
        try:
            shards = read_json(index).get("weight_map")
        except ValueError as exc:
            raise ConfigError(key, f"{index} is unreadable ({exc})", allowed) from None
        if not isinstance(shards, dict) or not shards:
            raise ConfigError(key, f"{index} has no weight_map", allowed)
        for shard in sorted(set(map(str, shards.values()))):
            _check_weight_file(directory / shard, key, allowed)


def _check_weight_file(path: Path, key: str, allowed: str) -> None:
    """`path` is a whole safetensors file, or a torch.save archive (a .bin)."""
    import struct
    import zipfile

    if not path.is_file():
        problem = "is not a file" if path.exists() else "is missing"
        problem = "is a link to nothing" if path.is_symlink() and not path.exists() else problem
        raise ConfigError(key, f"{path} {problem}", allowed)
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(key, f"{path} is empty", allowed)
    if path.suffix == ".bin":
        # torch.save writes a zip archive (its end record is the file's last bytes); the
        # legacy format is a pickle, which starts with the PROTO opcode
        with open(path, "rb") as handle:
            legacy = handle.read(1) == b"\x80"
        if not (legacy or zipfile.is_zipfile(path)):
            raise ConfigError(
                key, f"{path} is not a torch.save archive (truncated, or another kind of file)",
                allowed,
            )  # fmt: skip
        return
    # safetensors: an 8-byte little-endian header length, a JSON header, then the tensors
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        header = handle.read(length) if 0 < length <= size - 8 else b""
    try:
        tensors = json.loads(header) if header else None
    except (UnicodeDecodeError, ValueError):
        tensors = None
    if not isinstance(tensors, dict):
        raise ConfigError(
            key, f"{path} is not a safetensors file (its header does not parse: truncated, or "
            "another kind of file)", allowed,
        )  # fmt: skip
    offsets = [t.get("data_offsets") for t in tensors.values() if isinstance(t, dict)]
    ends = [o[1] for o in offsets if isinstance(o, list) and len(o) == 2 and isinstance(o[1], int)]
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        raise ConfigError(
            key, f"{path} is cut short ({size} bytes of the {needed} its header describes)",
            allowed,
        )  # fmt: skip


def check_onnx(path: Path, key: str, allowed: str) -> None:
    """`path` is a whole ONNX model: its graph parses and is well formed (every node's inputs
    are defined, so a file cut between two initializers is caught too), and each tensor kept
    in an external data file has its bytes there. Nothing runs; the external data is not read.

    Raises:
        ConfigError: on `key`, naming the file and what is wrong, with `allowed`.
    """
    import onnx
    from google.protobuf.message import DecodeError

    if path.stat().st_size == 0:
        raise ConfigError(key, f"{path} is empty", allowed)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, RuntimeError, ValueError) as exc:
        why = one_line(str(exc))[:160] or type(exc).__name__
        raise ConfigError(
            key, f"{path} is not a whole ONNX model (truncated, or another kind of file: {why})",
            allowed,
        ) from None  # fmt: skip
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entry = {e.key: e.value for e in tensor.external_data}
        data = path.parent / entry.get("location", "")
        needed = int(entry.get("offset", 0)) + int(entry.get("length", 0))
        size = data.stat().st_size if data.is_file() else -1
        if size < needed:
            problem = f"is cut short ({size} bytes, {needed} needed)" if size >= 0 else "is missing"
            raise ConfigError(
                key, f"{data} (external data of {path.name}, tensor {tensor.name}) {problem}",
                allowed,
            )  # fmt: skip


def check_classifier(
    directory: Path, key: str, allowed: str, kind: str = "text classifier"
) -> dict[str, Any]:
    """The config of the sequence-classification model in `directory` (`kind`: a reward model,
    the safety guard's text classifier), once its config, tokenizer files and weights are readable
    (whether it has a tokenizer is the caller's to check: tokenizers come in several files).

    Raises:
        ConfigError: on `key`, naming `directory` and what is wrong, with `allowed`.
    """
    if not directory.is_dir():
        problem = "does not exist" if not directory.exists() else "is not a directory"
        raise ConfigError(key, f"{directory} {problem}", allowed)
    try:
        config = read_json(directory / "config.json")
    except ValueError:
        raise ConfigError(
            key, f"{directory} is not a {kind} (no readable config.json)", allowed
        ) from None
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise ConfigError(
            key,
            f"{directory} is not a {kind} (its architectures are "
            f"{architectures or 'not named'}, not a ...ForSequenceClassification)",
            allowed,
        )
    check_tokenizer(directory, key, allowed, required=False)
    check_weights(directory, key, allowed)
    return config


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; ValueError if it is unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise ValueError("not text") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data
