"""The LightningDataModule over a data run's shards: resumable training windows, fixed
validation windows."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Subset

from quark.training.shards import ResumableSampler, TokenWindows


class ShardDataModule(L.LightningDataModule):
    def __init__(
        self, shard_dir: Path, seq_len: int, micro_batch_size: int, seed: int, val_samples: int
    ) -> None:
        super().__init__()
        self.shard_dir = shard_dir
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.val_samples = val_samples

    def setup(self, stage: str) -> None:
        self.train_windows = TokenWindows(self.shard_dir, "train", self.seq_len)
        self.val_windows = TokenWindows(self.shard_dir, "val", self.seq_len)

    def train_dataloader(self) -> DataLoader:
        # Called after a checkpoint is restored: start where the interrupted run stopped.
        trainer = self.trainer
        rank, world, consumed = 0, 1, 0
        if trainer is not None:
            rank, world = trainer.global_rank, trainer.world_size
            consumed = (
                trainer.global_step
                * trainer.accumulate_grad_batches
                * self.micro_batch_size
                * world
            )
        sampler = ResumableSampler(
            len(self.train_windows), self.seed, start=consumed, rank=rank, world=world
        )
        return DataLoader(self.train_windows, batch_size=self.micro_batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        count = min(len(self.val_windows), self.val_samples)
        return DataLoader(Subset(self.val_windows, range(count)), batch_size=self.micro_batch_size)
