"""Search configs written on the fly (a user's own conf/hparams_search/<name>.yaml, found
through hydra.searchpath), and studies read back from their storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

# step=plan trains nothing: a trial takes a fraction of a second, its objective is a number
# the plan computes from the model and the assumed MFU
PLAN_SPACE = {
    "step.mfu": {"type": "float", "low": 0.2, "high": 0.6},
    "model": {"type": "categorical", "choices": ["llama_tiny", "llama_small"]},
}
SWEEP_DIR = (
    "${paths.output_dir}/${experiment_name}/${step.name}/multirun/${hydra.sweeper.study_name}"
)


@pytest.fixture
def user_conf(tmp_path: Path) -> Path:
    """A directory for the user's own config groups."""
    path = tmp_path / "user_conf"
    (path / "hparams_search").mkdir(parents=True)
    return path


def search_config(
    conf_dir: Path, name: str, params: dict[str, Any], step: str = "plan", **sweeper: Any
) -> list[str]:
    """Write `conf_dir`/hparams_search/`name`.yaml, a study of `step` over `params` (plan
    trials are scored by train_hours); return the arguments of `launch.py -m` that choose it."""
    settings = {"study_name": name, "n_trials": 4, "params": params, **sweeper}
    if step == "plan":
        settings.setdefault("objective", "train_hours")
    body = {
        "defaults": [{"override /step": step}, {"override /hydra/sweeper": "quark_optuna"}],
        "hydra": {"sweep": {"dir": SWEEP_DIR}, "sweeper": settings},
    }
    text = "# @package _global_\n" + OmegaConf.to_yaml(OmegaConf.create(body))
    (conf_dir / "hparams_search" / f"{name}.yaml").write_text(text)
    return ["-m", f"hydra.searchpath=[file://{conf_dir}]", f"hparams_search={name}"]


def sweep_dir(outputs: Path, study: str, step: str = "plan") -> Path:
    return outputs / "demo" / step / "multirun" / study


def load_study(outputs: Path, study: str, step: str = "plan") -> Any:
    import optuna

    storage = f"sqlite:///{sweep_dir(outputs, study, step) / 'optuna.db'}"
    return optuna.load_study(study_name=study, storage=storage)


# The part of a run's config.yaml that says what kind of run it was (similar_studies.py):
# LoRA fine-tuning of the tiny model on the arithmetic pairs
TINY_FINETUNE: dict[str, Any] = {
    "step": {"name": "finetune", "optim": {"lr": 2.0e-3, "warmup_steps": 20}},
    "model": {"name": "llama_tiny", "hidden_size": 256, "num_layers": 6},
    "data": {"name": "arithmetic_sft", "kind": "arithmetic_sft"},
    "peft": {"name": "lora", "rank": 8},
}
FINETUNE_SPACE = {
    "step.optim.lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-1, "log": True},
    "step.optim.warmup_steps": {"type": "int", "low": 0, "high": 40, "step": 10},
    "peft.rank": {"type": "categorical", "choices": [4, 8, 16, 32]},
}


def study_settings(
    sweep_dir: Path,
    name: str,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    objective: str = "val_loss",
    direction: str = "minimize",
    **warm_start: Any,
) -> Any:
    """The settings of conf/hydra/sweeper/quark_optuna.yaml for a study in `sweep_dir`,
    as the sweeper reads them (its sweep directory made, as the sweeper makes it)."""
    from quark.hpo.settings import read_settings

    sweep_dir.mkdir(parents=True, exist_ok=True)
    node = {
        "study_name": name,
        "storage": None,
        "objective": objective,
        "direction": direction,
        "n_trials": 20,
        "parallel_trials": 1,
        "stop_after_failures": 3,
        "sampler": {"_target_": "optuna.samplers.TPESampler", "seed": seed, "n_startup_trials": 5},
        "pruner": None,
        "pruning_metric": "val/loss",
        "pruning_metric_direction": "minimize",
        "warm_start": {"source": None, "study_name": None, "trials": 5, **warm_start},
        "params": params if params is not None else FINETUNE_SPACE,
    }
    return read_settings(node, sweep_dir)


def recorded_study(
    outputs: Path,
    name: str,
    score: Any,
    trials: int,
    run: dict[str, Any] | None = None,
    experiment: str = "last_week",
    seed: int = 100,
    fixed: list[dict[str, Any]] | None = None,
    **settings: Any,
) -> Any:
    """An earlier study as the sweeper leaves it in `outputs`/`experiment`/<step>/multirun/
    `name`/: `trials` trials scored by `score(params)` (the `fixed` parameter sets first), each
    with a run directory whose config.yaml is `run` (TINY_FINETUNE) with the trial's values."""
    from quark.hpo.search_space import parse_search_space
    from quark.hpo.study import RUN_DIR_ATTR, open_study

    run = run or TINY_FINETUNE
    directory = outputs / experiment / run["step"]["name"] / "multirun" / name
    study_config = study_settings(directory, name, seed=seed, **settings)
    study = open_study(study_config)
    space = parse_search_space(study_config.params)
    for params in fixed or []:
        study.enqueue_trial(params)
    for _ in range(trials):
        trial = study.ask(space)
        run_dir = directory / str(trial.number)
        config = OmegaConf.create(run)
        for key, value in trial.params.items():
            OmegaConf.update(config, key, value, force_add=True)
        run_dir.mkdir()
        OmegaConf.save(config, run_dir / "config.yaml")
        trial.set_user_attr(RUN_DIR_ATTR, str(run_dir))
        study.tell(trial, score(trial.params))
    return study
