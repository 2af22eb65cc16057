"""Pruning from intermediate validation losses, on a tiny pretrain: two good trials set the bar,
then a trial with a learning rate far too large is stopped at its first validation and recorded
as pruned (in the study and in its manifest), and the sweep still exits 0."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ..conftest import LaunchFn
from ..steps.test_pretrain import TRAIN, data_run
from .conftest import load_study, search_config, sweep_dir

__all__ = ["data_run"]  # the fixture, imported for the test below

# TRAIN validates every 4 of 12 steps; its own step.optim.lr is left to the search
TINY = [argument for argument in TRAIN if not argument.startswith(("step=", "step.optim.lr="))]
# the median of the completed trials decides, from the second one on
PRUNER = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 0}


def learning_rates(low: float, high: float) -> dict:
    return {"step.optim.lr": {"type": "float", "low": low, "high": high, "log": True}}


@pytest.mark.slow
def test_a_trial_with_a_diverging_loss_is_pruned_at_its_first_validation(
    launch: LaunchFn, outputs: Path, user_conf: Path, data_run: Path
) -> None:
    good = search_config(
        user_conf,
        "tiny_lr",
        learning_rates(9e-3, 1.1e-2),
        step="pretrain",
        n_trials=2,
        pruner=PRUNER,
    )
    launch(*good, *TINY, check=True)
    directory = sweep_dir(outputs, "tiny_lr", step="pretrain")
    assert [t.state.name for t in load_study(outputs, "tiny_lr", "pretrain").trials] == [
        "COMPLETE"
    ] * 2
    assert (directory / "optuna.db").is_file() and (
        directory / "optimization_history.png"
    ).is_file()

    # the same study, one more trial, drawn where the loss explodes (lr 3 instead of 1e-2)
    bad = search_config(
        user_conf, "tiny_lr", learning_rates(2.9, 3.1), step="pretrain", n_trials=3, pruner=PRUNER
    )
    done = launch(*bad, *TINY)
    assert done.returncode == 0, done.stderr  # a pruned trial is no failure
    good_0, good_1, pruned = load_study(outputs, "tiny_lr", "pretrain").trials
    assert pruned.state.name == "PRUNED"
    # reported at the first validation, after 4 of 12 steps, far above the good trials' losses
    assert list(pruned.intermediate_values) == [4]
    assert pruned.intermediate_values[4] > 10 * max(
        good_0.intermediate_values[4], good_1.intermediate_values[4]
    )
    manifest = json.loads((directory / "2" / "manifest.json").read_text())
    assert manifest["status"] == "pruned"
    assert manifest["error"]["message"].startswith("trial 2 pruned at step 4: val/loss")
    logged = list(csv.DictReader((directory / "2" / "logs" / "metrics.csv").open()))
    assert max(int(row["step"]) for row in logged) < 12  # training stopped there
    summary = list(csv.DictReader((directory / "sweep_summary.csv").open()))
    assert [row["status"] for row in summary] == ["completed", "completed", "pruned"]
