"""export=onnx: the model as ONNX (torch.onnx's dynamo exporter) with key/value-cache inputs
and outputs, so ONNX Runtime decodes one token per forward pass.

    exports/onnx/  model.onnx (+ model.onnx.data over 1 GiB), config.json, tokenizer files

Inputs:  input_ids [batch, seq] int64, attention_mask [batch, past + seq] int64 (1 = attend,
         0 = padding), position_ids [batch, seq] int64 (each token's position: with left
         padding, count from the first real token), past_key_values.<layer>.key / .value
         [batch, kv_heads, past, head_dim] float32
Outputs: logits [batch, seq, vocab], present.<layer>.key / .value [batch, kv_heads, past + seq,
         head_dim]: the next call's past. The first call passes an empty past (past = 0).

The exported graph is then rewritten for decoding, in standard ONNX (quark.export.onnx_graph):
attention over the cache in one node a layer, q/k/v and gate/up in one MatMul each.

(optimum's ONNX export would do this but needs transformers < 4.58.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quark.export import copy_model_files, require
from quark.export.decoding import cache_argument, returned_cache
from quark.export.onnx_graph import rewrite_for_decoding
from quark.export.validation import Tolerance

DEFAULT_TOLERANCE = {
    # the same fp32 arithmetic, in other kernels and another order of sums
    "fp32": Tolerance(
        max_logit_diff=1e-3,
        min_logit_cosine=0.99999,
        min_top1_agreement=0.999,
        max_ppl_change_pct=0.1,
    ),
}
# opset 23 has Attention, RotaryEmbedding and RMSNormalization: one node each where opset 18
# spells them out in a dozen (558 nodes -> 330 for llama_tiny); at one token a step the graph's
# per-node overhead, not its arithmetic, is much of the time (1.16 -> 0.96 ms/token in int8)
OPSET = 23
# protobuf's 2 GiB limit on one file: larger models keep their weights beside model.onnx
EXTERNAL_DATA_BYTES = 1 << 30


def check(model_dir: Path, config: dict[str, Any], precision: str) -> None:
    """Any transformers decoder that takes a DynamicCache exports; the exporter and the runtime
    that validates it must be installed."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        require(package, "onnx")


def export(model: Any, model_dir: Path, out_dir: Path, precision: str, threads: int) -> OnnxDecoder:
    write_onnx(model, out_dir / "model.onnx")
    copy_model_files(model_dir, out_dir)
    return OnnxDecoder(out_dir / "model.onnx", threads)


class KeyValueCacheStep(torch.nn.Module):
    """One forward pass of `model` over a cache given as flat tensors (key, value per layer),
    the DynamicCache rebuilt inside: ONNX has no cache objects, only tensors."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.cache_argument = cache_argument(model)
        self.causal_mask_is_enough = full_causal_attention(model.config)

    def forward(
        self, input_ids: Any, attention_mask: Any, position_ids: Any, past: list[Any]
    ) -> tuple[Any, ...]:
        from transformers import DynamicCache

        pairs = [(past[i], past[i + 1]) for i in range(0, len(past), 2)]
        if self.causal_mask_is_enough:
            attention_mask = causal_padding_mask(input_ids, attention_mask)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{self.cache_argument: DynamicCache(ddp_cache_data=pairs)},
        )
        cache = returned_cache(out)
        present = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def full_causal_attention(config: Any) -> bool:
    """Whether every layer attends causally to all earlier tokens (no sliding window, no
    chunks): then the padding-and-causal mask is the whole mask, and the graph can build it
    in a few nodes instead of tracing transformers' general mask functions (about 30)."""
    if getattr(config, "sliding_window", None) or getattr(config, "attention_chunk_size", None):
        return False
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return all(kind == "full_attention" for kind in layer_types)


def causal_padding_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, 1, seq, past + seq] bool, True where a query may attend: earlier or same
    positions that are not padding. transformers takes a 4D mask as it is."""
    seq, total = input_ids.shape[1], attention_mask.shape[1]
    keys = torch.arange(total, device=input_ids.device)
    queries = torch.arange(seq, device=input_ids.device) + (total - seq)
    causal = keys[None, :] <= queries[:, None]
    return causal[None, None] & attention_mask.bool()[:, None, None, :]


def write_onnx(model: Any, path: Path) -> None:
    """Export `model` (fp32, eval) to `path` with dynamic batch, sequence and past lengths."""

    model = model.eval()
    # the cache's shapes come from the model itself: any layout transformers gives it
    with torch.no_grad():
        probe = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True)
    layers = [(layer.keys, layer.values) for layer in returned_cache(probe).layers]
    # a batch of 2 and a past of 3 so no dimension is specialised to 1 (which would fix it)
    batch, seq, past_len = 2, 4, 3
    past = [
        torch.zeros(batch, *t.shape[1:2], past_len, *t.shape[3:]) for pair in layers for t in pair
    ]
    input_ids = torch.zeros(batch, seq, dtype=torch.long)
    attention_mask = torch.ones(batch, past_len + seq, dtype=torch.long)
    position_ids = torch.arange(past_len, past_len + seq).repeat(batch, 1)
    names = [f"{i}.{kind}" for i in range(len(layers)) for kind in ("key", "value")]
    path.parent.mkdir(parents=True, exist_ok=True)
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with grouped_query_attention():
        _export(model, path, input_ids, attention_mask, position_ids, past, names, parameter_bytes)


@contextlib.contextmanager
def grouped_query_attention() -> Iterator[None]:
    """Trace SDPA with `enable_gqa` even with a mask: the graph's Attention nodes then take the
    kv heads as they are, instead of transformers' repeat_kv (an Expand and Reshapes a layer).
    On llama_tiny 302 nodes become 198 after ONNX Runtime's optimizations, logits unchanged
    (bench/RESULTS.md). transformers otherwise enables it only without a mask (CUDA kernels)."""
    previous = os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA")
    os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TRANSFORMERS_SDPA_FORCE_GQA", None)
        else:
            os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = previous


def _export(
    model: Any,
    path: Path,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    past: list[torch.Tensor],
    names: list[str],
    parameter_bytes: int,
) -> None:
    from torch.export import Dim

    torch.onnx.export(
        KeyValueCacheStep(model).eval(),
        (input_ids, attention_mask, position_ids, past),
        str(path),
        dynamo=True,
        opset_version=OPSET,
        input_names=[
            "input_ids",
            "attention_mask",
            "position_ids",
            *(f"past_key_values.{n}" for n in names),
        ],
        output_names=["logits", *(f"present.{n}" for n in names)],
        dynamic_shapes={
            "input_ids": {0: Dim.AUTO, 1: Dim.AUTO},
            "attention_mask": {0: Dim.AUTO, 1: Dim.AUTO},
            "position_ids": {0: Dim.AUTO, 1: Dim.AUTO},
            "past": [{0: Dim.AUTO, 2: Dim.AUTO} for _ in past],
        },
        external_data=parameter_bytes > EXTERNAL_DATA_BYTES,
        verbose=False,
    )
    rewrite_for_decoding(path)


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session on the CPU with all of its graph optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxDecoder:
    """An ONNX model with key/value-cache inputs (see the module docstring) in ONNX Runtime."""

    runtime = "onnxruntime (CPUExecutionProvider)"
    times_generation = True

    def __init__(self, path: Path, threads: int) -> None:
        self.session = session(path, threads)
        self.past_inputs = [i for i in self.session.get_inputs() if i.name.startswith("past_")]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        # [batch, kv_heads, 0, head_dim]: kv_heads and head_dim are fixed in the graph
        return {
            i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=np.float32)
            for i in self.past_inputs
        }

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        batch, seq = tokens.shape
        feeds = {
            "input_ids": tokens.astype(np.int64),
            "attention_mask": np.ones((batch, seq), dtype=np.int64),
            "position_ids": np.tile(np.arange(seq, dtype=np.int64), (batch, 1)),
            **self._empty_past(batch),
        }
        return self.session.run(["logits"], feeds)[0]

    def generate(self, prompt: list[int], new_tokens: int) -> list[int]:
        # an IOBinding: each step's present stays in ONNX Runtime and is bound as the next
        # past, uncopied; mask and positions are views of arrays made once
        binding = self.session.io_binding()
        for name, array in self._empty_past(1).items():
            binding.bind_cpu_input(name, array)
        total = len(prompt) + new_tokens
        mask = np.ones((1, total), dtype=np.int64)
        positions = np.arange(total, dtype=np.int64)[None]
        pasts = [name.replace("present.", "past_key_values.", 1) for name in self.outputs[1:]]
        ids = np.asarray([prompt], dtype=np.int64)
        out: list[int] = []
        length = 0
        for _ in range(new_tokens):
            seq = ids.shape[1]
            binding.bind_cpu_input("input_ids", ids)
            binding.bind_cpu_input("attention_mask", mask[:, : length + seq])
            binding.bind_cpu_input("position_ids", positions[:, length : length + seq])
            length += seq
            for name in self.outputs:  # unallocated: ONNX Runtime sizes them for this step
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            logits, *present = binding.get_outputs()
            token = int(logits.numpy()[0, -1].argmax())
            out.append(token)
            ids = np.asarray([[token]], dtype=np.int64)
            for name, value in zip(pasts, present, strict=True):
                binding.bind_ortvalue_input(name, value)
        return out

    def close(self) -> None:
        pass
