"""quark.lineage.finding: the run a step reads, in the one order every step uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from quark.core.errors import ConfigError
from quark.lineage.finding import ancestors, find_run, holds_shards, missing

from .conftest import MakeRun, cfg_for

SHARDS = {"shards/index.json": "{}"}


def test_a_named_path_wins_even_when_it_does_not_hold_what_is_wanted(
    make_run: MakeRun, tmp_path: Path
) -> None:
    make_run("data", SHARDS)
    cfg = cfg_for(tmp_path / "outputs", data_dir=str(tmp_path))
    # the step checks a named path itself, so that its error names the key
    assert find_run(cfg, ("data",), key="step.data_dir", holds=holds_shards) == tmp_path
    nowhere = cfg_for(tmp_path / "outputs", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"^step.data_dir: .*nowhere does not exist"):
        find_run(nowhere, ("data",), key="step.data_dir")


def test_a_handed_over_run_wins_over_the_newest_when_it_holds_what_is_wanted(
    make_run: MakeRun, tmp_path: Path
) -> None:
    older = make_run("data", SHARDS)
    pairs = make_run("data", {"train.jsonl": "{}"})
    make_run("data", SHARDS)
    outputs = tmp_path / "outputs"
    handed = cfg_for(outputs, data_dir=None, inputs={"data": str(older)})
    assert find_run(handed, ("data",), key="step.data_dir", holds=holds_shards) == older
    # a handed-over run without shards is passed by: the newest with shards is taken
    wrong = cfg_for(outputs, data_dir=None, inputs={"data": str(pairs)})
    newest = find_run(wrong, ("data",), key="step.data_dir", holds=holds_shards)
    assert newest is not None and newest.name == "run002"


def test_the_newest_completed_run_of_the_first_step_that_has_one(
    make_run: MakeRun, tmp_path: Path
) -> None:
    pretrain = make_run("pretrain")
    make_run("finetune", status="failed")
    make_run("pretrain", experiment="other")
    cfg = cfg_for(tmp_path / "outputs")
    assert find_run(cfg, ("finetune", "pretrain")) == pretrain
    finetune = make_run("finetune")
    assert find_run(cfg, ("finetune", "pretrain")) == finetune
    assert find_run(cfg, ("optimize",)) is None


def test_an_ancestor_comes_before_the_newest_run(make_run: MakeRun, tmp_path: Path) -> None:
    trained_on = make_run("data", SHARDS)
    model = make_run("pretrain", {"hf/x": "1"}, inputs={"data": trained_on})
    make_run("data", SHARDS)  # newer, but not what the model was trained on
    export = make_run("optimize", {"exports/onnx/x": "1"}, inputs={"model": model})
    cfg = cfg_for(tmp_path / "outputs", data_dir=None)
    found = find_run(cfg, ("data",), key="step.data_dir", holds=holds_shards, ancestor_of=export)
    assert found == trained_on


def test_ancestors_walk_breadth_first_and_once(make_run: MakeRun) -> None:
    data = make_run("data", SHARDS)
    model = make_run("pretrain", {"hf/x": "1"}, inputs={"data": data})
    export = make_run("optimize", {"exports/onnx/x": "1"}, inputs={"model": model, "data": data})
    walked = [(path, record["role"]) for path, record in ancestors(export)]
    assert walked == [(model, "model"), (data, "data")]


def test_missing_names_the_key_the_experiment_and_what_to_do(tmp_path: Path) -> None:
    error = missing(cfg_for(tmp_path, "exp"), "step.data_dir", "data run", "run step=data")
    assert str(error) == (
        f"step.data_dir: no completed data run in experiment 'exp' under {tmp_path}; run step=data"
    )
