"""${quark.latest:<step>}: the newest completed run of a step in the same experiment."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from quark.core.errors import bad_input_message
from quark.core.run import Run
from quark.resolvers import register_resolvers, unique_run_dir

register_resolvers()


def make_run(outputs: Path, experiment: str, step: str, name: str, status: str) -> Path:
    cfg = OmegaConf.create({"step": {"name": step}, "experiment_name": experiment, "seed": 0})
    run = Run.open(outputs / experiment / step / name, cfg, inputs=[], overrides=[])
    if status == "completed":
        run.complete({})
    elif status == "failed":
        run.fail(RuntimeError("boom"))
    time.sleep(0.01)  # distinct start times
    return run.dir


def resolve(outputs: Path, experiment: str = "exp", inputs: dict | None = None) -> str:
    cfg = OmegaConf.create(
        {
            "experiment_name": experiment,
            "paths": {"output_dir": str(outputs)},
            "inputs": inputs or {},
            "data_dir": "${quark.latest:data}",
        }
    )
    return cfg.data_dir


def test_latest_is_the_newest_completed_run_of_the_step(tmp_path: Path) -> None:
    make_run(tmp_path, "exp", "data", "a", "completed")
    newest = make_run(tmp_path, "exp", "data", "b", "completed")
    make_run(tmp_path, "exp", "data", "c", "failed")
    make_run(tmp_path, "exp", "data", "d", "running")
    make_run(tmp_path, "other", "data", "e", "completed")
    make_run(tmp_path, "exp", "plan", "f", "completed")
    assert resolve(tmp_path) == str(newest)


def test_latest_prefers_the_run_a_pipeline_handed_over(tmp_path: Path) -> None:
    older = make_run(tmp_path, "exp", "data", "a", "completed")
    make_run(tmp_path, "exp", "data", "b", "completed")
    assert resolve(tmp_path, inputs={"data": str(older)}) == str(older)


def test_latest_without_a_completed_run_is_a_clear_error(tmp_path: Path) -> None:
    make_run(tmp_path, "exp", "data", "a", "failed")
    with pytest.raises(InterpolationResolutionError) as caught:
        resolve(tmp_path)
    # what the user reads: the resolver's own message, not OmegaConf's wrapper
    message = bad_input_message(caught.value)
    assert message is not None
    assert message.startswith("${quark.latest:data}: no completed 'data' run in experiment 'exp'")


def test_unique_run_dir_never_returns_an_existing_directory(tmp_path: Path) -> None:
    first = unique_run_dir(tmp_path)
    first.mkdir()
    second = unique_run_dir(tmp_path)
    assert second != first and not second.exists()
