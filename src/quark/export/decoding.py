"""What every export is checked through: teacher-forced logits and greedy incremental decoding.

Each format (ONNX Runtime, llama.cpp, torch) provides a `Decoder`; the source model is a
`TorchDecoder` too, so the export and the model it came from are measured the same way.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np


class Decoder(Protocol):
    """A causal LM behind some runtime."""

    # what computes it, for the report; and whether its generation speed is the format's own
    runtime: str
    times_generation: bool

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Next-token logits (float32, [batch, seq, vocab]) of token ids [batch, seq], in one
        forward pass from an empty cache."""
        ...

    def generate(self, prompt: list[int], new_tokens: int) -> list[int]:
        """`new_tokens` greedy tokens after `prompt`, one forward pass per token over the
        key/value cache."""
        ...

    def close(self) -> None:
        """Release the runtime."""
        ...


class TorchDecoder:
    """A transformers causal LM (any dtype, device or torchao-quantized weights), eager, with
    a DynamicCache: the baseline every export is compared with."""

    runtime = "torch (eager, DynamicCache)"
    times_generation = True

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self.model = model.eval()
        self.device = device

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(tokens).to(self.device)
            return self.model(input_ids=ids, use_cache=False).logits.float().cpu().numpy()

    def generate(self, prompt: list[int], new_tokens: int) -> list[int]:
        import torch
        from transformers import DynamicCache

        cache = {cache_argument(self.model): DynamicCache()}
        ids = torch.tensor([prompt], device=self.device)
        out: list[int] = []
        with torch.inference_mode():
            for _ in range(new_tokens):
                logits = self.model(input_ids=ids, use_cache=True, **cache).logits
                token = int(logits[0, -1].argmax())
                out.append(token)
                ids = torch.tensor([[token]], device=self.device)
        return out

    def close(self) -> None:
        pass


def cache_argument(model: Any) -> str:
    """The name of a transformers model's key/value-cache argument: `cache` from transformers
    5.2x on, `past_key_values` before (and deprecated after)."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The key/value cache a forward pass returned, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def cpu_threads() -> int:
    """The threads every runtime gets, so their latencies compare: torch's intra-op count."""
    import torch

    return torch.get_num_threads()


def decode_ms_per_token(
    decoder: Decoder, prompt: list[int], new_tokens: int, repeats: int
) -> float:
    """Milliseconds per generated token once the prompt is in the cache: the time of
    `new_tokens` tokens less the time of one (the prompt's forward pass), over the rest; each
    the best of `repeats` after one warm-up run, since other work on the machine only adds time."""
    decoder.generate(prompt, new_tokens)  # warm-up: first-call allocations, lazy kernels

    def best(count: int) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            decoder.generate(prompt, count)
            times.append(time.perf_counter() - started)
        return min(times)

    return 1000.0 * max(best(new_tokens) - best(1), 0.0) / (new_tokens - 1)
