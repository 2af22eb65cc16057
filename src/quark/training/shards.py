"""Training windows over a data run's token shards, in a deterministic order that resumes.

The training split is cut into non-overlapping windows of `seq_len + 1` tokens (inputs and the
next-token targets). Window order is a seeded permutation per pass over the data, so sample k
is the same in every run with the same seed: a run resumed at sample k reads exactly what an
uninterrupted run would have read next.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from quark.core.errors import QuarkError
from quark.data.packing import read_index, read_shard


class TokenWindows(Dataset):
    """Windows of `seq_len + 1` tokens over the shards of one split, memory-mapped."""

    def __init__(self, shard_dir: Path, split: str, seq_len: int) -> None:
        index = read_index(shard_dir)
        self.seq_len = seq_len
        self.vocab_size = int(index["vocab_size"])
        self.shards = [
            read_shard(shard_dir, s["name"], index["dtype"])[0]
            for s in index["splits"][split]["shards"]
        ]
        # (shard, first window start) for every window; windows never span two shards
        counts = [max(0, (len(tokens) - 1) // seq_len) for tokens in self.shards]
        self.offsets = np.cumsum([0, *counts])
        if self.offsets[-1] == 0:
            total = sum(len(t) for t in self.shards)
            raise QuarkError(
                f"{shard_dir}: the {split} split has {total} tokens, fewer than one window of "
                f"{seq_len + 1}; lower the sequence length or prepare more data"
            )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> torch.Tensor:
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        start = (index - int(self.offsets[shard])) * self.seq_len
        window = np.asarray(self.shards[shard][start : start + self.seq_len + 1], dtype=np.int64)
        return torch.from_numpy(window)


class ResumableSampler(Sampler[int]):
    """An endless stream of window indices: a seeded permutation per pass, starting at global
    sample `start`. With several ranks, rank r reads samples r, r + world, r + 2 world, ... of
    the same global stream, so a step of `world` ranks sees what one process with a `world`
    times larger batch would.

    `length` is what the sampler reports as its length (default: one pass). Lightning re-iterates
    the loader at each of its epochs, which would restart the stream at `start`; reporting the
    whole run's samples (see `training_sampler`) keeps a run inside one Lightning epoch.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        length: int | None = None,
    ) -> None:
        self.size = size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world = world
        self.length = length

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.size)
            order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            for global_index in range(offset, self.size):
                if (epoch * self.size + global_index) % self.world == self.rank:
                    yield int(order[global_index])
            position = (epoch + 1) * self.size

    def __len__(self) -> int:
        return self.length or self.size


def training_sampler(trainer: Any, size: int, micro_batch_size: int, seed: int) -> ResumableSampler:
    """This rank's sampler for a Lightning fit, starting after the samples the restored
    checkpoint's steps consumed, and as long as the whole run (one Lightning epoch: a new
    epoch would re-iterate the loader and restart the stream)."""
    rank, world, step, accumulate, max_steps = 0, 1, 0, 1, 0
    if trainer is not None:
        rank, world = trainer.global_rank, trainer.world_size
        step, accumulate = trainer.global_step, trainer.accumulate_grad_batches
        max_steps = max(0, trainer.max_steps)
    per_step = accumulate * micro_batch_size  # samples per optimizer step, per rank
    return ResumableSampler(
        size,
        seed,
        start=step * per_step * world,
        rank=rank,
        world=world,
        length=max(max_steps * per_step, micro_batch_size) if max_steps else None,
    )
