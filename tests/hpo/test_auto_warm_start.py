"""warm_start.source: auto: a new study finds the earlier studies of similar runs, evaluates
their best trials first and searches narrowed ranges, and so reaches a good objective in fewer
trials than a cold start with the same sampler seed. No similar study is a cold start; a rerun
searches the ranges narrowed when the study started."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from quark.hpo.auto_warm_start import WARM_START_FILE, auto_warm_start, study_space
from quark.hpo.search_space import parse_search_space
from quark.hpo.study import WARM_START_ATTR, open_study

from ..conftest import LaunchFn
from .conftest import (
    FINETUNE_SPACE,
    PLAN_SPACE,
    TINY_FINETUNE,
    load_study,
    recorded_study,
    search_config,
    study_settings,
    sweep_dir,
)

SPACE = parse_search_space(FINETUNE_SPACE)
BEST_LR, BEST_RANK = 3e-3, 16
TARGET = 1.01  # within 1% of the best loss, 1.0
SMALL = {"name": "llama_small", "hidden_size": 512, "num_layers": 8}


def loss(params: dict[str, Any], best_lr: float = BEST_LR, best_rank: int = BEST_RANK) -> float:
    """A stand-in for a fine-tune's validation loss: 1.0 at the best learning rate and LoRA
    rank, quadratic in log10(lr), 0.1 more per factor 2 of rank away; warmup does not matter."""
    lr_term = (math.log10(params["step.optim.lr"]) - math.log10(best_lr)) ** 2
    return 1.0 + lr_term + 0.1 * abs(math.log2(params["peft.rank"] / best_rank))


def trials_to_reach(study: Any, space: dict[str, Any], limit: int = 200) -> int:
    """Ask and tell (as the sweeper does, with `loss` for the job) until a trial's loss is
    within TARGET; how many trials that took (limit + 1: never)."""
    for count in range(1, limit + 1):
        trial = study.ask(space)
        value = loss(trial.params)
        study.tell(trial, value)
        if value <= TARGET:
            return count
    return limit + 1


def sweep_config(outputs: Path, run: dict[str, Any] | None = None) -> Any:
    """The composed config of this sweep, as far as auto warm start reads it."""
    return OmegaConf.create({"paths": {"output_dir": str(outputs)}, **(run or TINY_FINETUNE)})


def test_a_warm_start_from_a_similar_study_reaches_the_target_in_fewer_trials(
    tmp_path: Path,
) -> None:
    outputs = tmp_path / "outputs"
    # last week's study of the same kind of run, whose best learning rate was a quarter of a
    # decade higher; and one of a bigger model, whose best values are elsewhere altogether
    earlier = recorded_study(
        outputs, "similar", lambda p: loss(p, best_lr=BEST_LR * 10**0.25), 30, seed=101
    )
    recorded_study(
        outputs,
        "bigger_model",
        lambda p: loss(p, best_lr=1e-5, best_rank=4),
        5,
        run={**TINY_FINETUNE, "model": SMALL},
    )
    counts = {}
    for seed in (0, 1, 2):
        cold_settings = study_settings(tmp_path / "cold" / str(seed), "cold", seed=seed)
        cold = trials_to_reach(open_study(cold_settings), SPACE)

        directory = tmp_path / "warm" / str(seed)
        settings = study_settings(directory, "warm", seed=seed, source="auto")
        study = open_study(settings)
        space = auto_warm_start(study, settings, SPACE, sweep_config(outputs), directory)
        warm = trials_to_reach(study, space)
        counts[seed] = (cold, warm)
        print(f"seed {seed}: cold start {cold} trials, auto warm start {warm} trials")

    assert all(warm < cold for cold, warm in counts.values()), counts
    record = json.loads((tmp_path / "warm" / "0" / WARM_START_FILE).read_text())
    assert [(s["study"], s["used"]) for s in record["studies"]] == [
        ("bigger_model", False),
        ("similar", True),
    ]
    assert record["studies"][0]["reason"].startswith("its runs differ: model hidden_size 512")
    best = sorted(earlier.trials, key=lambda t: t.value)
    assert [e["params"] for e in record["enqueued"]] == [t.params for t in best[:5]]
    lr = record["ranges"]["step.optim.lr"]
    assert lr["before"] == {"low": 1e-5, "high": 1e-1, "log": True}
    assert 1e-5 < lr["after"]["low"] < BEST_LR < lr["after"]["high"] < 1e-1
    assert record["ranges"]["peft.rank"]["after"] == {"choices": [4, 8, 16, 32]}


def test_without_a_similar_study_it_is_a_cold_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outputs = tmp_path / "outputs"
    recorded_study(outputs, "bigger_model", loss, 3, run={**TINY_FINETUNE, "model": SMALL})
    recorded_study(outputs, "other_objective", loss, 3, objective="val_accuracy")
    directory = tmp_path / "sweep"
    settings = study_settings(directory, "warm", source="auto")
    study = open_study(settings)
    with caplog.at_level(logging.INFO, logger="quark.hpo"):
        space = auto_warm_start(study, settings, SPACE, sweep_config(outputs), directory)
    assert space == SPACE
    assert study.trials == []
    assert f"no similar earlier study under {outputs}: a cold start" in caplog.text
    assert "not using study 'bigger_model'" in caplog.text
    record = json.loads((directory / WARM_START_FILE).read_text())
    assert record["cold_start"] and record["enqueued"] == []
    assert not any(s["used"] for s in record["studies"])


def test_identical_best_trials_are_enqueued_once_and_fitted_to_this_space(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    wide = {**FINETUNE_SPACE, "step.optim.lr": {"type": "float", "low": 1e-5, "high": 1.0}}
    best = {"step.optim.lr": 0.5, "step.optim.warmup_steps": 10, "peft.rank": 16}
    for name in ("first", "second"):  # both found the same best values
        recorded_study(outputs, name, loss, 3, fixed=[best], params=wide)
    directory = tmp_path / "sweep"
    settings = study_settings(directory, "warm", source="auto", trials=2, narrow=False)
    study = open_study(settings)
    space = auto_warm_start(study, settings, SPACE, sweep_config(outputs), directory)
    assert space == SPACE
    waiting = [t for t in study.trials if t.state.name == "WAITING"]
    assert len(waiting) == 2
    first = study.ask(space)
    assert first.params == {**best, "step.optim.lr": 0.1}  # 0.5 is beyond this study's range
    assert first.user_attrs[WARM_START_ATTR].endswith("#first:0")
    assert study.ask(space).params != first.params


def test_a_rerun_searches_the_ranges_narrowed_when_the_study_started(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    recorded_study(outputs, "similar", loss, 8)
    directory = tmp_path / "sweep"
    settings = study_settings(directory, "warm", source="auto", narrow_choices=True)
    study = open_study(settings)
    narrowed = auto_warm_start(study, settings, SPACE, sweep_config(outputs), directory)
    assert narrowed != SPACE
    study.tell(study.ask(narrowed), 1.5)

    # the same command again, or without warm_start.source: the same space, nothing enqueued
    again = open_study(settings)
    assert study_space(again, SPACE) == narrowed
    assert auto_warm_start(again, settings, narrowed, sweep_config(outputs), directory) == narrowed
    assert len(again.trials) == 5  # the first run's: 1 told, 4 still waiting
    # a configured range changed so that the narrowed one no longer lies within it: as configured
    lr = narrowed["step.optim.lr"]
    moved = {**FINETUNE_SPACE, "step.optim.lr": {"type": "float", "low": lr.high, "high": 1.0}}
    assert study_space(again, parse_search_space(moved))["step.optim.lr"].low == lr.high


@pytest.mark.slow
def test_a_sweep_with_source_auto_starts_from_an_earlier_study_of_the_same_runs(
    launch: LaunchFn, outputs: Path, user_conf: Path
) -> None:
    launch(*search_config(user_conf, "plan_first", PLAN_SPACE, n_trials=4), check=True)
    earlier = sorted(load_study(outputs, "plan_first").trials, key=lambda t: t.value)
    warm = {"source": "auto", "trials": 2}
    done = launch(
        *search_config(user_conf, "plan_auto", PLAN_SPACE, n_trials=3, warm_start=warm),
        check=True,
    )
    trials = load_study(outputs, "plan_auto").trials
    assert [t.params for t in trials[:2]] == [t.params for t in earlier[:2]]
    directory = sweep_dir(outputs, "plan_auto")
    for trial in trials[:2]:  # the same config: the earlier runs are reused
        manifest = json.loads((directory / str(trial.number) / "manifest.json").read_text())
        assert manifest["status"] == "reused"
    record = json.loads((directory / WARM_START_FILE).read_text())
    assert [(s["study"], s["used"]) for s in record["studies"]] == [("plan_first", True)]
    assert "using study 'plan_first'" in done.stdout + done.stderr
    mfu = record["ranges"]["step.mfu"]
    assert 0.2 <= mfu["after"]["low"] < mfu["after"]["high"] <= 0.6
