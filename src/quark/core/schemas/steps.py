"""Schemas of the `step` group, one per built step."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

HARDWARE = ("auto", "cpu", "A100_40GB", "A100_80GB", "H100", "H200")
RESUME_ALLOWED = "give a checkpoint a training run wrote (checkpoints/*.ckpt), or auto"


def check_resume(resume: str | None) -> None:
    """step.resume checked before any work or heavy import: a path must be a checkpoint,
    a torch.save archive (a zip: a truncated or a text file is not one) or a sharded
    checkpoint's directory (DeepSpeed's)."""
    if not resume or resume == "auto":
        return
    path = Path(resume).expanduser()
    if not path.exists():
        raise ConfigError(
            "step.resume", f"{path} is not a checkpoint (no such file)", RESUME_ALLOWED
        )
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ConfigError(
            "step.resume",
            f"{path} is not a checkpoint (not a torch.save archive: truncated, or another kind "
            "of file)",
            RESUME_ALLOWED,
        )
    if path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
        raise ConfigError(
            "step.resume", f"{path} is not a checkpoint (an empty directory)", RESUME_ALLOWED
        )


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

    def check(self) -> None:
        check_resume(self.resume)


@dataclass
class FinetuneStepSchema:
    name: str = "finetune"
    # a pretrain or finetune run directory (its hf/ export is loaded) or a Hugging Face model
    # directory (config.json, weights, tokenizer); null: the newest completed pretrain run
    init_from: str | None = None
    # a tokenizer directory; null: the one saved with the model
    tokenizer: str | None = None
    # a directory holding train.jsonl and val.jsonl of {prompt, response} records; null: the
    # newest completed data run of this experiment that holds them (data=arithmetic_sft)
    data_dir: str | None = None
    # Jinja chat template over `messages` (role, content); saved with the exported tokenizer
    chat_template: str = MISSING
    # a system message put before every prompt; null: none
    system_prompt: str | None = None
    # the token that ends every message in the template; generation stops at it
    stop_token: str = "<|end|>"
    # tokens per training sample: an example longer than this is an error, never cut
    seq_len: int = ranged(64, ge=2)
    # several examples per sample (whole examples, up to seq_len tokens) instead of one each
    packing: bool = False
    max_steps: int = ranged(2000, ge=1)
    val_every_n_steps: int = ranged(500, ge=1)
    # validation examples for the loss (the same ones every time)
    val_samples: int = ranged(64, ge=1)
    checkpoint_every_n_steps: int = ranged(1000, ge=1)
    grad_clip: float = ranged(1.0, ge=0)
    # null: start fresh; auto: continue the newest unfinished run of this config; or a .ckpt path
    resume: str | None = None
    # validation examples whose greedy answer is checked, before and after training
    eval_samples: int = ranged(200, ge=1)
    eval_batch_size: int = ranged(64, ge=1)
    # generation budget per answer; an answer not finished within it counts as wrong
    max_new_tokens: int = ranged(16, ge=1)
    optim: OptimSchema = field(default_factory=OptimSchema)

    def check(self) -> None:
        check_resume(self.resume)


@dataclass
class AlignStepSchema:
    name: str = "align"
    # a finetune or align run directory (its hf/) or a Hugging Face model directory; null: the
    # newest completed finetune run
    init_from: str | None = None
    # DPO's frozen reference model (same tokenizer); null: the starting model
    reference: str | None = None
    # a directory holding train.jsonl and val.jsonl of {prompt, chosen, rejected} records;
    # null: the newest completed data run of this experiment that holds them
    data_dir: str | None = None
    # Jinja chat template over `messages`; null: the one saved with the starting model
    chat_template: str | None = None
    system_prompt: str | None = None
    stop_token: str = "<|end|>"
    # tokens per conversation (prompt and answer): a longer one is an error, never cut
    seq_len: int = ranged(64, ge=2)
    max_steps: int = ranged(150, ge=1)
    val_every_n_steps: int = ranged(50, ge=1)
    # validation pairs for the loss and the reward accuracy (the same ones every time)
    val_samples: int = ranged(200, ge=1)
    checkpoint_every_n_steps: int = ranged(50, ge=1)
    grad_clip: float = ranged(1.0, ge=0)
    # null: start fresh; auto: continue the newest unfinished run of this config; or a .ckpt path
    resume: str | None = None
    # DPO: validation prompts whose greedy answer is checked against chosen, before and after
    eval_samples: int = ranged(200, ge=1)
    eval_batch_size: int = ranged(64, ge=1)
    max_new_tokens: int = ranged(16, ge=1)
    optim: OptimSchema = field(default_factory=OptimSchema)

    def check(self) -> None:
        check_resume(self.resume)


@dataclass
class OptimizeStepSchema:
    name: str = "optimize"
    # a pretrain, finetune or align run directory (its hf/ export is loaded) or a Hugging Face
    # model directory; null: the newest completed align, finetune, else pretrain run
    model_dir: str | None = None
    # a data run with token shards (its validation split checks the export); null: the data
    # run the model was trained on, else the newest completed one of this experiment
    data_dir: str | None = None
    # tokens per validation window, at most the model's positions
    seq_len: int = ranged(128, ge=2)
    # validation windows the export is compared on (teacher forced), and their batch size
    val_samples: int = ranged(16, ge=1)
    batch_size: int = ranged(8, ge=1)
    # latency: greedy decoding of new_tokens after a prompt of prompt_tokens, best of repeats
    prompt_tokens: int = ranged(16, ge=1)
    new_tokens: int = ranged(32, ge=2)
    latency_repeats: int = ranged(3, ge=1)
    # CPU threads of every runtime (torch, ONNX Runtime, llama.cpp); null: torch's default
    threads: int | None = ranged(None, ge=1)
