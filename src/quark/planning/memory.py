"""Training memory per device for each sharding strategy.

Model states follow DeepSpeed's published estimators for the ZeRO stages
(`estimate_zero2_model_states_mem_needs`, `estimate_zero3_model_states_mem_needs`; tests check
the figures against them) and the ZeRO paper's (2 + 2 + K) bytes per parameter for plain data
parallelism. Activations follow `activation_bytes`, validated against measured peaks in
bench/plan_activation_memory.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quark.models.llama import LlamaShape
from quark.planning.activations import activation_bytes
from quark.planning.parameters import count_parameters

# DeepSpeed's estimators allow this much slack on host memory (additional_buffer_factor).
HOST_BUFFER_FACTOR = 1.5
GIB = 2**30


@dataclass(frozen=True)
class Layout:
    """How training is spread: strategy, ranks, precision, batch and memory savers."""

    strategy: str
    devices: int = 1
    num_nodes: int = 1
    precision: str = "bf16-mixed"
    micro_batch_size: int = 1
    seq_len: int = 2048
    gradient_checkpointing: bool = False
    offload_optimizer: bool = False
    offload_params: bool = False

    @classmethod
    def from_trainer(cls, trainer: Any, seq_len: int) -> Layout:
        """The layout a `trainer` config group describes, at a sequence length."""
        return cls(
            strategy=str(trainer.strategy),
            devices=int(trainer.devices),
            num_nodes=int(trainer.num_nodes),
            precision=str(trainer.precision),
            micro_batch_size=int(trainer.micro_batch_size),
            seq_len=seq_len,
            gradient_checkpointing=bool(trainer.gradient_checkpointing),
            offload_optimizer=bool(trainer.offload_optimizer),
            offload_params=bool(trainer.offload_params),
        )

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def label(self) -> str:
        """Short name: ddp, fsdp, zero1, zero2, zero3, zero3+offload-opt+params, ..."""
        name = self.strategy.removeprefix("deepspeed_")
        if self.offload_optimizer:
            name += "+offload-opt"
        if self.offload_params:
            name += "+params"
        return name


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device (and host bytes per node) for one layout."""

    layout: Layout
    weights: float
    gradients: float
    optimizer: float
    # Transient buffers: gathered ZeRO-3/FSDP layers, autocast weight copies.
    working: float
    # the optimizer step's temporaries (AdamW on one tensor at a time: two of the largest)
    step_temporaries: float
    activations: float
    # activations at micro-batch 1 and the increase per extra sample (they are affine in b)
    activations_at_one: float
    activations_per_sample: float
    host_per_node: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.working

    @property
    def total(self) -> float:
        return self.total_at(self.layout.micro_batch_size)

    def total_at(self, micro_batch: int) -> float:
        """Peak bytes per device at a micro-batch size.

        On one device gradients are freed after each optimizer step (set_to_none, Lightning's
        default) and allocated during backward as activations are freed: the peak is the larger
        of the two phases. Distributed strategies keep gradient buffers (DDP buckets, ZeRO
        partitions) while activations live, so there everything adds up.
        """
        activations = self.activations_at_one + (micro_batch - 1) * self.activations_per_sample
        resident = self.weights + self.optimizer
        # working buffers (autocast copies, gathered layers) live during forward and backward
        if self.layout.strategy == "single":
            return resident + max(
                activations + self.working, self.gradients + self.step_temporaries
            )
        return resident + self.working + self.gradients + self.step_temporaries + activations

    def max_micro_batch(self, budget_bytes: float) -> int:
        """Largest micro-batch whose total fits `budget_bytes` (0 if not even one sample)."""
        if self.total_at(1) > budget_bytes:
            return 0
        low, high = 1, 2
        while self.total_at(high) <= budget_bytes:
            low, high = high, high * 2
        while high - low > 1:  # total_at grows with the micro-batch: bisect
            middle = (low + high) // 2
            low, high = (middle, high) if self.total_at(middle) <= budget_bytes else (low, middle)
        return low


def estimate_memory(shape: LlamaShape, layout: Layout) -> MemoryEstimate:
    """Weights, gradients, optimizer states, working buffers and activations per device."""
    counts = count_parameters(shape)
    n, largest, dp = float(counts.total), float(counts.largest_layer), layout.world_size
    gpus_per_node = layout.devices
    sixteen_bit = layout.precision != "32-true"
    notes: list[str] = []
    host = 0.0
    working = 0.0
    strategy = layout.strategy

    if strategy.startswith("deepspeed"):
        # DeepSpeed keeps 16-bit weights and gradients plus an fp32 master copy, momentum and
        # variance (12 bytes); in fp32 there is no separate master copy.
        p, g16, g32, opt = (2.0, 2.0, 4.0, 12.0) if sixteen_bit else (4.0, 0.0, 4.0, 8.0)
        if strategy == "deepspeed_zero1":
            weights, grads, optim = p * n, g16 * n + g32 * n / dp, opt * n / dp
            host = n * 4 * gpus_per_node * HOST_BUFFER_FACTOR
        elif strategy == "deepspeed_zero2":
            weights, grads, optim = p * n, (g16 + g32) * n / dp, opt * n / dp
            host = n * 4 * gpus_per_node * HOST_BUFFER_FACTOR
            if layout.offload_optimizer:
                grads, optim = 0.0, 0.0
                host = n * max(4 * dp, 16) * HOST_BUFFER_FACTOR
        else:  # ZeRO-3: everything partitioned; one layer at a time gathered (16-bit params + grads)
            # DeepSpeed's ZeRO-3 estimator counts 18 bytes per partitioned parameter (2 for the
            # 16-bit weights, 16 for gradients and optimizer states) plus 4 x the largest layer.
            weights, grads, optim = p * n / dp, 4.0 * n / dp, opt * n / dp
            working = 4.0 * largest
            gpus_factor = 1.0 / layout.num_nodes
            host = largest * 4 * gpus_per_node * HOST_BUFFER_FACTOR
            if layout.offload_optimizer:
                grads, optim = 0.0, 0.0
                host = n * 16 * gpus_factor * HOST_BUFFER_FACTOR
                if layout.offload_params:
                    weights = 0.0
                    host = n * 18 * gpus_factor * HOST_BUFFER_FACTOR
            elif layout.offload_params:
                notes.append(
                    "parameter offload without optimizer offload is not a DeepSpeed layout"
                )
    elif strategy == "fsdp":
        # FSDP2 full shard: fp32 sharded parameters, gradients and Adam states; one layer's
        # parameters gathered in the compute dtype, plus the next one prefetched, plus its
        # unsharded gradients before the reduce-scatter.
        compute_bytes = 2.0 if sixteen_bit else 4.0
        master = 2.0 if layout.precision == "bf16-true" else 4.0
        weights, grads, optim = master * n / dp, master * n / dp, 2 * master * n / dp
        working = 3 * compute_bytes * max(float(counts.per_layer), largest)
    else:  # single device or DDP: a full replica of every state per device
        if layout.precision == "bf16-true":
            weights, grads, optim = 2 * n, 2 * n, 4 * n
        else:
            weights, grads, optim = 4 * n, 4 * n, 8 * n
            if sixteen_bit:
                # autocast keeps a 16-bit copy of each weight for the whole forward pass
                working = 2 * n
        if strategy == "ddp" and dp > 1:
            # DDP's gradient buckets (25 MiB each) are views into .grad since bucket_view; small.
            notes.append("DDP replicates every state on every device")

    # torch's AdamW on CPU (and without foreach) updates one tensor at a time with two fp32
    # temporaries of its size; DeepSpeed's optimizers update in place.
    if strategy.startswith("deepspeed"):
        temporaries = 0.0
    else:
        temporaries = 2 * 4.0 * largest / (dp if strategy == "fsdp" else 1)

    def activations_at(micro_batch: int) -> float:
        return activation_bytes(
            shape, micro_batch, layout.seq_len, layout.precision, layout.gradient_checkpointing
        )

    at_one = activations_at(1)
    return MemoryEstimate(
        layout=layout,
        weights=weights,
        gradients=grads,
        optimizer=optim,
        working=working,
        step_temporaries=temporaries,
        activations=activations_at(layout.micro_batch_size),
        activations_at_one=at_one,
        activations_per_sample=activations_at(2) - at_one,
        host_per_node=host,
        notes=notes,
    )


def candidate_layouts(base: Layout) -> list[Layout]:
    """Every strategy the planner compares, at the base layout's ranks, precision and batch."""
    from dataclasses import replace

    plain = replace(base, offload_optimizer=False, offload_params=False)
    strategies = ["single"] if base.world_size == 1 else ["ddp"]
    strategies += ["fsdp", "deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3"]
    layouts = [replace(plain, strategy=s) for s in strategies]
    layouts += [
        replace(plain, strategy="deepspeed_zero2", offload_optimizer=True),
        replace(plain, strategy="deepspeed_zero3", offload_optimizer=True),
        replace(plain, strategy="deepspeed_zero3", offload_optimizer=True, offload_params=True),
    ]
    return layouts
