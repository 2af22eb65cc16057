"""A study from the command line, on step=plan (a trial takes well under a second): it runs its
trials and reports, a rerun continues it, an interrupted trial is evaluated again, and a new
study can start from an earlier one's best trials."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import LaunchFn
from .conftest import PLAN_SPACE, load_study, search_config, sweep_dir


def started_at(run_dir: Path) -> str:
    return json.loads((run_dir / "manifest.json").read_text())["started_at"]


@pytest.mark.slow
def test_a_study_runs_its_trials_reports_and_a_rerun_continues_it(
    launch: LaunchFn, outputs: Path, user_conf: Path
) -> None:
    search = search_config(user_conf, "plan_study", PLAN_SPACE, n_trials=4)
    done = launch(*search, check=True)
    directory = sweep_dir(outputs, "plan_study")
    study = load_study(outputs, "plan_study")
    values = {t.number: t.value for t in study.trials}
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    # each trial's objective is the metric its run recorded
    for trial in study.trials:
        manifest = json.loads((directory / str(trial.number) / "manifest.json").read_text())
        assert manifest["metrics"]["train_hours"] == trial.value
        assert f"step.mfu={trial.params['step.mfu']!r}" in manifest["overrides"]
    report = json.loads((directory / "hpo_report.json").read_text())
    best = min(values, key=lambda n: values[n])
    assert report["best"]["number"] == best and report["best"]["value"] == values[best]
    assert report["best"]["run_dir"] == str(directory / str(best))
    assert set(report["importances"]) == {"step.mfu", "model"}
    assert (directory / "optimization_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best trial" in done.stdout and f"{best}: train_hours" in done.stdout
    first_runs = {n: started_at(directory / str(n)) for n in values}

    launch(*search, check=True)  # the same command: the study is complete, nothing runs
    assert len(load_study(outputs, "plan_study").trials) == 4

    launch(*search, "hydra.sweeper.n_trials=6", check=True)  # a larger total: two more trials
    study = load_study(outputs, "plan_study")
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4, 5]
    assert {t.number: t.value for t in study.trials if t.number < 4} == values
    assert {n: started_at(directory / str(n)) for n in values} == first_runs  # not run again
    assert (directory / "5" / "manifest.json").is_file()
    # the rerun's sampler does not replay the first run's random draws
    params = [tuple(t.params.values()) for t in study.trials]
    assert len(set(params)) == 6


@pytest.mark.slow
def test_a_trial_left_running_by_a_killed_sweep_is_evaluated_again(
    launch: LaunchFn, outputs: Path, user_conf: Path
) -> None:
    search = search_config(user_conf, "plan_killed", PLAN_SPACE, n_trials=1)
    launch(*search, check=True)
    # what a killed sweep leaves: a RUNNING trial whose sweep process is gone
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    study = load_study(outputs, "plan_killed")
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    left = study.ask(
        {
            "step.mfu": FloatDistribution(0.2, 0.6),
            "model": CategoricalDistribution(("llama_tiny", "llama_small")),
        }
    )
    left.set_user_attr("worker", {"host": socket.gethostname(), "pid": int(gone.stdout)})

    launch(*search, "hydra.sweeper.n_trials=2", check=True)
    trials = load_study(outputs, "plan_killed").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params


@pytest.mark.slow
def test_failing_trials_stop_the_sweep_and_a_rerun_after_the_fix_runs_the_study(
    launch: LaunchFn, outputs: Path, user_conf: Path
) -> None:
    search = search_config(user_conf, "plan_failing", PLAN_SPACE, n_trials=2)
    broken = launch(*search, "step.seq_len=100000", "hydra.sweeper.stop_after_failures=2")
    # every trial fails the same way (the plan refuses the sequence length): two, then it stops
    assert broken.returncode == 2
    assert "2 trials failed in a row; the sweep stops" in broken.stdout + broken.stderr
    assert [t.state.name for t in load_study(outputs, "plan_failing").trials] == ["FAIL"] * 2

    launch(*search, check=True)  # fixed: failed trials do not count, the study gets its two
    states = [t.state.name for t in load_study(outputs, "plan_failing").trials]
    assert states == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_a_study_warm_starts_from_the_best_trials_of_an_earlier_one(
    launch: LaunchFn, outputs: Path, user_conf: Path
) -> None:
    launch(*search_config(user_conf, "plan_first", PLAN_SPACE, n_trials=4), check=True)
    earlier = sorted((t for t in load_study(outputs, "plan_first").trials), key=lambda t: t.value)
    warm = {"source": str(sweep_dir(outputs, "plan_first")), "study_name": None, "trials": 2}
    launch(
        *search_config(user_conf, "plan_second", PLAN_SPACE, n_trials=3, warm_start=warm),
        check=True,
    )
    trials = load_study(outputs, "plan_second").trials
    assert [t.params for t in trials[:2]] == [t.params for t in earlier[:2]]
    assert [t.value for t in trials[:2]] == [t.value for t in earlier[:2]]
    # the same config and inputs: the earlier runs are reused, not computed again
    for trial, source in zip(trials[:2], earlier[:2], strict=True):
        job = sweep_dir(outputs, "plan_second") / str(trial.number)
        manifest = json.loads((job / "manifest.json").read_text())
        assert manifest["status"] == "reused"
        assert manifest["reused_run"] == source.user_attrs["run_dir"]
    assert len(trials) == 3 and "warm_start_from" not in trials[2].user_attrs
