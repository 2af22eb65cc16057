"""The LightningModule around a Hugging Face causal LM: loss, perplexity, optimizer, schedule."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torchmetrics
from omegaconf import DictConfig

from quark.core.errors import StepFailed


class CausalLMModule(L.LightningModule):
    """Next-token training of `model` with AdamW, warmup and cosine decay."""

    def __init__(self, model: torch.nn.Module, optim: DictConfig, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        # token-weighted mean validation loss (torchmetrics syncs it across ranks)
        self.val_loss = torchmetrics.MeanMetric()
        # the step training started from: 0, or the step of the checkpoint it resumed
        self.first_step = 0
        # trainer.compile: the model's forward and the loss as one graph (the Hugging Face
        # Llama traces without a graph break). A compiled function, not a compiled module, so
        # parameter names, and so checkpoints, stay those of the eager model.
        self._loss = torch.compile(next_token_loss) if compile else next_token_loss

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens).logits

    def loss(self, batch: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy. A tensor batch is plain token windows (every token is
        a target); a dict batch holds `input_ids`, `labels` (-100 where no loss is taken, e.g.
        prompts and padding) and optionally `attention_mask`."""
        if isinstance(batch, dict):
            return self._loss(
                self.model, batch["input_ids"], batch["labels"], batch.get("attention_mask")
            )
        return self._loss(self.model, batch, batch, None)

    def configure_model(self) -> None:
        shard_blocks(self.model, self.device_mesh)

    def on_train_start(self) -> None:
        self.first_step = int(self.global_step)

    def training_step(
        self, batch: torch.Tensor | dict[str, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            # the last checkpoint on disk is the last good one: stop before stepping on it
            raise StepFailed(
                f"training loss is not finite ({loss.item()}) at step {self.global_step}; the last good checkpoint is kept"
            )
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def validation_step(
        self, batch: torch.Tensor | dict[str, torch.Tensor], batch_idx: int
    ) -> None:
        labels = batch["labels"] if isinstance(batch, dict) else batch
        # weighted by target tokens: fine-tuning batches differ in how many tokens carry loss
        targets = (labels[:, 1:] != -100).sum()
        self.val_loss.update(self.loss(batch).detach(), weight=targets)

    def on_validation_epoch_end(self) -> None:
        if int(self.val_loss.update_count) == 0:
            return
        # compute() syncs across ranks; every rank validates the same samples anyway
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", torch.exp(loss))

    def configure_optimizers(self) -> Any:
        return adamw_with_schedule(
            self.model,
            self.optim,
            int(self.trainer.max_steps),
            fused=fused_adamw_fits(self.trainer),
        )


def next_token_loss(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """Mean cross-entropy of `model`'s prediction of each next token of `labels` (-100: no loss)."""
    logits = model(
        input_ids=tokens[:, :-1], attention_mask=None if mask is None else mask[:, :-1]
    ).logits
    targets = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
    )


def shard_blocks(model: torch.nn.Module, device_mesh: Any) -> None:
    """FSDP2 over the data-parallel ranks of `device_mesh`: each transformer block, then the
    rest. trainer=fsdp (ModelParallelStrategy) gives LightningModules a mesh; other strategies
    none, and then nothing is done. Lightning calls configure_model again for validate after
    fit, on the already sharded model."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if device_mesh is None or isinstance(model, FSDPModule):
        return
    mesh = device_mesh["data_parallel"]
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def fused_adamw_fits(trainer: L.Trainer) -> bool:
    """Whether the trainer's strategy leaves the optimizer plain tensors of one device (one
    process, or DDP), where torch's fused AdamW applies. DeepSpeed (a DDPStrategy too) steps
    the optimizer on its own flat partitions and FSDP2 on DTensors: they keep the default."""
    return type(trainer.strategy).__name__ in ("SingleDeviceStrategy", "DDPStrategy")


def adamw_with_schedule(
    model: torch.nn.Module, optim: DictConfig, max_steps: int, fused: bool = False
) -> Any:
    """AdamW over `model`'s trainable weights (no weight decay on norms and biases, the 1-D
    tensors), with linear warmup then cosine decay to `optim.min_lr_ratio` of `optim.lr` at
    `max_steps`: what configure_optimizers returns, for every module Quark trains.

    `fused`: torch's fused AdamW kernel, one pass over all weights instead of a loop of small
    kernels per tensor (about 3 % of a step of an 8M-parameter Llama on a 2-core CPU,
    bench/RESULTS.md); the same update up to floating-point rounding."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": float(optim.weight_decay)},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=float(optim.lr),
        betas=(float(optim.beta1), float(optim.beta2)),
        fused=fused or None,
    )
    warmup, floor = int(optim.warmup_steps), float(optim.min_lr_ratio)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
    }
