"""An earlier study's values fitted to this search space, and the space narrowed to where its
best trials lie: log ranges on the log scale, within the configured range, on its grid."""

from __future__ import annotations

import math

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from quark.hpo.narrowing import fit_to_space, narrow_space
from quark.hpo.search_space import parse_search_space

from .conftest import FINETUNE_SPACE

SPACE = parse_search_space(
    {**FINETUNE_SPACE, "peft.dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.05}}
)
LR, WARMUP, RANK, DROPOUT = "step.optim.lr", "step.optim.warmup_steps", "peft.rank", "peft.dropout"


def narrowed(key: str, *values: object, margin: float = 0.5, choices: bool = False) -> object:
    return narrow_space(SPACE, [{key: v} for v in values], margin, choices)[key]


def test_a_log_range_is_the_span_of_the_best_values_widened_on_the_log_scale() -> None:
    # 1e-3 .. 4e-3 spans a factor 4: half of it on each side is a factor 2
    lr = narrowed(LR, 1e-3, 4e-3, 2e-3)
    assert isinstance(lr, FloatDistribution) and lr.log
    assert lr.low == pytest.approx(5e-4) and lr.high == pytest.approx(8e-3)
    # margin 0: exactly the span
    exact = narrowed(LR, 1e-3, 4e-3, margin=0.0)
    assert (exact.low, exact.high) == pytest.approx((1e-3, 4e-3))  # type: ignore[attr-defined]


def test_a_range_is_clipped_to_the_configured_one() -> None:
    lr = narrowed(LR, 3e-2, 1e-1)
    assert lr.low == pytest.approx(3e-2 / math.sqrt(10 / 3))  # type: ignore[attr-defined]
    assert lr.high == 1e-1  # type: ignore[attr-defined]


def test_best_values_that_agree_still_leave_a_tenth_of_the_range_around_them() -> None:
    # the configured range is 4 decades: a tenth is 0.4, half of that on each side
    lr = narrowed(LR, 1e-3, 1e-3)
    assert lr.low == pytest.approx(1e-3 / 10**0.2)  # type: ignore[attr-defined]
    assert lr.high == pytest.approx(1e-3 * 10**0.2)  # type: ignore[attr-defined]


def test_a_stepped_range_widens_outwards_to_its_grid() -> None:
    # 10..20 widened by 5 on each side: 5..25, on the grid of 10: 0..30
    assert narrowed(WARMUP, 10, 20) == IntDistribution(0, 30, step=10)
    # 0.1 alone: 0.09..0.11 (a tenth of the range, half each side), on the grid of 0.05
    assert narrowed(DROPOUT, 0.1) == FloatDistribution(0.05, 0.15, step=0.05)
    assert narrowed(DROPOUT, 0.2) == FloatDistribution(0.15, 0.2, step=0.05)


def test_categoricals_keep_the_choices_the_best_trials_took_only_when_asked() -> None:
    assert narrowed(RANK, 16, 8, 16, choices=True) == CategoricalDistribution((8, 16))
    assert narrowed(RANK, 16, 8, 16) == SPACE[RANK]


def test_a_parameter_no_best_trial_set_keeps_its_configured_distribution() -> None:
    space = narrow_space(SPACE, [{LR: 1e-3}], 0.5, choices=True)
    assert {k: space[k] for k in (WARMUP, RANK, DROPOUT)} == {
        k: SPACE[k] for k in (WARMUP, RANK, DROPOUT)
    }


def test_earlier_values_are_fitted_to_the_space_clipped_rounded_or_left_out() -> None:
    earlier = {
        LR: 0.5,  # above the range: its top
        WARMUP: 23,  # off the grid: the nearest grid value
        RANK: 64,  # not a choice: left for the sampler
        DROPOUT: -0.1,  # below the range: its bottom
        "step.optim.weight_decay": 0.1,  # not searched here
    }
    assert fit_to_space(earlier, SPACE) == {LR: 0.1, WARMUP: 20, DROPOUT: 0.0}
    assert fit_to_space({WARMUP: 45.0, RANK: 16}, SPACE) == {WARMUP: 40, RANK: 16}
