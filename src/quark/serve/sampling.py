"""The next token of one sequence from its logits: greedy, or sampled with temperature, top-k
and top-p from the sequence's own random generator (so a seed reproduces a completion whatever
else shares its batch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SamplingParams:
    """What one request asks of generation (OpenAI's parameters, plus top_k and ignore_eos)."""

    max_tokens: int = 16
    # 0: greedy (argmax)
    temperature: float = 1.0
    top_p: float = 1.0
    # 0: no top-k cut
    top_k: int = 0
    # generation ends before the first of these strings, which is not returned
    stop: list[str] = field(default_factory=list)
    # null: a fresh random generator
    seed: int | None = None
    # keep generating through end-of-sequence tokens (benchmarks, fixed-length tests)
    ignore_eos: bool = False
    # None: no log-probabilities; k: each token's and the k likeliest alternatives'
    logprobs: int | None = None


class TokenSampler:
    """Picks tokens for one sequence under its SamplingParams."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        """The next token id given the next-token `logits` [vocab]."""
        params = self.params
        if params.temperature == 0 or params.top_k == 1:
            return int(np.argmax(logits))
        scores = logits.astype(np.float64) / params.temperature
        if 0 < params.top_k < scores.size:
            kth = np.partition(scores, -params.top_k)[-params.top_k]
            scores = np.where(scores < kth, -np.inf, scores)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if params.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            # the smallest set of most likely tokens whose mass reaches top_p (at least one)
            keep = order[: int(np.searchsorted(cumulative, params.top_p)) + 1]
            kept = np.zeros_like(probs)
            kept[keep] = probs[keep]
            probs = kept / kept.sum()
        return int(self.rng.choice(probs.size, p=probs))


def token_logprobs(
    logits: np.ndarray, token: int, top: int
) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of `token` under the model's own distribution (the raw logits,
    before temperature or top-k/top-p: what a verifier or a cascade compares across models),
    and the `top` likeliest tokens with theirs."""
    scores = logits.astype(np.float64)
    shifted = scores - scores.max()
    log_probs = shifted - np.log(np.exp(shifted).sum())
    likeliest: list[tuple[int, float]] = []
    if top:
        picked = np.argpartition(-log_probs, min(top, log_probs.size) - 1)[:top]
        picked = picked[np.argsort(-log_probs[picked], kind="stable")]
        likeliest = [(int(i), float(log_probs[i])) for i in picked]
    return float(log_probs[token]), likeliest
