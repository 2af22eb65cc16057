"""The Lightning strategy for `trainer.strategy`, and the checks that the layout can run here.

single and ddp are Lightning's own. fsdp is FSDP2 through Lightning's ModelParallelStrategy with
every rank in the data-parallel dimension (CausalLMModule.configure_model applies fully_shard).
The deepspeed_* strategies hand `trainer.deepspeed` to Lightning's DeepSpeedStrategy, with the keys
Quark owns filled in from `trainer.*` (`deepspeed_config`); on CPU, through the small subclass
below, since Lightning only allows DeepSpeed on CUDA while DeepSpeed itself runs on CPU with gloo.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import os
import warnings
from collections.abc import Iterator
from typing import Any

from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy
from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError
from quark.core.schemas.trainer import STRATEGIES

# torch's FSDP2 mixed precision has no fp16 loss scaling; Lightning's ModelParallelStrategy allows these
FSDP_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")
# DeepSpeed config keys that restate a Quark key: each must agree with it, or be left out
OWNED_BY = {
    "train_micro_batch_size_per_gpu": "trainer.micro_batch_size",
    "gradient_accumulation_steps": "trainer.accumulate_grad_batches",
    "train_batch_size": "trainer.micro_batch_size x trainer.accumulate_grad_batches x world size",
    "gradient_clipping": "step.grad_clip",
}
# the strategies whose ranks each hold a shard of every weight: no process holds the trained
# model whole, so its export is checked against the validation loss instead of its weights
SHARDED_WEIGHTS = ("deepspeed_zero3", "fsdp")


def holds_whole_model(layout: DictConfig) -> bool:
    """Whether each rank of `layout`'s strategy holds every trained weight whole (single, ddp,
    ZeRO-1 and ZeRO-2, which shard optimizer states and gradients only)."""
    return str(layout.strategy) not in SHARDED_WEIGHTS


def check_layout(cfg: DictConfig) -> None:
    """Refuse a trainer layout this machine cannot run, before anything heavy starts; on CPU,
    also point DeepSpeed at the CPU before anything imports it."""
    layout = cfg.trainer
    strategy = str(layout.strategy)
    if layout.accelerator == "cpu":
        # DeepSpeed picks its accelerator once, on import, which transformers' save_pretrained
        # and from_pretrained do through accelerate; Lightning's ranks inherit the variable
        os.environ["DS_ACCELERATOR"] = "cpu"
    if strategy not in STRATEGIES:
        raise ConfigError(
            "trainer.strategy",
            f"'{strategy}' is not built for training",
            f"allowed: {', '.join(STRATEGIES)}",
        )
    if layout.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "trainer.accelerator",
                "'gpu' asked but no CUDA device is visible",
                "use trainer=cpu, or add trainer.accelerator=cpu trainer.precision=32-true",
            )
    elif layout.precision == "16-mixed":
        raise ConfigError(
            "trainer.precision", "16-mixed needs a GPU", "use 32-true or bf16-mixed on CPU"
        )
    if strategy == "fsdp" and layout.precision not in FSDP_PRECISIONS:
        raise ConfigError(
            "trainer.precision",
            f"'{layout.precision}' is not supported with FSDP2",
            f"allowed: {', '.join(FSDP_PRECISIONS)}",
        )
    if strategy.startswith("deepspeed"):
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(
                "trainer.strategy",
                f"'{strategy}' needs the deepspeed package, which is not installed",
                "pip install 'quark[deepspeed]', or use trainer=ddp or trainer=fsdp",
            )
        deepspeed_config(layout, grad_clip=float(cfg.step.grad_clip))


def deepspeed_config(layout: DictConfig, grad_clip: float | None = None) -> dict[str, Any]:
    """The DeepSpeed config for a deepspeed_* `trainer` group: `trainer.deepspeed` with the ZeRO
    stage, offload sections and micro-batch size set from `trainer.*`.

    Lightning fills gradient_accumulation_steps, gradient_clipping and bf16/fp16 from the Trainer;
    given `grad_clip` (step.grad_clip), gradient_clipping is checked and set here too.

    Raises:
        ConfigError: a key of `trainer.deepspeed` disagrees with the Quark key that owns it, or
            names an optimizer or scheduler (step.optim configures those).
    """
    block = layout.get("deepspeed")
    config: dict[str, Any] = (
        copy.deepcopy(OmegaConf.to_container(block, resolve=True))  # type: ignore[arg-type]
        if isinstance(block, DictConfig)
        else dict(block or {})
    )
    world = int(layout.devices) * int(layout.num_nodes)
    micro, accumulate = int(layout.micro_batch_size), int(layout.accumulate_grad_batches)
    wanted: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulate,
        "train_batch_size": micro * accumulate * world,
    }
    if grad_clip is not None:
        wanted["gradient_clipping"] = grad_clip
    for key, value in wanted.items():
        if key in config and config[key] != value:
            raise ConfigError(
                f"trainer.deepspeed.{key}",
                f"{config[key]} disagrees with {OWNED_BY[key]} ({value})",
                f"set {OWNED_BY[key]} instead and leave {key} out of the DeepSpeed config",
            )
    # Lightning sets gradient_accumulation_steps itself and refuses a config that has it
    config.pop("gradient_accumulation_steps", None)
    config["train_micro_batch_size_per_gpu"] = micro
    if grad_clip is not None:
        config["gradient_clipping"] = grad_clip
    for key in ("optimizer", "scheduler"):
        if key in config:
            raise ConfigError(
                f"trainer.deepspeed.{key}",
                "Quark's optimizer and schedule come from step.optim",
                f"remove trainer.deepspeed.{key}; set step.optim.* instead",
            )
    _check_precision_keys(config, str(layout.precision))

    zero = config.setdefault("zero_optimization", {})
    stage = int(str(layout.strategy).removeprefix("deepspeed_zero"))
    if zero.get("stage", stage) != stage:
        raise ConfigError(
            "trainer.deepspeed.zero_optimization.stage",
            f"{zero['stage']} disagrees with trainer.strategy={layout.strategy}",
            f"choose the stage with trainer=deepspeed_zero{zero['stage']}",
        )
    zero["stage"] = stage
    for section, flag in (
        ("offload_optimizer", "offload_optimizer"),
        ("offload_param", "offload_params"),
    ):
        on, given = bool(layout[flag]), dict(zero.get(section) or {})
        device = given.setdefault("device", "cpu" if on else "none")
        if (device != "none") != on:
            raise ConfigError(
                f"trainer.deepspeed.zero_optimization.{section}.device",
                f"'{device}' disagrees with trainer.{flag}={str(on).lower()}",
                f"set trainer.{flag} (the planner reads it); the device is cpu or nvme when on, none when off",
            )
        if on:
            zero[section] = given
    if layout.offload_optimizer:
        # step.optim's AdamW is a torch optimizer; DeepSpeed refuses it on offloaded states
        # unless told it may (DeepSpeedCPUAdam would be faster, at the cost of a C++ build)
        config.setdefault("zero_force_ds_cpu_optimizer", False)
    return config


def build_strategy(layout: DictConfig) -> Any:
    """What `L.Trainer(strategy=...)` takes for `trainer.strategy`."""
    strategy = str(layout.strategy)
    if strategy == "ddp":
        return "ddp"
    if strategy == "fsdp":
        # last.ckpt is written again at the end of training, on purpose; torch warns every rank
        warnings.filterwarnings("ignore", "Detected an existing checkpoint", UserWarning)
        world = int(layout.devices) * int(layout.num_nodes)
        return ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1)
    if strategy.startswith("deepspeed"):
        # DeepSpeed 0.19 calls these deprecated collectives on every step, on every rank
        warnings.filterwarnings("ignore", r"`torch\.distributed\.\w+` is deprecated", FutureWarning)
        if layout.accelerator == "cpu":
            # as check_layout does (on a machine with a GPU, DeepSpeed would pick CUDA)
            os.environ["DS_ACCELERATOR"] = "cpu"
            return CPUDeepSpeedStrategy(config=deepspeed_config(layout))
        return DeepSpeedStrategy(config=deepspeed_config(layout))
    return "auto"


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeedStrategy on CPU processes (gloo, DeepSpeed's CPU accelerator).

    Lightning refuses any accelerator but CUDA and hands DeepSpeed the CUDA device index; the
    rest of its DeepSpeed integration (config, checkpoints, precision) is used unchanged.
    """

    def setup_environment(self) -> None:
        # skip DeepSpeedStrategy's CUDA-only check, keep DDPStrategy's process-group setup
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        # DeepSpeedStrategy also checks CUDA device indices here; CPU devices have none
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        with _device_rank(self.local_rank):
            return super()._setup_model_and_optimizer(*args, **kwargs)

    def _initialize_deepspeed_inference(self, model: Any) -> None:
        with _device_rank(self.local_rank):
            super()._initialize_deepspeed_inference(model)


@contextlib.contextmanager
def _device_rank(rank: int) -> Iterator[None]:
    """Lightning passes `root_device.index` to deepspeed.initialize as the device rank: None on
    CPU, which DeepSpeed compares with 0. Give it the local rank for the duration of the call."""
    import deepspeed

    initialize = deepspeed.initialize

    def with_rank(*args: Any, **kwargs: Any) -> Any:
        kwargs["args"] = argparse.Namespace(device_rank=rank)
        return initialize(*args, **kwargs)

    deepspeed.initialize = with_rank
    try:
        yield
    finally:
        deepspeed.initialize = initialize


def _check_precision_keys(config: dict[str, Any], precision: str) -> None:
    for key, precisions in (
        ("bf16", ("bf16-mixed", "bf16-true")),
        ("fp16", ("16-mixed", "16-true")),
    ):
        section = config.get(key)
        if section is None:
            continue
        enabled = (
            bool(section.get("enabled", False)) if isinstance(section, dict) else bool(section)
        )
        if enabled != (precision in precisions):
            raise ConfigError(
                f"trainer.deepspeed.{key}",
                f"enabled={enabled} disagrees with trainer.precision={precision}",
                f"set trainer.precision instead and leave {key} out of the DeepSpeed config",
            )
