"""Schema of the `trainer` group: hardware layout, sharding strategy, precision and batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

# the strategies quark.training.strategies builds; its check_layout refuses any other
STRATEGIES = (
    "single",
    "ddp",
    "fsdp",
    "deepspeed_zero1",
    "deepspeed_zero2",
    "deepspeed_zero3",
)
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")
ACCELERATORS = ("cpu", "gpu", "auto")


@dataclass
class TrainerSchema:
    accelerator: str = choice("cpu", ACCELERATORS)
    devices: int = ranged(1, ge=1)
    num_nodes: int = ranged(1, ge=1)
    strategy: str = choice("single", STRATEGIES)
    precision: str = choice("32-true", PRECISIONS)
    micro_batch_size: int = ranged(8, ge=1)
    accumulate_grad_batches: int = ranged(1, ge=1)
    gradient_checkpointing: bool = False
    # torch.compile the model's forward and the loss as one graph (checkpoint keys stay the same)
    compile: bool = False
    # keep freed host memory in the process for the next step (glibc malloc: no mmap, no trim);
    # fresh pages cost 7-12 % of a CPU step (quark.training.host_memory)
    cache_host_memory: bool = True
    # auto: a rich progress bar on a terminal, none when output goes to a file or pipe
    progress_bar: str = choice("auto", ("auto", "rich", "none"))
    # training loss, learning rate, tokens/s and MFU are logged every this many steps
    log_every_n_steps: int = ranged(10, ge=1)
    # DeepSpeed ZeRO-Offload / ZeRO-Infinity to host memory.
    offload_optimizer: bool = False
    offload_params: bool = False
    # The DeepSpeed config (JSON keys) for the deepspeed_* strategies, free-form: DeepSpeed checks
    # it. quark.training.strategies.deepspeed_config fills and cross-checks the keys Quark owns.
    deepspeed: dict[str, Any] | None = None

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def check(self) -> None:
        if self.strategy == "single" and self.world_size > 1:
            raise ConfigError(
                "trainer.strategy",
                f"'single' runs on one device but devices x num_nodes = {self.world_size}",
                "use trainer=ddp, fsdp or a deepspeed option for several devices",
            )
        if self.offload_optimizer and not self.strategy.startswith("deepspeed"):
            raise ConfigError(
                "trainer.offload_optimizer",
                f"needs a DeepSpeed strategy, not '{self.strategy}'",
                "use trainer=deepspeed_zero2, deepspeed_zero3 or deepspeed_zero3_offload",
            )
        if self.offload_params and self.strategy != "deepspeed_zero3":
            raise ConfigError(
                "trainer.offload_params",
                f"needs trainer.strategy=deepspeed_zero3, not '{self.strategy}'",
                "parameter offload is a ZeRO-3 feature",
            )
        if self.deepspeed is not None and not self.strategy.startswith("deepspeed"):
            raise ConfigError(
                "trainer.deepspeed",
                f"a DeepSpeed config is only read by the deepspeed strategies, not '{self.strategy}'",
                "use trainer=deepspeed_zero1, deepspeed_zero2, deepspeed_zero3 or deepspeed_zero3_offload",
            )
