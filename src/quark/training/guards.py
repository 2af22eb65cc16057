"""Stops training before a non-finite step reaches a checkpoint."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from quark.core.errors import StepFailed


class DivergenceGuard(L.Callback):
    """Raises when gradients or weights stop being finite, so no checkpoint ever holds them.

    Put it before ModelCheckpoint: callbacks run in list order, so a bad step raises here before
    the checkpoint callback would save it; the newest checkpoint on disk stays the last good one.
    """

    def on_before_optimizer_step(
        self, trainer: L.Trainer, module: L.LightningModule, optimizer: Any
    ) -> None:
        grads = [p.grad.detach() for p in module.parameters() if p.grad is not None]
        # a norm is finite only if every element is: one multi-tensor kernel over all of them
        if grads and not _all_finite(grads):
            raise StepFailed(
                f"gradients are not finite at step {trainer.global_step}; the last good checkpoint is kept"
            )

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not _all_finite([p.detach() for p in module.parameters()]):
            raise StepFailed(
                f"weights are not finite after step {trainer.global_step}; the last good checkpoint is kept"
            )


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of `tensors` is finite (their norms are; an overflow of the norm
    itself is as good as a non-finite value here)."""
    norms = torch._foreach_norm([t if t.is_floating_point() else t.float() for t in tensors])
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())
