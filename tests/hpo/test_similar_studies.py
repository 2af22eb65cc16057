"""Which earlier studies count as studies of runs like this sweep's: the same objective and
direction, and trials that ran the same step on a model of the same size and the same kind of
data. Every other study is left out, with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from quark.hpo.search_space import parse_search_space
from quark.hpo.similar_studies import (
    RunProfile,
    find_earlier_studies,
    run_profile,
    sweep_profile,
)

from .conftest import FINETUNE_SPACE, TINY_FINETUNE, recorded_study

SPACE = parse_search_space(FINETUNE_SPACE)


def score(params: dict[str, Any]) -> float:
    return float(params["step.optim.lr"])


def like_tiny(**changes: Any) -> dict[str, Any]:
    config = OmegaConf.create(TINY_FINETUNE)
    for key, value in changes.items():
        OmegaConf.update(config, key, value, force_add=True)
    return OmegaConf.to_container(config)  # type: ignore[return-value]


def test_only_studies_of_similar_runs_are_used_and_every_other_says_why(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    custom_tiny = {"name": "llama_custom", "hidden_size": 256, "num_layers": 6}
    small = {"name": "llama_small", "hidden_size": 512, "num_layers": 8}
    recorded_study(outputs, "same", score, 3)
    recorded_study(outputs, "same_size", score, 3, run=like_tiny(model=custom_tiny))
    recorded_study(outputs, "bigger_model", score, 3, run=like_tiny(model=small))
    recorded_study(outputs, "other_data", score, 3, run=like_tiny(**{"data.kind": "corpus"}))
    recorded_study(outputs, "other_step", score, 3, run=like_tiny(**{"step.name": "pretrain"}))
    recorded_study(outputs, "other_objective", score, 3, objective="val_accuracy")
    recorded_study(outputs, "other_direction", score, 3, direction="maximize")
    recorded_study(outputs, "no_trials", score, 0)

    profile = sweep_profile(OmegaConf.create(TINY_FINETUNE), "val_loss", "minimize", SPACE)
    found = {s.name: s for s in find_earlier_studies(outputs, profile, ("", ""))}

    assert {name for name, s in found.items() if s.similar} == {"same", "same_size"}
    assert len(found["same"].trials) == 3
    assert found["same"].reason == "3 of 3 completed trials ran alike"
    assert profile.describe() == (
        "objective val_loss (minimize), step finetune, "
        "model hidden_size 256, num_layers 6, data arithmetic_sft"
    )
    reasons = {name: s.reason for name, s in found.items() if not s.similar}
    tiny = "hidden_size 256, num_layers 6"
    assert reasons == {
        "bigger_model": f"its runs differ: model hidden_size 512, num_layers 8 (this sweep: {tiny})",
        "other_data": "its runs differ: data corpus (this sweep: arithmetic_sft)",
        "other_step": "its runs differ: step pretrain (this sweep: finetune)",
        "other_objective": "objective val_accuracy, not val_loss",
        "other_direction": "direction maximize, not minimize",
        "no_trials": "no completed trials",
    }


def test_trials_best_first_and_only_those_of_similar_runs(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    study = recorded_study(outputs, "mixed", score, 6)
    # half of its runs were of another model (as when the earlier study searched `model`)
    for trial in study.trials[::2]:
        path = Path(trial.user_attrs["run_dir"]) / "config.yaml"
        config = OmegaConf.load(path)
        config.model = {"name": "llama_small", "hidden_size": 512, "num_layers": 8}
        OmegaConf.save(config, path)
    profile = sweep_profile(OmegaConf.create(TINY_FINETUNE), "val_loss", "minimize", SPACE)
    (mixed,) = find_earlier_studies(outputs, profile, ("", ""))
    expected = sorted(study.trials[1::2], key=lambda t: t.value)
    assert [t.value for t in mixed.trials] == [t.value for t in expected]
    assert mixed.reason.startswith("3 of 6 completed trials ran alike")


def test_a_searched_model_or_data_key_is_not_compared() -> None:
    config = OmegaConf.create(TINY_FINETUNE)
    assert sweep_profile(config, "val_loss", "minimize", SPACE).compared == (
        "step",
        "model",
        "data",
    )
    searched = {**SPACE, "model": None, "data.kind": None}
    assert sweep_profile(config, "val_loss", "minimize", searched).compared == ("step",)


def test_a_run_starting_from_another_run_has_that_runs_model(tmp_path: Path) -> None:
    pretrain = tmp_path / "pretrain_run"
    pretrain.mkdir()
    small = {"name": "llama_custom", "hidden_size": 512, "num_layers": 8}
    OmegaConf.save(OmegaConf.create({"model": small}), pretrain / "config.yaml")
    config = OmegaConf.create(like_tiny(**{"step.init_from": str(pretrain)}))
    assert run_profile(config) == RunProfile(
        "finetune", "hidden_size 512, num_layers 8", "arithmetic_sft"
    )


def test_a_study_that_did_not_record_its_objective_has_its_sweeps_objective(
    tmp_path: Path,
) -> None:
    import optuna

    from quark.hpo.similar_studies import study_objective

    sweep_dir = tmp_path / "finetune_optuna"
    sweep_dir.mkdir()
    study = optuna.create_study(
        study_name="finetune_optuna", storage=f"sqlite:///{sweep_dir / 'optuna.db'}"
    )
    assert study_objective(study, sweep_dir) is None
    # what the sweeper saved there: the sweep's config, interpolations unresolved
    multirun = {
        "step": {"name": "finetune"},
        "hydra": {"sweeper": {"study_name": "${step.name}_optuna", "objective": "val_accuracy"}},
    }
    OmegaConf.save(OmegaConf.create(multirun), sweep_dir / "multirun.yaml")
    assert study_objective(study, sweep_dir) == "val_accuracy"


def test_an_unreadable_study_is_left_out_and_the_others_still_count(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    recorded_study(outputs, "same", score, 2)
    broken = recorded_study(outputs, "broken_config", score, 2)
    (Path(broken.trials[0].user_attrs["run_dir"]) / "config.yaml").write_text("model: [")
    not_a_db = outputs / "junk" / "finetune" / "multirun" / "copied" / "optuna.db"
    not_a_db.parent.mkdir(parents=True)
    not_a_db.write_text("not SQLite")
    profile = sweep_profile(OmegaConf.create(TINY_FINETUNE), "val_loss", "minimize", SPACE)
    found = {s.name: s for s in find_earlier_studies(outputs, profile, ("", ""))}
    assert [name for name, s in found.items() if s.similar] == ["same"]
    assert found["broken_config"].reason.startswith("unreadable: ")
    assert found["?"].reason.startswith("unreadable: ")
