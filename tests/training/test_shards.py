"""Training windows over shards and the resumable sampler."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from quark.core.errors import QuarkError
from quark.data.packing import TokenShardWriter
from quark.training.shards import ResumableSampler, TokenWindows


class CountingTokenizer:
    """Tokenizes 'n' as the n ids 2, 3, ..., n + 1: document lengths are what the test asks for."""

    def encode_batch(
        self, texts: list[str], add_special_tokens: bool = False
    ) -> list[SimpleNamespace]:
        return [SimpleNamespace(ids=list(range(2, 2 + int(t)))) for t in texts]


def shards(tmp_path: Path, lengths: list[int], shard_tokens: int = 10_000) -> Path:
    pack = SimpleNamespace(batch_documents=3, val_fraction=0.0, shard_tokens=shard_tokens)
    writer = TokenShardWriter(tmp_path, CountingTokenizer(), 1, 1000, pack, seed=0)
    for i, n in enumerate(lengths):
        writer.add(str(i), str(n))
    writer.close()
    return tmp_path


def test_windows_cover_the_split_without_crossing_shards(tmp_path: Path) -> None:
    directory = shards(tmp_path, [20, 30, 25], shard_tokens=40)
    windows = TokenWindows(directory, "train", seq_len=8)
    assert all(len(windows[i]) == 9 for i in range(len(windows)))
    # shard 0: 21 + 31 = 52 tokens -> 6 windows; shard 1: 26 tokens -> 3 windows
    assert len(windows) == 6 + 3
    assert windows[0].tolist() == list(range(2, 11))
    assert (
        windows[1][0].item() == 10
    )  # windows overlap by one token: targets of one are inputs of the next


def test_too_few_tokens_for_one_window_is_a_clear_error(tmp_path: Path) -> None:
    directory = shards(tmp_path, [3])
    with pytest.raises(QuarkError, match="fewer than one window of 65"):
        TokenWindows(directory, "train", seq_len=64)


def test_sampler_is_a_seeded_permutation_per_pass_and_resumes_mid_stream() -> None:
    sampler = ResumableSampler(10, seed=3)
    stream = list(itertools.islice(iter(sampler), 35))
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]  # a new order each pass
    for start in (0, 7, 10, 23):
        assert (
            list(itertools.islice(iter(ResumableSampler(10, seed=3, start=start)), 35 - start))
            == stream[start:]
        )
    assert np.array_equal(
        stream[:10], list(itertools.islice(iter(ResumableSampler(10, seed=3)), 10))
    )
