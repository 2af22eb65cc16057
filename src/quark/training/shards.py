"""Training windows over a data run's token shards, in a deterministic order that resumes.

The training split is cut into non-overlapping windows of `seq_len + 1` tokens (inputs and the
next-token targets). Window order is a seeded permutation per pass over the data, so sample k
is the same in every run with the same seed: a run resumed at sample k reads exactly what an
uninterrupted run would have read next.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
    times larger batch would."""

    def __init__(self, size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.size = size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world = world

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
        return self.size
