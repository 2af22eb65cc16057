"""A bad search space or sweeper setting stops the study before its first trial: one line on
stderr naming the key and what is allowed, exit status 2, no trial run, no study stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..conftest import LaunchFn
from .conftest import PLAN_SPACE, search_config, sweep_dir

PLAN_KEYS = "name, tokens, tokens_per_param, seq_len, hardware, mfu, device_memory_gb, usable_memory_fraction"
MFU = "hydra.sweeper.params.step.mfu"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("params", "arguments", "line"),
    [
        (
            {"step.mfu": {"type": "float", "low": 0.6, "high": 0.2}},
            [],
            f"{MFU}: low 0.6 is not below high 0.2; allowed: low < high",
        ),
        (
            {"step.mfu": {"type": "float", "low": 0.0, "high": 0.6, "log": True}},
            [],
            f"{MFU}: log scale with low 0.0; allowed: low > 0 when log: true",
        ),
        (
            {"step.mfu": {"type": "uniform", "low": 0.2, "high": 0.6}},
            [],
            f"{MFU}.type: 'uniform' is not a search type; allowed: float, int, categorical",
        ),
        (
            {"step.mfuu": {"type": "float", "low": 0.2, "high": 0.6}},
            [],
            f"hydra.sweeper.params.step.mfuu: no such key in the config; keys in step: {PLAN_KEYS}",
        ),
        (
            {"step.mfu": {"type": "float", "low": 0.2, "high": 1.5}},
            [],
            f"{MFU}: 1.5 is out of range (a value of the search space); allowed: > 0 and <= 1",
        ),
        (
            PLAN_SPACE,
            ["step.tokens_per_parm=10,20"],
            f"step.tokens_per_parm: no such key in the config; keys in step: {PLAN_KEYS}",
        ),
        (
            PLAN_SPACE,
            ["model=llama_tiny,llama_giant"],
            "model=llama_giant: no such option; available: hf, llama_124m, llama_1b, "
            "llama_custom, llama_small, llama_tiny",
        ),
        (
            PLAN_SPACE,
            ["hydra.sweeper.direction=down"],
            "hydra.sweeper.direction: 'down' is not a direction; allowed: minimize, maximize",
        ),
        (
            PLAN_SPACE,
            ["hydra.sweeper.warm_start.source=auto", "hydra.sweeper.warm_start.margin=-1"],
            "hydra.sweeper.warm_start.margin: '-1' is out of range; allowed: a number >= 0 "
            "(a fraction of the span of the best earlier trials)",
        ),
    ],
    ids=[
        "low-above-high",
        "log-from-zero",
        "unknown-type",
        "unknown-key",
        "out-of-schema-range",
        "unknown-key-on-command-line",
        "unknown-option-on-command-line",
        "bad-direction",
        "negative-warm-start-margin",
    ],
)
def test_a_bad_search_exits_2_with_one_line_before_any_trial(
    launch: LaunchFn,
    outputs: Path,
    user_conf: Path,
    params: dict[str, Any],
    arguments: list[str],
    line: str,
) -> None:
    done = launch(*search_config(user_conf, "bad", params), *arguments)
    assert (done.returncode, done.stderr.strip()) == (2, f"error: {line}")
    assert not sweep_dir(outputs, "bad").exists()  # no trial ran, no study was stored
