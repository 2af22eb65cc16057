"""The checks every export goes through: the figures mean what their names say, and a missed
tolerance is reported with the key that sets it and by how much."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from quark.export.decoding import TorchDecoder
from quark.export.validation import Tolerance, compare_logits, failed_checks

from .conftest import TinyLlama


class Shifted:
    """The source's logits plus a constant on one token: a known, controlled difference."""

    runtime, times_generation = "test", False

    def __init__(self, source: TorchDecoder, token: int, amount: float) -> None:
        self.source, self.token, self.amount = source, token, amount

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        logits = self.source.logits(tokens)
        logits[..., self.token] += self.amount
        return logits

    def generate(self, prompt: list[int], new_tokens: int) -> list[int]:
        return self.source.generate(prompt, new_tokens)

    def close(self) -> None:
        pass


def test_identical_models_agree_exactly_and_perplexity_is_torchs(tiny_llama: TinyLlama) -> None:
    model = tiny_llama.model()
    source = TorchDecoder(model)
    metrics = compare_logits(source, source, tiny_llama.windows, batch_size=3)
    assert metrics["max_logit_diff"] == 0 and metrics["top1_agreement"] == 1
    assert abs(metrics["logit_cosine"] - 1) < 1e-12 and metrics["ppl_change_pct"] == 0
    windows = torch.from_numpy(tiny_llama.windows)
    with torch.no_grad():
        loss = model(input_ids=windows, labels=windows).loss  # mean next-token cross-entropy
    assert abs(metrics["ppl_source"] - float(loss.exp())) < 1e-4 * metrics["ppl_source"]


def test_a_difference_shows_in_every_figure(tiny_llama: TinyLlama) -> None:
    source = TorchDecoder(tiny_llama.model())
    metrics = compare_logits(source, Shifted(source, token=5, amount=50.0), tiny_llama.windows, 4)
    assert abs(metrics["max_logit_diff"] - 50.0) < 1e-4  # float32 logits
    assert metrics["top1_agreement"] < 0.05  # token 5 now wins everywhere
    assert metrics["ppl_change_pct"] > 100 and metrics["logit_cosine"] < 0.99


def test_missed_limits_name_their_key_and_margin() -> None:
    metrics = {
        "max_logit_diff": 0.5,
        "logit_cosine": 0.999,
        "top1_agreement": 0.9,
        "ppl_change_pct": 1.0,
    }
    limits = Tolerance(max_logit_diff=1e-3, min_top1_agreement=0.95, max_ppl_change_pct=2.0)
    assert failed_checks(metrics, limits) == [
        "max_logit_diff 0.5 is 0.499 above the tolerance 0.001 (export.tolerance.max_logit_diff)",
        "top1_agreement 0.9 is 0.05 below the tolerance 0.95 (export.tolerance.min_top1_agreement)",
    ]
    configured = OmegaConf.create({"max_logit_diff": 1.0, "min_top1_agreement": None})
    assert limits.overridden(configured) == Tolerance(
        max_logit_diff=1.0, min_top1_agreement=0.95, max_ppl_change_pct=2.0
    )
    assert failed_checks(metrics, limits.overridden(configured)) == [
        "top1_agreement 0.9 is 0.05 below the tolerance 0.95 (export.tolerance.min_top1_agreement)"
    ]
