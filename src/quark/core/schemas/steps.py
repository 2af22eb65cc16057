"""Schemas of the `step` group, one per built step."""

from __future__ import annotations

from dataclasses import dataclass

from quark.core.schemas.fields import choice, ranged

HARDWARE = ("auto", "cpu", "A100_40GB", "A100_80GB", "H100", "H200")


@dataclass
class PlanStepSchema:
    name: str = "plan"
    # Training tokens to plan for; null plans for the compute-optimal budget.
    tokens: int | None = ranged(None, ge=1)
    tokens_per_param: float = ranged(20.0, gt=0)
    # Sequence length of a training sample; null takes model.max_seq_len.
    seq_len: int | None = ranged(None, ge=1)
    # Hardware for the time estimate and the fit table; auto: the local CPU for
    # trainer.accelerator=cpu, else H100.
    hardware: str = choice("auto", HARDWARE)
    mfu: float = ranged(0.4, gt=0, le=1)
    # Device memory to fit into; null takes the hardware's own.
    device_memory_gb: float | None = ranged(None, gt=0)
    # Share of device memory the planner may fill (the rest: CUDA context, allocator slack).
    usable_memory_fraction: float = ranged(0.9, gt=0, le=1)


@dataclass
class DataStepSchema:
    name: str = "data"
    # a histogram of document lengths (tokens) in the data card
    histogram_bins: int = ranged(50, ge=1)
