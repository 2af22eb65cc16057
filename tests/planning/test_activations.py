"""The activation formula equals, to the byte, what autograd saves for backward in a real
Hugging Face Llama (both precisions, with and without gradient checkpointing)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from quark.models.llama import LlamaShape, build_llama
from quark.planning.activations import saved_activation_bytes


class WeightCopies(TorchDispatchMode):
    """Records the storages autocast creates by casting a parameter (its cached weight copies)."""

    def __init__(self, params: set[int]) -> None:
        super().__init__()
        self.params = params
        self.copies: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        source = args[0] if args else None
        if (
            func.overloadpacket.__name__ == "_to_copy"
            and isinstance(source, torch.Tensor)
            and source.untyped_storage().data_ptr() in self.params
        ):
            self.copies.add(out.untyped_storage().data_ptr())
        return out


def saved_bytes(shape: LlamaShape, b: int, s: int, precision: str, checkpointing: bool) -> int:
    """Bytes of distinct storages autograd saves during one forward with labels, less weights
    and autocast's cached weight copies (planned as model states, not activations)."""
    torch.manual_seed(0)
    model = build_llama(**shape.as_dict()).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved.setdefault(storage.data_ptr(), storage.nbytes())
        return tensor

    ids = torch.randint(0, shape.vocab_size, (b, s))
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision == "bf16-mixed"
        else contextlib.nullcontext()
    )
    copies = WeightCopies(params)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), copies, autocast:
        model(input_ids=ids, labels=ids)
    return sum(
        n for pointer, n in saved.items() if pointer not in params and pointer not in copies.copies
    )


SHAPES = [
    (LlamaShape(1024, 128, 2, 4, 2, 344, 256), 2, 64),
    (LlamaShape(3000, 256, 3, 8, 8, 700, 256), 3, 100),
    (LlamaShape(512, 64, 3, 4, 4, 172, 256), 1, 32),
]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["full", "checkpointed"])
@pytest.mark.parametrize(("shape", "b", "s"), SHAPES, ids=["gqa", "mha-odd-sizes", "batch-1"])
def test_formula_equals_what_autograd_saves(
    shape: LlamaShape, b: int, s: int, precision: str, checkpointing: bool
) -> None:
    assert saved_activation_bytes(shape, b, s, precision, checkpointing) == saved_bytes(
        shape, b, s, precision, checkpointing
    )
