"""Schemas of the `step` group, one per built step."""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class OptimSchema:
    lr: float = ranged(3e-3, gt=0)
    weight_decay: float = ranged(0.1, ge=0)
    beta1: float = ranged(0.9, ge=0, lt=1)
    beta2: float = ranged(0.95, ge=0, lt=1)
    warmup_steps: int = ranged(20, ge=0)
    # the cosine decays to this fraction of lr
    min_lr_ratio: float = ranged(0.1, ge=0, le=1)


@dataclass
class PretrainStepSchema:
    name: str = "pretrain"
    # a data run directory; null: the newest completed data run of this experiment
    data_dir: str | None = None
    seq_len: int = ranged(256, ge=1)
    max_steps: int = ranged(200, ge=1)
    val_every_n_steps: int = ranged(50, ge=1)
    # validation windows (the same ones every time, whatever the batch size or rank count)
    val_samples: int = ranged(64, ge=1)
    checkpoint_every_n_steps: int = ranged(100, ge=1)
    grad_clip: float = ranged(1.0, ge=0)
    # null: start fresh; auto: continue the newest unfinished run of this config; or a .ckpt path
    resume: str | None = None
    optim: OptimSchema = field(default_factory=OptimSchema)
