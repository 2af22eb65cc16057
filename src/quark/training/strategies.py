"""The Lightning strategy for `trainer.strategy`, and the checks that the layout can run here."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError

BUILT_STRATEGIES = ("single", "ddp")


def check_layout(cfg: DictConfig) -> None:
    """Refuse a trainer layout this machine cannot run, before anything heavy starts."""
    strategy = str(cfg.trainer.strategy)
    if strategy not in BUILT_STRATEGIES:
        raise ConfigError(
            "trainer",
            f"strategy '{strategy}' is not built for training yet",
            "use trainer=cpu, gpu or ddp; FSDP and DeepSpeed come with the training issue",
        )
    if cfg.trainer.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "trainer.accelerator",
                "'gpu' asked but no CUDA device is visible",
                "use trainer=cpu here",
            )
    elif cfg.trainer.precision == "16-mixed":
        raise ConfigError(
            "trainer.precision", "16-mixed needs a GPU", "use 32-true or bf16-mixed on CPU"
        )


def build_strategy(trainer_cfg: DictConfig) -> Any:
    """What `L.Trainer(strategy=...)` takes for `trainer.strategy`."""
    return "ddp" if trainer_cfg.strategy == "ddp" else "auto"
