"""Perplexity of a causal LM behind any runtime on token windows, teacher forced.

Every token of a window after the first is a target, as in pretraining's validation loss, so
a run's `val_loss` and the perplexity measured here on the same windows agree (exp of it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from quark.core.errors import StepFailed

if TYPE_CHECKING:
    from quark.export.decoding import Decoder


def perplexity(decoder: Decoder, windows: np.ndarray, batch_size: int) -> dict[str, float]:
    """`perplexity`, the mean next-token cross-entropy `val_loss` (nats) and `val_tokens`
    (targets counted) of token windows [n, seq + 1]: inputs, then next-token targets."""
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = decoder.logits(inputs).astype(np.float64)
        if not np.isfinite(logits).all():
            raise StepFailed(f"{decoder.runtime} produced non-finite logits on the windows")
        total += negative_log_likelihood(logits, targets)
        count += targets.size
    loss = total / max(count, 1)
    return {"perplexity": float(np.exp(loss)), "val_loss": loss, "val_tokens": float(count)}


def negative_log_likelihood(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed next-token cross-entropy (log-sum-exp shifted by the maximum, for float safety)."""
    peak = logits.max(-1, keepdims=True)
    log_norm = np.log(np.exp(logits - peak).sum(-1)) + peak[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float((log_norm - picked).sum())
