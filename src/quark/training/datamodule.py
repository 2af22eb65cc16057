"""The LightningDataModule over a data run's shards: resumable training windows, fixed
validation windows."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Subset

from quark.training.shards import TokenWindows, training_sampler


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
        sampler = training_sampler(
            self.trainer, len(self.train_windows), self.micro_batch_size, self.seed
        )
        return DataLoader(self.train_windows, batch_size=self.micro_batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        count = min(len(self.val_windows), self.val_samples)
        return DataLoader(Subset(self.val_windows, range(count)), batch_size=self.micro_batch_size)
