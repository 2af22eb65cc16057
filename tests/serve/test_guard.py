"""The safety guard in front of the served model: a request it blocks is refused with
finish_reason "content_filter" and no text; an answer it blocks ends there, and no piece of
the blocked text is ever streamed (the hold-back window); what it passes streams unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import openai
import pytest

from quark.safety.rules import RuleGuard
from quark.serve.engine import Event
from quark.serve.guarded import CONTENT_FILTER, checked

from .conftest import TinyModels, serving

QUESTION = "colour of item4?"


@dataclass
class Calibrated:
    """The tiny chat model's answer to QUESTION without a guard; a server whose guard blocks
    the answer's last two words (a phrase that arrives over several tokens), and one whose
    guard blocks a word the answer does not hold."""

    answer: str
    phrase: str
    blocking: openai.OpenAI
    passing: openai.OpenAI


def client_of(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def calibrated(tiny_models: TinyModels) -> Iterator[Calibrated]:
    with serving(tiny_models.chat) as plain:
        answer, _ = ask(client_of(plain.url), QUESTION, stream=False)
    phrase = " ".join(answer.split()[-2:])
    assert len(phrase.split()) == 2 and "purple" not in answer
    blocking = RuleGuard.from_lists({"under_test": [phrase]})
    passing = RuleGuard.from_lists({"under_test": ["purple"]})
    with (
        serving(tiny_models.chat, guard=blocking) as blocked,
        serving(tiny_models.chat, guard=passing) as passed,
    ):
        yield Calibrated(answer, phrase, client_of(blocked.url), client_of(passed.url))


def ask(client: openai.OpenAI, question: str, stream: bool) -> tuple[str, str | None]:
    messages = [{"role": "user", "content": question}]
    if not stream:
        whole = client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=30, temperature=0
        )
        return whole.choices[0].message.content or "", whole.choices[0].finish_reason
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=30, temperature=0, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].choices[0].finish_reason


@pytest.mark.parametrize("stream", [False, True])
def test_a_blocked_request_is_refused_with_content_filter(
    calibrated: Calibrated, stream: bool
) -> None:
    question = f"{QUESTION} bill card 4111 1111 1111 1111"  # the built-in card pattern
    text, finish = ask(calibrated.passing, question, stream)
    assert (text, finish) == ("", CONTENT_FILTER)


@pytest.mark.parametrize("stream", [False, True])
def test_a_blocked_answer_ends_without_sending_the_blocked_word(
    calibrated: Calibrated, stream: bool
) -> None:
    text, finish = ask(calibrated.blocking, QUESTION, stream)
    assert finish == CONTENT_FILTER
    # the whole answer is shorter than the hold-back window: not even the phrase's first
    # token, which arrived before the guard could see the phrase, was sent
    assert len(calibrated.answer) < 64 and text == ""


@pytest.mark.parametrize("stream", [False, True])
def test_what_the_guard_passes_is_answered_in_full(calibrated: Calibrated, stream: bool) -> None:
    text, finish = ask(calibrated.passing, QUESTION, stream)
    assert (text, finish) == (calibrated.answer, "stop")


def test_nothing_of_a_phrase_up_to_the_window_is_sent() -> None:
    guard = RuleGuard.from_lists({"weapons": ["pipe bomb"]}, patterns=False)

    async def events() -> AsyncIterator[Event]:
        for piece in ["Make a ", "pipe", " b", "omb", " now"]:
            yield Event(0, piece)
        yield Event(0, "", "stop")

    async def collect(window: int) -> list[Event]:
        return [e async for e in checked(events(), guard, window=window)]

    sent = asyncio.run(collect(window=len("pipe bomb")))
    assert "".join(e.text for e in sent) == "Make"  # everything 9 characters behind the newest
    assert sent[-1].finish_reason == CONTENT_FILTER
    # a window shorter than the phrase lets its start through: the documented limit
    short = asyncio.run(collect(window=2))
    assert "pi" in "".join(e.text for e in short) and short[-1].finish_reason == CONTENT_FILTER


def test_each_token_checks_a_bounded_tail_and_the_end_checks_the_whole_answer() -> None:
    from quark.serve.guarded import CHECKED_WINDOWS

    class Counting:
        def __init__(self, inner: RuleGuard) -> None:
            self.inner, self.lengths = inner, []

        def check(self, text: str) -> list:
            self.lengths.append(len(text))
            return self.inner.check(text)

    async def pieces(parts: list[str]) -> AsyncIterator[Event]:
        for piece in parts:
            yield Event(0, piece)
        yield Event(0, "", "stop")

    async def collect(guard: Counting, parts: list[str], window: int) -> list[Event]:
        return [e async for e in checked(pieces(parts), guard, window=window)]

    # a long clean answer: every check but the last sees at most the checked tail
    counting = Counting(RuleGuard.from_lists({"weapons": ["pipe bomb"]}, patterns=False))
    sent = asyncio.run(collect(counting, ["0123456789"] * 100, window=9))
    assert "".join(e.text for e in sent) == "0123456789" * 100 and sent[-1].finish_reason == "stop"
    assert max(counting.lengths[:-1]) <= CHECKED_WINDOWS * 9 + 10
    assert counting.lengths[-1] == 1000
    # a phrase longer than the checked tail, one character at a time: caught at the end
    counting = Counting(RuleGuard.from_lists({"weapons": ["pipe bomb"]}, patterns=False))
    sent = asyncio.run(collect(counting, list("so, a pipe bomb"), window=1))
    assert sent[-1].finish_reason == CONTENT_FILTER
