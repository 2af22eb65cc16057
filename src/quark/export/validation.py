"""How close an export is to its source model, and whether that is close enough.

Measured on a data run's validation windows, teacher forced (both models see the same true
tokens, so one early difference cannot snowball as it does in free-running generation):
the largest logit difference, the mean cosine of the logit vectors, top-1 agreement, and both
perplexities. Free-running greedy agreement is recorded too, but not checked: a quantized
model may pick another token where two are nearly tied and continue differently from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from quark.core.errors import StepFailed
from quark.export.decoding import Decoder, decode_ms_per_token

REPORT = "validation.json"


@dataclass(frozen=True)
class Tolerance:
    """Limits an export must meet; None: not checked."""

    max_logit_diff: float | None = None
    min_logit_cosine: float | None = None
    min_top1_agreement: float | None = None
    max_ppl_change_pct: float | None = None

    def overridden(self, configured: Any) -> Tolerance:
        """These limits with every non-null key of `configured` (export.tolerance) in place."""
        given = {f.name: configured.get(f.name) for f in fields(self)}
        return Tolerance(**{**asdict(self), **{k: v for k, v in given.items() if v is not None}})


def validation_windows(data_dir: Path, seq_len: int, count: int) -> Any:
    """The first `count` validation windows of `seq_len + 1` tokens, as an int64 array."""
    from quark.training.shards import TokenWindows

    val = TokenWindows(data_dir / "shards", "val", seq_len)
    return np.stack([val[i].numpy() for i in range(min(count, len(val)))]).astype(np.int64)


def compare_logits(
    source: Decoder, exported: Decoder, windows: np.ndarray, batch_size: int
) -> dict[str, float]:
    """Teacher-forced agreement of `exported` with `source` on token windows [n, seq + 1]
    (inputs, then next-token targets)."""
    max_diff, cosines, agree, positions = 0.0, 0.0, 0, 0
    nll_source, nll_export = 0.0, 0.0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        inputs, targets = batch[:, :-1], batch[:, 1:]
        ours = source.logits(inputs).astype(np.float64)
        theirs = exported.logits(inputs).astype(np.float64)
        if not np.isfinite(theirs).all():
            raise StepFailed("the export produced non-finite logits on the validation windows")
        max_diff = max(max_diff, float(np.abs(ours - theirs).max()))
        norms = np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1)
        cosines += float(((ours * theirs).sum(-1) / np.maximum(norms, 1e-30)).sum())
        agree += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
        positions += targets.size
        nll_source += _negative_log_likelihood(ours, targets)
        nll_export += _negative_log_likelihood(theirs, targets)
    ppl_source = float(np.exp(nll_source / positions))
    ppl_export = float(np.exp(nll_export / positions))
    return {
        "max_logit_diff": max_diff,
        "logit_cosine": cosines / positions,
        "top1_agreement": agree / positions,
        "ppl_source": ppl_source,
        "ppl_export": ppl_export,
        "ppl_change_pct": 100.0 * (ppl_export / ppl_source - 1.0),
    }


def _negative_log_likelihood(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed next-token cross-entropy (log-sum-exp shifted by the maximum, for float safety)."""
    peak = logits.max(-1, keepdims=True)
    log_norm = np.log(np.exp(logits - peak).sum(-1)) + peak[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float((log_norm - picked).sum())


def compare_generation(
    source: Decoder, exported: Decoder, prompt: list[int], new_tokens: int, repeats: int
) -> dict[str, float]:
    """Free-running greedy decoding: the share of tokens that match before the first
    difference, and milliseconds per token of each (see decode_ms_per_token) where the
    export's runtime is its own."""
    ours = source.generate(prompt, new_tokens)
    theirs = exported.generate(prompt, new_tokens)
    matching = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), new_tokens
    )
    metrics = {"greedy_agreement": matching / new_tokens}
    if exported.times_generation:
        export_ms = decode_ms_per_token(exported, prompt, new_tokens, repeats)
        source_ms = decode_ms_per_token(source, prompt, new_tokens, repeats)
        metrics.update(
            ms_per_token=export_ms,
            ms_per_token_source=source_ms,
            speedup=source_ms / export_ms if export_ms > 0 else float("inf"),
        )
    return metrics


# each limit of a Tolerance: the metric it bounds, and whether from above
LIMITS = {
    "max_logit_diff": ("max_logit_diff", "above"),
    "min_logit_cosine": ("logit_cosine", "below"),
    "min_top1_agreement": ("top1_agreement", "below"),
    "max_ppl_change_pct": ("ppl_change_pct", "above"),
}


def failed_checks(metrics: dict[str, float], tolerance: Tolerance) -> list[str]:
    """One phrase per limit missed, saying by how much and which key sets it."""
    failures = []
    for key, limit in asdict(tolerance).items():
        if limit is None:
            continue
        metric, side = LIMITS[key]
        value = metrics[metric]
        missed = value > limit if side == "above" else value < limit
        if missed or np.isnan(value):
            failures.append(
                f"{metric} {value:.4g} is {abs(value - limit):.3g} {side} the tolerance "
                f"{limit:g} (export.tolerance.{key})"
            )
    return failures


def write_report(path: Path, report: dict[str, Any]) -> None:
    from quark.core.files import write_json_atomic

    write_json_atomic(path, report)
