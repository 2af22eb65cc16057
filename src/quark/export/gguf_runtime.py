"""A GGUF file run for validation: in llama.cpp through llama-cpp-python when it is installed,
else its tensors read back (dequantized, un-permuted) into the transformers model they came
from, which proves the weights and their layout but not llama.cpp itself, and times nothing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np


def gguf_decoder(path: Path, model: Any, precision: str, threads: int) -> Any:
    """The decoder that validates `path`: llama.cpp if importable, else the read-back model."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return GGUFReadBack(path, model)
    return LlamaCppDecoder(path, threads, model.config.max_position_embeddings, precision)


class LlamaCppDecoder:
    """A GGUF in llama.cpp: every position's logits kept (teacher forcing reads them all)."""

    runtime = "llama.cpp (llama-cpp-python)"
    times_generation = True

    def __init__(self, path: Path, threads: int, context: int, precision: str) -> None:
        from llama_cpp import Llama

        # an f32 export keeps its key/value cache in f32 too (llama.cpp's default is f16)
        cache_type = 0 if precision == "f32" else None  # GGML_TYPE_F32; None: the default
        self.llm = Llama(
            model_path=str(path),
            n_ctx=context,
            n_batch=context,
            n_ubatch=context,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=True,
            type_k=cache_type,
            type_v=cache_type,
            verbose=False,
        )

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        rows = []
        for row in tokens.tolist():
            self.llm.reset()
            self.llm.eval(row)
            rows.append(np.array(self.llm.scores[: len(row)], dtype=np.float32))
        return np.stack(rows)

    def generate(self, prompt: list[int], new_tokens: int) -> list[int]:
        self.llm.reset()
        self.llm.eval(prompt)
        out: list[int] = []
        while True:
            token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(token)
            if len(out) == new_tokens:
                return out
            self.llm.eval([token])

    def close(self) -> None:
        # explicitly: Llama.__del__ at interpreter exit finds llama.cpp already unloaded
        self.llm.close()


class GGUFReadBack:
    """The GGUF's tensors, dequantized and put back in Hugging Face layout, in a copy of the
    source model: what the file holds, computed by torch."""

    runtime = "the GGUF's tensors read back into transformers (llama-cpp-python not installed)"
    times_generation = False

    def __init__(self, path: Path, model: Any) -> None:
        import gguf
        import torch

        from quark.export.decoding import TorchDecoder
        from quark.export.gguf import tensor_names, unpermute_rotary

        config = model.config
        by_gguf_name = {g: hf for hf, g in tensor_names(model).items()}
        weights = {}
        for tensor in gguf.GGUFReader(str(path)).tensors:
            name = by_gguf_name[tensor.name]
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
            if name.endswith("q_proj.weight"):
                values = unpermute_rotary(values, config.num_attention_heads)
            elif name.endswith("k_proj.weight"):
                values = unpermute_rotary(values, config.num_key_value_heads)
            weights[name] = torch.from_numpy(values.reshape(model.state_dict()[name].shape))
        read_back = copy.deepcopy(model)
        missing = read_back.load_state_dict(weights, strict=False).missing_keys
        if [key for key in missing if not (key == "lm_head.weight" and config.tie_word_embeddings)]:
            raise RuntimeError(f"{path}: tensors missing from the GGUF: {missing}")
        self.torch = TorchDecoder(read_back)

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        return self.torch.logits(tokens)

    def generate(self, prompt: list[int], new_tokens: int) -> list[int]:
        return self.torch.generate(prompt, new_tokens)

    def close(self) -> None:
        pass
