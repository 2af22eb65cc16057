"""Token choice: greedy is argmax, top-k and top-p keep only the likeliest tokens, a seed
reproduces a sequence of samples; and text is released only once final, cut at stop strings."""

from __future__ import annotations

import numpy as np
import pytest

from quark.serve.sampling import SamplingParams, TokenSampler
from quark.serve.text import TextStream

LOGITS = np.log(np.array([0.05, 0.5, 0.3, 0.1, 0.05]))


def draws(params: SamplingParams, count: int = 400) -> list[int]:
    sampler = TokenSampler(params)
    return [sampler(LOGITS) for _ in range(count)]


def test_greedy_and_top_k_1_take_the_argmax() -> None:
    assert set(draws(SamplingParams(temperature=0), 20)) == {1}
    assert set(draws(SamplingParams(top_k=1), 20)) == {1}


def test_top_k_and_top_p_keep_the_likeliest_tokens() -> None:
    assert set(draws(SamplingParams(top_k=2))) == {1, 2}
    assert set(draws(SamplingParams(top_p=0.75))) == {1, 2}  # 0.5 + 0.3 reaches 0.75
    assert set(draws(SamplingParams(top_p=0.5))) == {1}
    assert set(draws(SamplingParams())) == {0, 1, 2, 3, 4}


def test_a_seed_reproduces_the_samples() -> None:
    assert draws(SamplingParams(seed=3)) == draws(SamplingParams(seed=3))
    assert draws(SamplingParams(seed=3)) != draws(SamplingParams(seed=4))


class CharTokenizer:
    """Token i is the i-th character of `alphabet`; ids past it are bytes of 'é' (two halves)."""

    alphabet = "abc d"

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        data = b"".join(
            self.alphabet[i].encode() if i < len(self.alphabet) else "é".encode()[i - 5 : i - 4]
            for i in ids
        )
        return data.decode("utf-8", errors="replace")


@pytest.mark.parametrize("stop", [["c d"], ["zz", "c d"]])
def test_text_is_held_back_while_it_may_start_a_stop_string(stop: list[str]) -> None:
    stream = TextStream(CharTokenizer(), stop)
    released = [stream.add(t) for t in (0, 1, 2, 3)]  # a b c ' '
    # "c " may still become "c d": held back (a stop string's length less one)
    assert "".join(released) == "ab" and not stream.stopped
    assert stream.add(4) == "" and stream.stopped and stream.completion() == "ab"


def test_a_split_character_waits_for_its_second_byte() -> None:
    stream = TextStream(CharTokenizer(), [])
    assert stream.add(0) == "a"
    assert stream.add(5) == ""  # half of é
    assert stream.add(6) == "é"
    assert stream.finish() == "" and stream.completion() == "aé"
