"""Step 1, plan: will it fit, which strategy, how many tokens, how long.

    python launch.py step=plan model=llama_1b trainer=deepspeed_zero2 trainer.devices=8 step.hardware=H100

Reads the model's shape (a built-in size, explicit sizes, or an HF config.json) and the trainer's
layout, then reports parameters, FLOPs, token budget, memory per device for every strategy and
the estimated wall time, as rich tables and plan.json. Imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError
from quark.core.files import write_json_atomic
from quark.core.run import Run
from quark.models.llama import LlamaShape, hf_config_file
from quark.planning.hardware import Device, device_for
from quark.planning.memory import GIB, Layout, MemoryEstimate, candidate_layouts, estimate_memory
from quark.planning.parameters import count_parameters, training_flops_per_token
from quark.planning.report import print_plan


@dataclass(frozen=True)
class PlanInputs:
    """What planning reads: an HF model's config.json; built-in sizes come from the config."""

    model_config: Path | None

    def recorded(self) -> dict[str, Path]:
        return {"model": self.model_config} if self.model_config else {}


def inputs(cfg: DictConfig) -> PlanInputs:
    named = cfg.model.get("name_or_path")
    return PlanInputs(hf_config_file(str(named)) if named else None)


def run(cfg: DictConfig, run: Run, inputs: PlanInputs) -> dict[str, float]:
    shape = LlamaShape.from_model_config(cfg.model)
    seq_len = int(cfg.step.seq_len or shape.max_seq_len)
    if seq_len > shape.max_seq_len:
        raise ConfigError(
            "step.seq_len",
            f"{seq_len} exceeds the model's {shape.max_seq_len} positions",
            f"allowed: <= {shape.max_seq_len}",
        )
    device = _device(cfg)
    trainer = cfg.trainer
    layout = Layout.from_trainer(trainer, seq_len)

    # Parameters and compute.
    counts = count_parameters(shape)
    flops_per_token = training_flops_per_token(shape, seq_len)
    compute_optimal = int(counts.total * cfg.step.tokens_per_param)
    tokens = int(cfg.step.tokens or compute_optimal)

    # Memory: the chosen layout, and every strategy at the same ranks and batch.
    budget = (
        float(cfg.step.device_memory_gb or device.memory_gb)
        * GIB
        * float(cfg.step.usable_memory_fraction)
    )
    chosen = estimate_memory(shape, layout)
    compared = [estimate_memory(shape, candidate) for candidate in candidate_layouts(layout)]

    # Time at the assumed MFU.
    peak = device.peak_flops(layout.precision)
    tokens_per_second = layout.world_size * peak * float(cfg.step.mfu) / flops_per_token
    tokens_per_step = (
        layout.micro_batch_size * seq_len * int(trainer.accumulate_grad_batches) * layout.world_size
    )
    seconds = tokens / tokens_per_second

    plan: dict[str, Any] = {
        "model": {"name": str(cfg.model.name), **shape.as_dict()},
        "parameters": vars(counts),
        "compute": {
            "seq_len": seq_len,
            "flops_per_token": flops_per_token,
            "tokens": tokens,
            "compute_optimal_tokens": compute_optimal,
            "tokens_per_param": float(cfg.step.tokens_per_param),
            "total_flops": flops_per_token * tokens,
        },
        "hardware": {
            "device": device.name,
            "memory_gb": float(cfg.step.device_memory_gb or device.memory_gb),
            "usable_memory_gb": budget / GIB,
            "peak_flops": peak,
            "mfu": float(cfg.step.mfu),
            "devices": layout.devices,
            "num_nodes": layout.num_nodes,
        },
        "time": {
            "tokens_per_second": tokens_per_second,
            "tokens_per_step": tokens_per_step,
            "steps": -(-tokens // tokens_per_step),
            "seconds": seconds,
            "hours": seconds / 3600,
        },
        "memory": {
            "chosen": _memory_row(chosen, budget),
            "strategies": [_memory_row(estimate, budget) for estimate in compared],
        },
    }
    write_json_atomic(run.path("plan.json"), plan)
    run.add_output("plan.json")
    print_plan(plan)
    return {
        "params_total": float(counts.total),
        "flops_per_token": flops_per_token,
        "tokens": float(tokens),
        "train_hours": seconds / 3600,
        "memory_per_device_gb": chosen.total / GIB,
        "fits": float(chosen.total <= budget),
    }


def _device(cfg: DictConfig) -> Device:
    hardware = str(cfg.step.hardware)
    if hardware == "auto":
        hardware = "cpu" if cfg.trainer.accelerator == "cpu" else "H100"
    return device_for(hardware)


def _memory_row(estimate: MemoryEstimate, budget: float) -> dict[str, Any]:
    return {
        "strategy": estimate.layout.label,
        "weights_gb": estimate.weights / GIB,
        "gradients_gb": estimate.gradients / GIB,
        "optimizer_gb": estimate.optimizer / GIB,
        "working_gb": estimate.working / GIB,
        "activations_gb": estimate.activations / GIB,
        "total_gb": estimate.total / GIB,
        "host_per_node_gb": estimate.host_per_node / GIB,
        "fits": estimate.total <= budget,
        "max_micro_batch": estimate.max_micro_batch(budget),
        "notes": estimate.notes,
    }
