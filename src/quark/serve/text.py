"""The text of a sequence's generated tokens, released to the client only once it is final."""

from __future__ import annotations

from typing import Any


class TextStream:
    """Detokenizes generated tokens incrementally and applies stop strings.

    Text is held back while it could still change: a trailing incomplete UTF-8 character
    (decoded as U+FFFD), or a tail that may be the start of a stop string. Each token is decoded
    with the few tokens before it only (a window), so a long generation costs the same per token.
    """

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.tokens: list[int] = []
        self.text = ""  # everything decoded so far
        self.released = 0  # characters of `text` handed out
        self.stopped = False  # a stop string appeared: generation is over
        self._prefix = 0  # tokens[_prefix:_read] were decoded last time, for context
        self._read = 0

    def add(self, token: int) -> str:
        """The text that became final with `token` (often ''); sets `stopped` at a stop string."""
        self.tokens.append(token)
        before = self._decode(self.tokens[self._prefix : self._read])
        after = self._decode(self.tokens[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.tokens)
        return self._release(final=False)

    def finish(self) -> str:
        """The text still held back, at the end of generation (length or end-of-sequence)."""
        if self.stopped:
            return ""
        if self._read < len(self.tokens):  # an unfinished character: give what decodes
            rest = self._decode(self.tokens[self._prefix :])
            self.text += rest[len(self._decode(self.tokens[self._prefix : self._read])) :]
            self._read = len(self.tokens)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        start = max(0, self.released - self.hold)
        found = [at for s in self.stop if (at := self.text.find(s, start)) >= 0]
        if found:
            self.stopped = True
            end = max(min(found), self.released)
        else:
            end = len(self.text) if final else max(len(self.text) - self.hold, self.released)
        out = self.text[self.released : end]
        self.released = end
        return out

    def completion(self) -> str:
        """All the text released so far."""
        return self.text[: self.released]

    def _decode(self, tokens: list[int]) -> str:
        if not tokens:
            return ""
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))
