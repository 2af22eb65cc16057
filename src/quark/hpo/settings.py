"""The Optuna sweeper's settings (conf/hydra/sweeper/quark_optuna.yaml), checked, and the
storage they point at. Read by the sweeper and, for pruning, by a trial's own job."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError, one_line

SWEEPER_KEY = "hydra.sweeper"
STORAGE_FILE = "optuna.db"
DIRECTIONS = ("minimize", "maximize")
# The trial number a job runs as; set per job through hydra.job.env_set, so it stays out of the
# job's config and its config hash (a trial's run can be reused and resumed like any run).
TRIAL_VARIABLE = "QUARK_OPTUNA_TRIAL"
# warm_start.source that finds the earlier studies of similar runs itself (similar_studies.py)
AUTO_SOURCE = "auto"


@dataclass
class WarmStart:
    # "auto", an earlier study's optuna.db, its sweep directory, or a storage URL
    source: str | None
    study_name: str | None  # None: the only study stored there
    trials: int  # how many of its best completed trials to evaluate first
    # auto only: narrow each range to the span of the best `narrow_top` earlier trials,
    # widened on each side by `margin` times that span; with `narrow_choices`, a categorical
    # to the choices those trials took
    narrow: bool = True
    narrow_top: int = 5
    margin: float = 1.0
    narrow_choices: bool = False

    @property
    def auto(self) -> bool:
        return self.source == AUTO_SOURCE


@dataclass
class StudySettings:
    study_name: str
    storage: str  # a storage URL
    objective: str
    direction: str
    n_trials: int
    parallel_trials: int
    stop_after_failures: int
    sampler: Any  # a config with _target_, or None for Optuna's default
    pruner: Any  # a config with _target_, or None: no pruning
    pruning_metric: str
    pruning_metric_direction: str
    warm_start: WarmStart
    params: Any

    @property
    def pruning_sign(self) -> float:
        """The factor that turns the pruning metric into the study's direction: a pruner
        compares intermediate values the way the study compares objectives."""
        return 1.0 if self.pruning_metric_direction == self.direction else -1.0


def read_settings(sweeper: Any, sweep_dir: Path) -> StudySettings:
    """The sweeper's settings from its config node (or keyword arguments), checked.

    Raises:
        ConfigError: naming the `hydra.sweeper.*` key that is missing or out of range.
    """
    node = OmegaConf.create(dict(sweeper)) if not isinstance(sweeper, DictConfig) else sweeper
    values = {str(k): node.get(k) for k in node if not str(k).startswith("_")}
    name = _text(values, "study_name")
    for key in ("direction", "pruning_metric_direction"):
        if values.get(key) not in DIRECTIONS:
            raise ConfigError(
                f"{SWEEPER_KEY}.{key}",
                f"'{values.get(key)}' is not a direction",
                f"allowed: {', '.join(DIRECTIONS)}",
            )
    return StudySettings(
        study_name=name,
        storage=storage_url(values.get("storage"), sweep_dir),
        objective=_text(values, "objective"),
        direction=str(values["direction"]),
        n_trials=_count(values, "n_trials", minimum=1),
        parallel_trials=_count(values, "parallel_trials", minimum=1),
        stop_after_failures=_count(values, "stop_after_failures", minimum=1),
        sampler=values.get("sampler"),
        pruner=values.get("pruner"),
        pruning_metric=_text(values, "pruning_metric"),
        pruning_metric_direction=str(values["pruning_metric_direction"]),
        warm_start=_warm_start(values.get("warm_start") or {}),
        params=values.get("params") or {},
    )


def _warm_start(warm: Any) -> WarmStart:
    """warm_start.* checked; a key left out (settings given as arguments) takes its default."""
    default = WarmStart(None, None, 5)
    key = f"{SWEEPER_KEY}.warm_start"
    margin = warm.get("margin", default.margin)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
        raise ConfigError(
            f"{key}.margin",
            f"'{margin}' is out of range",
            "allowed: a number >= 0 (a fraction of the span of the best earlier trials)",
        )
    for flag in ("narrow", "narrow_choices"):
        if not isinstance(warm.get(flag, False), bool):
            raise ConfigError(
                f"{key}.{flag}", f"'{warm[flag]}' is not a boolean", "allowed: true, false"
            )
    return WarmStart(
        source=str(warm["source"]) if warm.get("source") else None,
        study_name=str(warm["study_name"]) if warm.get("study_name") else None,
        trials=_count(warm, "trials", 1, "warm_start.") if "trials" in warm else default.trials,
        narrow=warm.get("narrow", default.narrow),
        narrow_top=_count(warm, "narrow_top", 1, "warm_start.")
        if "narrow_top" in warm
        else default.narrow_top,
        margin=float(margin),
        narrow_choices=warm.get("narrow_choices", default.narrow_choices),
    )


def storage_url(storage: Any, sweep_dir: Path) -> str:
    """A storage URL: `storage` as given (a URL, or a path to an SQLite file), or, when null,
    optuna.db in the sweep directory, so rerunning the command finds the same study."""
    if not storage:
        return f"sqlite:///{(Path(sweep_dir) / STORAGE_FILE).resolve()}"
    text = str(storage)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def build_optuna_object(node: Any, key: str) -> Any:
    """The sampler or pruner a config describes (`_target_` and arguments), or None."""
    if node is None:
        return None
    import optuna  # the targets live in optuna.samplers and optuna.pruners
    from hydra.utils import instantiate

    target = node.get("_target_") if hasattr(node, "get") else None
    if not target:
        raise ConfigError(
            f"{SWEEPER_KEY}.{key}", "no _target_", f"e.g. {key}._target_=optuna.{key}s.…"
        )
    try:
        with warnings.catch_warnings():
            # a sampler Optuna calls experimental (BruteForceSampler, GPSampler) is the user's pick
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return instantiate(node)
    except Exception as exc:
        cause: BaseException = exc
        while cause.__cause__ is not None:  # Hydra wraps the error that says what is wrong
            cause = cause.__cause__
        raise ConfigError(
            f"{SWEEPER_KEY}.{key}",
            f"cannot build {target}: {one_line(str(cause)) or type(cause).__name__}",
            f"give a class of optuna.{key}s and its arguments",
        ) from None


def _text(values: Any, key: str) -> str:
    value = values.get(key)
    if value is None or str(value).strip() == "":
        raise ConfigError(f"{SWEEPER_KEY}.{key}", "not set", "give a name")
    return str(value)


def _count(values: Any, key: str, minimum: int, prefix: str = "") -> int:
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{SWEEPER_KEY}.{prefix}{key}",
            f"'{value}' is out of range",
            f"allowed: an integer >= {minimum}",
        )
    return value
