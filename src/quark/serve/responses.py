"""OpenAI's response objects for completions and chat completions: whole, or as server-sent
event chunks (`data: {json}` each, then `data: [DONE]`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from quark.serve.engine import Event
from quark.serve.protocol import APIError


class Reply:
    """OpenAI's response objects, whole or as server-sent event chunks."""

    def __init__(
        self, model: str, chat: bool, choices: int, extra: dict[str, Any] | None = None
    ) -> None:
        self.model, self.chat, self.choices = model, chat, choices
        # fields beyond OpenAI's (the retrieved sources): on the whole response, and on the
        # first chunk of a stream
        self.extra = extra or {}
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def _envelope(self, choices: list[dict[str, Any]], chunk: bool = False) -> dict[str, Any]:
        kind = self.object + (".chunk" if chunk and self.chat else "")
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def _choice(
        self,
        index: int,
        text: str | None,
        finish: str | None,
        chunk: bool,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> dict:
        if not self.chat:
            return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
        shown = None if logprobs is None else {"content": logprobs}
        if chunk:
            delta = {} if text is None else {"content": text}
            return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": shown}
        message = {"role": "assistant", "content": text}
        return {"index": index, "message": message, "finish_reason": finish, "logprobs": shown}

    async def whole(self, events: AsyncIterator[Event]) -> dict[str, Any]:
        texts, finish = [""] * self.choices, [""] * self.choices
        logprobs: list[list[dict[str, Any]] | None] = [None] * self.choices
        prompt_tokens = completion_tokens = 0
        async for event in events:
            if event.finish_reason == "error":
                raise APIError(500, event.error, code="generation_failed", kind="server_error")
            texts[event.index] += event.text
            if event.logprobs is not None:
                logprobs[event.index] = (logprobs[event.index] or []) + event.logprobs
            if event.finish_reason:
                finish[event.index] = event.finish_reason
                prompt_tokens += event.prompt_tokens
                completion_tokens += event.completion_tokens
        choices = [
            self._choice(i, texts[i], finish[i], False, logprobs[i]) for i in range(self.choices)
        ]
        body = {**self._envelope(choices), "usage": usage(prompt_tokens, completion_tokens)}
        return body | self.extra

    async def stream(self, events: AsyncIterator[Event], include_usage: bool) -> AsyncIterator[str]:
        prompt_tokens = completion_tokens = 0
        if self.chat:  # the role comes first, as OpenAI sends it
            for i in range(self.choices):
                first = {"index": i, "delta": {"role": "assistant", "content": ""}}
                chunk = self._envelope([{**first, "finish_reason": None}], chunk=True)
                yield sse(chunk | self.extra if i == 0 else chunk)
        async for event in events:
            if event.finish_reason == "error":
                error = APIError(500, event.error, code="generation_failed", kind="server_error")
                yield sse(error.body())
                continue
            if event.text:
                choice = self._choice(event.index, event.text, None, True, event.logprobs)
                yield sse(self._envelope([choice], chunk=True))
            if event.finish_reason:
                # the last tokens' logprobs, when their text came with the finish
                late = None if event.text else event.logprobs
                choice = self._choice(event.index, None, event.finish_reason, True, late)
                yield sse(self._envelope([choice], chunk=True))
                prompt_tokens += event.prompt_tokens
                completion_tokens += event.completion_tokens
        if include_usage:
            last = {**self._envelope([], chunk=True)}
            yield sse({**last, "usage": usage(prompt_tokens, completion_tokens)})
        yield "data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
