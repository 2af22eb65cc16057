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
