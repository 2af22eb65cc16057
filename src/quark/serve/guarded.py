"""The safety guard in front of the model: requests it blocks are refused, and answers are
checked before any of their text leaves the server.

A refusal is an ordinary OpenAI response whose choices end with finish_reason
"content_filter" and hold no text (streamed: the role chunk, then that finish). An answer is
streamed with its last `window` characters held back, and only text that is `window`
characters behind the newest passes, so a phrase or pattern up to `window` characters long is
caught before any of it is sent. When the check blocks, the choice ends there with
"content_filter" and what was held back is dropped.

Every earlier prefix was checked and found clean, so a new match ends in the new text: at each
token only the answer's last CHECKED_WINDOWS x `window` characters are checked (the cost of a
token stays flat however long the answer grows), and the whole answer once more before its
end is released.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

from quark.safety.rules import Finding
from quark.serve.engine import Event

CONTENT_FILTER = "content_filter"
# longer than every built-in pattern's usual match (keys, card numbers, private key headers)
# and every phrase of the shipped word lists
HOLD_BACK_CHARACTERS = 64
# how many hold-back windows of an answer's end are checked at each token: room for matches
# (a base64 run, say) several windows long
CHECKED_WINDOWS = 4


class Guard(Protocol):
    """quark.safety.guard.SafetyGuard, or a RuleGuard: what a request or an answer holds."""

    def check_request(self, text: str) -> list[Finding]: ...

    def check(self, text: str) -> list[Finding]: ...


def blocked_request(guard: Guard, texts: list[str]) -> list[Finding]:
    """What the guard finds in a request's prompts or messages (empty: let it through)."""
    return [finding for text in texts for finding in guard.check_request(text)]


async def refusal(prompts: list[list[int]]) -> AsyncGenerator[Event, None]:
    """The events of a refused request: every choice ends at once, with no text."""
    for index, prompt in enumerate(prompts):
        yield Event(index, "", CONTENT_FILTER, prompt_tokens=len(prompt))


async def checked(
    events: AsyncIterator[Event],
    guard: Guard,
    window: int = HOLD_BACK_CHARACTERS,
    choices: int | None = None,
) -> AsyncGenerator[Event, None]:
    """`events` with each choice's text checked before it is passed on (module docstring).
    Once all `choices` have ended or been blocked, the stream is closed, which cancels the
    sequences still generating."""
    sent: dict[int, str] = {}
    held: dict[int, str] = {}
    blocked: set[int] = set()
    ended: set[int] = set()
    # logprobs wait with the text they came with (a release may carry a little more of them)
    held_logprobs: dict[int, list[dict[str, Any]]] = {}
    try:
        async for event in events:
            index = event.index
            if index in blocked:
                continue  # the sequence runs to its end; nothing more of it is sent
            held[index] = held.get(index, "") + event.text
            if event.logprobs is not None:
                held_logprobs.setdefault(index, []).extend(event.logprobs)
            so_far = sent.get(index, "") + held[index]
            tail = so_far[-(CHECKED_WINDOWS * window + len(event.text)) :]
            if guard.check(so_far if event.finish_reason is not None else tail):
                blocked.add(index)
                yield Event(
                    index,
                    "",
                    CONTENT_FILTER,
                    prompt_tokens=event.prompt_tokens,
                    completion_tokens=event.completion_tokens,
                )
                ended.add(index)
                if choices is not None and len(ended) == choices:
                    return
                continue
            if event.finish_reason is not None:
                ended.add(index)
                release, held[index] = held[index], ""
            else:
                cut = max(0, len(held[index]) - window)
                release, held[index] = held[index][:cut], held[index][cut:]
            sent[index] = sent.get(index, "") + release
            if release or event.finish_reason is not None:
                logprobs = held_logprobs.pop(index, None) if event.logprobs is not None else None
                yield Event(
                    index,
                    release,
                    event.finish_reason,
                    event.prompt_tokens,
                    event.completion_tokens,
                    event.error,
                    logprobs,
                )
    finally:
        # closing this closes the scheduler's stream, which cancels the sequences
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
