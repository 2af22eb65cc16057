"""The runtimes a served model computes in, behind one interface the scheduler batches over.

A backend runs one forward pass of a batch over its key/value cache, given as flat tensors
(key, value per layer, [batch, kv_heads, length, head_dim]) so the scheduler can pad, join and
drop rows of it between steps:

    torch   a transformers causal LM (the hf/ export of a run, or any HF model directory),
            eager, the cache rebuilt as a DynamicCache around the tensors each step
    onnx    an optimize run's onnx or onnx_int8 export (quark.export.onnx: key/value-cache
            inputs, attention mask, position ids) in ONNX Runtime on the CPU
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

Cache = list[Any]  # key, value per layer: torch tensors or numpy arrays


class Backend(Protocol):
    runtime: str  # what computes it, for /health and the log

    def forward(
        self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: Cache | None
    ) -> tuple[np.ndarray, Cache]:
        """Next-token logits at the last position [batch, vocab] (float32) and the cache after
        `ids` [batch, seq]; `mask` [batch, past + seq] is 1 for tokens and 0 for padding,
        `positions` [batch, seq] each token's position in its own sequence."""
        ...

    def pad_left(self, past: Cache, width: int) -> Cache:
        """`past` with `width` zero positions before each sequence (masked out as padding)."""
        ...

    def join_rows(self, pasts: list[Cache]) -> Cache:
        """One cache holding the rows of `pasts` in order (all of one length)."""
        ...


def take_rows(past: Cache, rows: list[int]) -> Cache:
    return [t[rows] for t in past]


def drop_positions(past: Cache, count: int) -> Cache:
    """`past` without its first `count` positions."""
    return [t[:, :, count:] for t in past]


class TorchBackend:
    def __init__(self, model_dir: Path, device: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from quark.export.decoding import cache_argument

        self.torch = torch
        self.device = device
        model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model = model.to(device).eval()
        self.cache_argument = cache_argument(self.model)
        self.runtime = f"torch {torch.__version__} (eager, {device})"

    def forward(
        self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: Cache | None
    ) -> tuple[np.ndarray, Cache]:
        from transformers import DynamicCache

        from quark.export.decoding import returned_cache

        torch, device = self.torch, self.device
        pairs = [(past[i], past[i + 1]) for i in range(0, len(past), 2)] if past else None
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(ids).to(device),
                attention_mask=torch.from_numpy(mask).to(device),
                position_ids=torch.from_numpy(positions).to(device),
                use_cache=True,
                logits_to_keep=1,
                **{self.cache_argument: DynamicCache(ddp_cache_data=pairs)},
            )
        present = [t for layer in returned_cache(out).layers for t in (layer.keys, layer.values)]
        return out.logits[:, -1].float().cpu().numpy(), present

    def pad_left(self, past: Cache, width: int) -> Cache:
        torch = self.torch
        return [torch.cat([t.new_zeros(*t.shape[:2], width, *t.shape[3:]), t], dim=2) for t in past]

    def join_rows(self, pasts: list[Cache]) -> Cache:
        return [self.torch.cat(tensors) for tensors in zip(*pasts, strict=True)]


class OnnxBackend:
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        from quark.export.onnx import session

        self.session = session(path, threads)
        self.past_inputs = [i for i in self.session.get_inputs() if i.name.startswith("past_")]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.runtime = f"onnxruntime {ort.__version__} (CPUExecutionProvider, {path.parent.name})"

    def forward(
        self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: Cache | None
    ) -> tuple[np.ndarray, Cache]:
        if past is None:  # [batch, kv_heads, 0, head_dim]: kv_heads and head_dim are fixed
            past = [
                np.zeros((len(ids), i.shape[1], 0, i.shape[3]), np.float32)
                for i in self.past_inputs
            ]
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        feeds.update({i.name: t for i, t in zip(self.past_inputs, past, strict=True)})
        logits, *present = self.session.run(self.outputs, feeds)
        return np.ascontiguousarray(logits[:, -1]), present

    def pad_left(self, past: Cache, width: int) -> Cache:
        return [np.pad(t, ((0, 0), (0, 0), (width, 0), (0, 0))) for t in past]

    def join_rows(self, pasts: list[Cache]) -> Cache:
        return [np.concatenate(arrays) for arrays in zip(*pasts, strict=True)]


@dataclass
class ServedModel:
    """A model as the server uses it: its runtime, tokenizer and where generation stops."""

    name: str  # the id clients name it by (/v1/models)
    directory: Path
    backend: Backend
    tokenizer: Any
    # end-of-sequence ids: the tokenizer's eos and generation_config.json's eos_token_id
    # (a finetuned model's end-of-message token is there)
    stop_ids: set[int]
    positions: int  # the most tokens a sequence may hold, prompt and completion together

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def load_model(directory: Path, name: str, device: str, threads: int) -> ServedModel:
    """The model in `directory`: ONNX Runtime when it holds model.onnx, else torch."""
    from transformers import AutoTokenizer

    backend: Backend
    if (directory / "model.onnx").is_file():
        backend = OnnxBackend(directory / "model.onnx", threads)
    else:
        backend = TorchBackend(directory, device)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    config = json.loads((directory / "config.json").read_text())
    stop_ids = set(eos_ids(config.get("eos_token_id")))
    generation = directory / "generation_config.json"
    if generation.is_file():
        stop_ids |= eos_ids(json.loads(generation.read_text()).get("eos_token_id"))
    if tokenizer.eos_token_id is not None:
        stop_ids.add(int(tokenizer.eos_token_id))
    positions = int(config.get("max_position_embeddings") or tokenizer.model_max_length)
    return ServedModel(name, directory, backend, tokenizer, stop_ids, positions)


def eos_ids(value: Any) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in (value if isinstance(value, list) else [value])}
