"""Tokens per second and model FLOPs utilisation, logged while training."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class ThroughputLogger(L.Callback):
    """Logs `perf/tokens_per_s` and, when the peak is known, `perf/mfu` every `every_n_steps`
    optimizer steps, measured over the steps since the last log (all ranks together).

    MFU is achieved model FLOPs over the hardware's peak: `flops_per_token` (the planner's 6N
    plus attention) times tokens per second, over `peak_flops` (all devices together).
    """

    def __init__(
        self,
        tokens_per_step: int,
        flops_per_token: float | None,
        peak_flops: float | None,
        every_n_steps: int,
    ) -> None:
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.every_n_steps = every_n_steps
        self._window_start: float | None = None
        self._window_first_step = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._restart(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        steps = trainer.global_step - self._window_first_step
        if steps < self.every_n_steps or self._window_start is None:
            return
        if torch.cuda.is_available() and module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        seconds = time.perf_counter() - self._window_start
        tokens_per_s = steps * self.tokens_per_step / seconds
        module.log("perf/tokens_per_s", tokens_per_s, on_step=True, on_epoch=False)
        if self.flops_per_token and self.peak_flops:
            mfu = tokens_per_s * self.flops_per_token / self.peak_flops
            module.log("perf/mfu", mfu, on_step=True, on_epoch=False)
        self._restart(trainer)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # validation time is not training throughput
        self._restart(trainer)

    def _restart(self, trainer: L.Trainer) -> None:
        self._window_start = time.perf_counter()
        self._window_first_step = trainer.global_step


def peak_flops(accelerator: str, precision: str, world_size: int) -> float | None:
    """Peak FLOP/s of the devices a run trains on, or None when the device is not known.

    CPU processes share one machine, so its peak counts once whatever the number of ranks; a
    GPU's peak comes from the planner's table (H100, H200, A100) times the ranks.
    """
    from quark.planning.hardware import GPUS, local_cpu

    if accelerator == "cpu":
        return local_cpu().peak_flops(precision)
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0).upper()
    memory_gb = torch.cuda.get_device_properties(0).total_memory / 2**30
    for key in ("H200", "H100"):
        if key in name:
            return GPUS[key].peak_flops(precision) * world_size
    if "A100" in name:
        key = "A100_80GB" if memory_gb > 50 else "A100_40GB"
        return GPUS[key].peak_flops(precision) * world_size
    return None
