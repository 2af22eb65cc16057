"""The scheduler: continuous batching of every active sequence into one forward pass a step.

One thread owns the model. Each turn it (1) drops the sequences whose clients left, (2) admits
waiting requests into free slots (up to max_batch_size), their prompts prefilled together,
left-padded, in forward passes of at most max_prefill_tokens (padded) tokens, and (3) runs one
decode step for all active sequences together.

The batch's key/value cache is one tensor per layer and kind, [batch, kv_heads, length,
head_dim], left-padded: a joining sequence is padded (or pads the batch) to the longest, a
leaving one is dropped with the leading positions no row attends any more. The attention mask
marks padding and each row's position ids count its own tokens, so a sequence decodes to the
same tokens alone or in any batch (tests/serve/test_batching.py holds it to that). A padding
query attends to nothing: torch's SDPA and ONNX Runtime's Attention give it zeros, not NaN.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quark.serve.backends import Cache, ServedModel, drop_positions, take_rows
from quark.serve.sampling import SamplingParams, TokenSampler, token_logprobs
from quark.serve.text import TextStream

log = logging.getLogger("quark")


@dataclass
class Event:
    """What a sequence reports to its request: new text, and at the end why it ended."""

    index: int  # the choice it belongs to
    text: str = ""
    # "stop" (end-of-sequence token or stop string), "length" (max_tokens), "error"
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""
    # OpenAI's chat logprobs entries of the tokens generated since the last event, when asked
    logprobs: list[dict[str, Any]] | None = None


class Sequence:
    """One prompt being completed; `emit` is called on the scheduler thread."""

    def __init__(
        self,
        prompt: list[int],
        params: SamplingParams,
        tokenizer: Any,
        emit: Callable[[Event], None],
        index: int = 0,
    ) -> None:
        self.prompt = prompt
        self.params = params
        self.sample = TokenSampler(params)
        self.text = TextStream(tokenizer, params.stop)
        self.emit = emit
        self.index = index
        self.generated: list[int] = []
        self.cancelled = False  # set from the server's thread when the client has gone
        self.tokenizer = tokenizer
        # logprobs entries not yet reported (text may be held back while tokens are not)
        self.pending_logprobs: list[dict[str, Any]] | None = None if params.logprobs is None else []

    def note_logprobs(self, logits: np.ndarray, token: int) -> None:
        """Keep `token`'s log-probability (and the likeliest alternatives) for the next event."""
        if self.pending_logprobs is None:
            return
        logprob, likeliest = token_logprobs(logits, token, int(self.params.logprobs or 0))
        self.pending_logprobs.append(
            {
                **self._token_entry(token, logprob),
                "top_logprobs": [self._token_entry(i, lp) for i, lp in likeliest],
            }
        )

    def _token_entry(self, token: int, logprob: float) -> dict[str, Any]:
        text = str(self.tokenizer.decode([token]))
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    def event(self, text: str, reason: str | None = None, error: str = "") -> Event:
        """An event carrying `text` and the log-probabilities not yet reported."""
        logprobs = self.pending_logprobs
        if logprobs is not None:
            self.pending_logprobs = []
        return Event(
            self.index, text, reason, len(self.prompt), len(self.generated), error, logprobs
        )

    def finish(self, reason: str, text: str = "", error: str = "") -> None:
        self.emit(self.event(text, reason, error))


@dataclass
class EngineStats:
    decode_steps: int = 0
    # decode steps by how many sequences they computed together
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    prefills: int = 0  # prompts prefilled
    prefill_passes: int = 0  # forward passes they took
    tokens_generated: int = 0
    finished: int = 0
    cancelled: int = 0


class Engine:
    def __init__(
        self, model: ServedModel, max_batch_size: int, max_prefill_tokens: int = 2048
    ) -> None:
        self.model = model
        self.backend = model.backend
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.stats = EngineStats()
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.rows: list[Sequence] = []  # the active batch, in cache row order
        self.past: Cache | None = None
        self.mask = np.zeros((0, 0), np.int64)
        self.failure: BaseException | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="quark-serve-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current step; sequences still running end with an error event."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()
        for seq in [*self.rows, *self.waiting]:
            seq.finish("error", error="the server is shutting down")
        self.rows, self.waiting = [], collections.deque()

    def submit(self, sequences: list[Sequence]) -> None:
        with self._wake:
            if self._stopping or self.failure is not None:
                raise RuntimeError("the scheduler is not running")
            self.waiting.extend(sequences)
            self._wake.notify()

    def health(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "active": len(self.rows),
            "waiting": len(self.waiting),
            "max_batch_size": self.max_batch_size,
            "decode_steps": stats.decode_steps,
            "decode_batch_sizes": {str(k): v for k, v in sorted(stats.batch_sizes.items())},
            "max_decode_batch": max(stats.batch_sizes, default=0),
            "prefills": stats.prefills,
            "prefill_passes": stats.prefill_passes,
            "tokens_generated": stats.tokens_generated,
            "finished": stats.finished,
            "cancelled": stats.cancelled,
        }

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    while not (self._stopping or self.waiting or self.rows):
                        self._wake.wait()
                    if self._stopping:
                        return
                    joining: list[Sequence] = []
                    while self.waiting and len(self.rows) + len(joining) < self.max_batch_size:
                        joining.append(self.waiting.popleft())
                self._remove([i for i, seq in enumerate(self.rows) if seq.cancelled])
                self.stats.cancelled += sum(seq.cancelled for seq in joining)
                for group in self._prefill_groups([s for s in joining if not s.cancelled]):
                    self._prefill(group)
                if self.rows:
                    self._decode()
        except BaseException as exc:  # a runtime fault: every request learns of it
            log.exception("serve: the scheduler failed")
            self.failure = exc
            for seq in [*self.rows, *self.waiting]:
                seq.finish("error", error=f"generation failed: {type(exc).__name__}: {exc}")
            self.rows, self.waiting = [], collections.deque()

    def _prefill_groups(self, joining: list[Sequence]) -> list[list[Sequence]]:
        """`joining` in arrival order, cut into passes whose padded size (rows x longest
        prompt) stays within max_prefill_tokens; a longer prompt goes alone."""
        groups: list[list[Sequence]] = []
        for seq in joining:
            group = groups[-1] if groups else []
            longest = max([len(seq.prompt), *(len(s.prompt) for s in group)])
            if group and longest * (len(group) + 1) <= self.max_prefill_tokens:
                group.append(seq)
            else:
                groups.append([seq])
        return groups

    def _prefill(self, group: list[Sequence]) -> None:
        """The prompts of `group` in one forward pass, left-padded to the longest; those that
        go on join the batch."""
        longest = max(len(seq.prompt) for seq in group)
        ids = np.zeros((len(group), longest), np.int64)  # padding ids are masked out
        mask = np.zeros((len(group), longest), np.int64)
        for row, seq in enumerate(group):
            ids[row, longest - len(seq.prompt) :] = seq.prompt
            mask[row, longest - len(seq.prompt) :] = 1
        positions = np.maximum(mask.cumsum(axis=1) - 1, 0)  # from each row's first token
        logits, past = self.backend.forward(ids, mask, positions, None)
        self.stats.prefills += len(group)
        self.stats.prefill_passes += 1
        going_on = [row for row, seq in enumerate(group) if self._accept(seq, logits[row])]
        if going_on:
            if len(going_on) < len(group):
                past, mask = take_rows(past, going_on), mask[going_on]
            self._join([group[row] for row in going_on], past, mask)

    def _decode(self) -> None:
        count = len(self.rows)
        ids = np.asarray([[seq.generated[-1]] for seq in self.rows], np.int64)
        positions = self.mask.sum(axis=1, keepdims=True)  # each row's own token count
        mask = np.concatenate([self.mask, np.ones((count, 1), np.int64)], axis=1)
        logits, self.past = self.backend.forward(ids, mask, positions, self.past)
        self.mask = mask
        self.stats.decode_steps += 1
        self.stats.batch_sizes[count] += 1
        done = [i for i, seq in enumerate(self.rows) if not self._accept(seq, logits[i])]
        self._remove(done, cancelled=False)

    def _accept(self, seq: Sequence, logits: np.ndarray) -> bool:
        """Sample `seq`'s next token and report it; False when the sequence has ended."""
        token = seq.sample(logits)
        seq.generated.append(token)
        self.stats.tokens_generated += 1
        if token in self.model.stop_ids and not seq.params.ignore_eos:
            reason, text = "stop", seq.text.finish()
        else:
            seq.note_logprobs(logits, token)  # an end-of-sequence token is not content
            text = seq.text.add(token)
            if seq.text.stopped:
                reason = "stop"
            elif len(seq.generated) >= seq.params.max_tokens:
                reason, text = "length", text + seq.text.finish()
            else:
                if text:
                    seq.emit(seq.event(text))
                return True
        self.stats.finished += 1
        seq.finish(reason, text)
        return False

    def _join(self, joining: list[Sequence], past: Cache, mask: np.ndarray) -> None:
        """Add `joining` (rows of `past` and `mask`) to the batch, the shorter side padded."""
        unused = int(np.argmax(mask.any(axis=0)))  # leading positions none of them attends
        if unused:
            past, mask = drop_positions(past, unused), mask[:, unused:]
        if not self.rows or self.past is None:
            self.rows, self.past, self.mask = list(joining), past, mask
            return
        ours, theirs = self.mask.shape[1], mask.shape[1]
        if ours < theirs:
            self.past = self.backend.pad_left(self.past, theirs - ours)
            self.mask = np.pad(self.mask, ((0, 0), (theirs - ours, 0)))
        elif theirs < ours:
            past = self.backend.pad_left(past, ours - theirs)
            mask = np.pad(mask, ((0, 0), (ours - theirs, 0)))
        self.past = self.backend.join_rows([self.past, past])
        self.mask = np.concatenate([self.mask, mask])
        self.rows.extend(joining)

    def _remove(self, indices: list[int], cancelled: bool = True) -> None:
        if not indices:
            return
        if cancelled:
            self.stats.cancelled += len(indices)
        leaving = set(indices)
        keep = [i for i in range(len(self.rows)) if i not in leaving]
        self.rows = [self.rows[i] for i in keep]
        if not keep or self.past is None:
            self.past, self.mask = None, np.zeros((0, 0), np.int64)
            return
        self.past, self.mask = take_rows(self.past, keep), self.mask[keep]
        unused = int(np.argmax(self.mask.any(axis=0)))  # leading positions no row attends
        if unused:
            self.past, self.mask = drop_positions(self.past, unused), self.mask[:, unused:]
