"""Full-precision Hugging Face weights from the checkpoint of any training strategy.

One process and DDP write one Lightning `.ckpt` file; DeepSpeed ZeRO writes a directory of
per-rank shards (read with DeepSpeed's own zero_to_fp32); FSDP2 writes a
torch.distributed.checkpoint (DCP) directory. `consolidated_state_dict` reads all three on one
process, without a process group, and returns the weights keyed as the Hugging Face model keys
them (the LightningModule's `model.` prefix removed).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.core.errors import QuarkError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

# CausalLMModule holds the Hugging Face model as `self.model`
MODULE_PREFIX = "model."
# DeepSpeed checkpoints written by Lightning < 2.1 name the module through this wrapper
WRAPPER_PREFIX = "_forward_module."
FORMAT_NAMES = {"lightning": "Lightning", "deepspeed": "DeepSpeed", "dcp": "torch.distributed"}
EXPECTED = (
    "expected a Lightning .ckpt file, a DeepSpeed checkpoint directory (with a 'latest' file) "
    "or a torch.distributed.checkpoint directory (with '.metadata')"
)


def checkpoint_format(path: Path) -> str:
    """'lightning', 'deepspeed' or 'dcp': which strategy's checkpoint `path` is.

    Raises:
        QuarkError: `path` is none of them.
    """
    if path.is_file():
        return "lightning"
    if path.is_dir():
        if (path / "latest").is_file():
            return "deepspeed"
        if (path / ".metadata").is_file():
            return "dcp"
        raise QuarkError(f"{path}: not a checkpoint directory; {EXPECTED}")
    raise QuarkError(f"{path}: no such checkpoint; {EXPECTED}")


def consolidated_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The Hugging Face model's weights in the checkpoint at `path`: whole, fp32 (DeepSpeed's
    fp32 master weights when it trained in 16 bits), on the CPU.

    Raises:
        QuarkError: `path` is not a checkpoint, or is unreadable or incomplete.
    """
    path = Path(path)
    kind = checkpoint_format(path)
    try:
        if kind == "lightning":
            weights = _lightning_weights(path)
        elif kind == "deepspeed":
            weights = _deepspeed_weights(path)
        else:
            weights = _dcp_weights(path)
    except QuarkError:
        raise
    except Exception as exc:  # torch, DeepSpeed and DCP readers raise many kinds on bad files
        raise QuarkError(
            f"{path}: not a readable {FORMAT_NAMES[kind]} checkpoint "
            f"({type(exc).__name__}: {_first_sentence(exc)})"
        ) from exc
    state = {}
    for key, tensor in weights.items():
        key = key.removeprefix(WRAPPER_PREFIX)
        if key.startswith(MODULE_PREFIX):
            # bf16-true and 16-true runs keep 16-bit weights: widening them loses nothing
            wide = tensor.float() if tensor.is_floating_point() else tensor
            state[key.removeprefix(MODULE_PREFIX)] = wide
    if not state:
        raise QuarkError(f"{path}: holds no model weights (no '{MODULE_PREFIX}*' keys)")
    return state


def model_from_checkpoint(
    path: Path, config: PretrainedConfig, model_class: Any = None
) -> PreTrainedModel:
    """A fresh fp32 model of `config` holding the consolidated weights of the checkpoint at `path`,
    built by `model_class` (default AutoModelForCausalLM; AutoModelForSequenceClassification
    for a reward model).

    Raises:
        QuarkError: the checkpoint is unreadable, or its weights do not fit `config`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    state = consolidated_state_dict(path)
    # fp32 whatever the config's dtype says (a model=hf config may say bfloat16)
    model = (model_class or AutoModelForCausalLM).from_config(config).float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied weights (lm_head = embeddings) may be stored once; the fresh model ties them itself
    missing = [key for key in missing if not _tied_to_a_loaded_key(model, key, state)]
    if missing or unexpected:
        raise QuarkError(
            f"{path}: its weights do not fit the model config "
            f"(missing: {_few(missing)}; unexpected: {_few(unexpected)}); "
            "convert it with the config of the run that wrote it"
        )
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise QuarkError(f"{path}: weight {key} holds non-finite values")
    return model.eval()


def _lightning_weights(path: Path) -> dict[str, Any]:
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip-format file: mmap needs one (legacy torch.save files)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise QuarkError(f"{path}: a torch file but not a Lightning checkpoint (no state_dict)")
    return checkpoint["state_dict"]


def _deepspeed_weights(path: Path) -> dict[str, Any]:
    if "deepspeed" not in sys.modules:
        # reading shards needs no accelerator: spare the probe for one (and its warning) on
        # import, without leaving the choice to processes this one starts
        previous = os.environ.get("DS_ACCELERATOR")
        os.environ["DS_ACCELERATOR"] = "cpu"
        try:
            import deepspeed  # noqa: F401
        finally:
            if previous is None:
                del os.environ["DS_ACCELERATOR"]
            else:
                os.environ["DS_ACCELERATOR"] = previous
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    # zero_to_fp32 reports progress with print() and progress bars: keep the caller's output clean
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        return get_fp32_state_dict_from_zero_checkpoint(str(path))


def _dcp_weights(path: Path) -> dict[str, Any]:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    # What torch's own dcp_to_torch_save and Lightning's _load_distributed_checkpoint do, limited
    # to the weights (Lightning saves {"state_dict": ..., "optimizer_0": ...}). no_dist: read
    # whole in this process even where a process group is up (rank 0 at the end of training).
    loaded: dict[str, Any] = {}
    try:
        _load_state_dict(
            loaded,
            storage_reader=FileSystemReader(path),
            planner=_EmptyStateDictLoadPlanner(keys={"state_dict"}),
            no_dist=True,
        )
    except CheckpointException as exc:  # a BaseException holding each rank's error and traceback
        failures = [failure for failure, _ in exc.failures.values()]
        raise failures[0] if failures else RuntimeError(str(exc)) from None
    if not isinstance(loaded.get("state_dict"), dict):
        raise QuarkError(f"{path}: a torch.distributed.checkpoint without a state_dict")
    return loaded["state_dict"]


def _tied_to_a_loaded_key(model: Any, key: str, state: dict[str, Any]) -> bool:
    tensors = model.state_dict()
    pointer = tensors[key].data_ptr()
    return any(other in state and t.data_ptr() == pointer for other, t in tensors.items())


def _few(keys: list[str], limit: int = 3) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _first_sentence(exc: Exception, limit: int = 160) -> str:
    text = " ".join(str(exc).split()).split(". ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."
