"""Model-state memory per device against DeepSpeed's own estimators, and the ZeRO paper's
formula for plain data parallelism."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # the estimators are pure arithmetic

from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

from quark.models.llama import LlamaShape
from quark.planning.memory import Layout, candidate_layouts, estimate_memory
from quark.planning.parameters import count_parameters

SHAPES = {
    "llama_124m": LlamaShape(50304, 768, 12, 12, 12, 2048, 1024, tie_embeddings=True),
    "llama_1b": LlamaShape(128256, 2048, 16, 32, 8, 8192, 2048, tie_embeddings=True),
    "llama_8b_like": LlamaShape(128256, 4096, 32, 32, 8, 14336, 8192),
}
LAYOUTS = [(devices, nodes) for devices in (1, 2, 8) for nodes in (1, 4)]


def states(shape: LlamaShape, **layout: object) -> float:
    return estimate_memory(shape, Layout(precision="bf16-mixed", **layout)).model_states  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize(("devices", "nodes"), LAYOUTS)
def test_zero2_matches_deepspeed(name: str, devices: int, nodes: int) -> None:
    shape = SHAPES[name]
    n = count_parameters(shape).total
    for offload in (False, True):
        _, gpu = estimate_zero2_model_states_mem_needs(n, devices, nodes, cpu_offload=offload)
        ours = estimate_memory(
            shape,
            Layout("deepspeed_zero2", devices, nodes, "bf16-mixed", offload_optimizer=offload),
        )
        assert ours.model_states == pytest.approx(gpu, abs=1)
        cpu, _ = estimate_zero2_model_states_mem_needs(n, devices, nodes, cpu_offload=offload)
        assert ours.host_per_node == pytest.approx(cpu, abs=1)


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize(("devices", "nodes"), LAYOUTS)
def test_zero3_matches_deepspeed(name: str, devices: int, nodes: int) -> None:
    shape = SHAPES[name]
    counts = count_parameters(shape)
    for offload_opt, offload_params in ((False, False), (True, False), (True, True)):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            counts.total,
            counts.largest_layer,
            devices,
            nodes,
            cpu_offload=offload_opt,
            cpu_offload_params=offload_params,
        )
        ours = estimate_memory(
            shape,
            Layout(
                "deepspeed_zero3",
                devices,
                nodes,
                "bf16-mixed",
                offload_optimizer=offload_opt,
                offload_params=offload_params,
            ),
        )
        assert ours.model_states == pytest.approx(gpu, abs=1)
        assert ours.host_per_node == pytest.approx(cpu, abs=1)


def test_data_parallel_keeps_16_bytes_per_parameter() -> None:
    # ZeRO paper: (2 + 2 + K) with K = 12 for mixed-precision Adam; torch AMP stores the
    # same 16 bytes as fp32 weights, fp32 grads and two fp32 moments, plus a 16-bit weight copy.
    shape = SHAPES["llama_1b"]
    n = count_parameters(shape).total
    fp32 = estimate_memory(shape, Layout("ddp", 8, precision="32-true"))
    assert fp32.weights + fp32.gradients + fp32.optimizer == 16 * n
    assert fp32.working == 0
    amp = estimate_memory(shape, Layout("ddp", 8, precision="bf16-mixed"))
    assert amp.model_states == 18 * n


def test_sharding_divides_states_by_the_number_of_ranks() -> None:
    shape = SHAPES["llama_8b_like"]
    per_device = {dp: estimate_memory(shape, Layout("fsdp", dp)) for dp in (1, 2, 8)}
    for dp in (2, 8):
        assert per_device[dp].optimizer == pytest.approx(per_device[1].optimizer / dp)
        assert per_device[dp].weights == pytest.approx(per_device[1].weights / dp)
    order = [
        states(shape, strategy=s, devices=8)
        for s in ("ddp", "deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3")
    ]
    assert order == sorted(order, reverse=True)


def test_max_micro_batch_is_the_largest_that_fits() -> None:
    shape = SHAPES["llama_124m"]
    estimate = estimate_memory(shape, Layout("single", micro_batch_size=1, seq_len=1024))
    budget = 40 * 2**30
    b = estimate.max_micro_batch(budget)
    assert b > 0
    assert estimate.total_at(b) <= budget < estimate.total_at(b + 1)
    assert estimate.total_at(1) == estimate.total  # the layout's own micro-batch is 1
    assert estimate.max_micro_batch(estimate.model_states / 2) == 0


def test_checkpointing_cuts_activations() -> None:
    shape = SHAPES["llama_8b_like"]
    full = estimate_memory(shape, Layout("ddp", 8, micro_batch_size=4))
    saved = estimate_memory(
        shape, Layout("ddp", 8, micro_batch_size=4, gradient_checkpointing=True)
    )
    assert saved.activations < full.activations / 2


def test_candidates_cover_every_strategy_and_offload() -> None:
    labels = [layout.label for layout in candidate_layouts(Layout("deepspeed_zero3", 8))]
    assert labels == [
        "ddp",
        "fsdp",
        "zero1",
        "zero2",
        "zero3",
        "zero2+offload-opt",
        "zero3+offload-opt",
        "zero3+offload-opt+params",
    ]
    assert candidate_layouts(Layout("single"))[0].label == "single"
