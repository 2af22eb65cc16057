"""The earlier studies of runs like this sweep's, for `warm_start.source: auto`.

Earlier studies are the optuna.db files of sweeps under `paths.output_dir`, every experiment:
`<output_dir>/<experiment>/<step>/multirun/<study>/optuna.db`. A study is similar when it has
this sweep's objective and direction, and some of its completed trials ran the same step on a
model of the same size and the same kind of data; only those trials are used. What a trial ran
is read from its run directory (the trial's `run_dir`): config.yaml, else .hydra/config.yaml.
A model or data key that this sweep searches is not compared.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from quark.core.errors import one_line
from quark.hpo.settings import STORAGE_FILE, storage_url
from quark.hpo.study import OBJECTIVE_ATTR, RUN_DIR_ATTR

if TYPE_CHECKING:
    import optuna

STUDY_FILES = f"*/*/multirun/*/{STORAGE_FILE}"
RUN_CONFIGS = ("config.yaml", ".hydra/config.yaml")
ATTRIBUTES = ("step", "model", "data")


@dataclass(frozen=True)
class RunProfile:
    """What kind of run a config describes, as far as hyperparameters carry over."""

    step: str | None
    model: str | None  # its size: "hidden_size H, num_layers L", else its name or path
    data: str | None  # data.kind, else data.name

    def get(self, attribute: str) -> str | None:
        value: str | None = getattr(self, attribute)
        return value


@dataclass(frozen=True)
class SweepProfile:
    """What an earlier study must share with this sweep to warm-start it."""

    run: RunProfile
    objective: str
    direction: str
    compared: tuple[str, ...]  # the run attributes compared: not searched here, and known

    def describe(self) -> str:
        shown = [f"{a} {self.run.get(a)}" for a in self.compared]
        return f"objective {self.objective} ({self.direction}), " + ", ".join(shown)


@dataclass
class EarlierTrial:
    params: dict[str, Any]
    value: float
    source: str  # <storage URL>#<study>:<trial number>


@dataclass
class EarlierStudy:
    name: str
    storage: str
    similar: bool
    reason: str
    trials: list[EarlierTrial] = field(default_factory=list)  # runs like this sweep's, best first


def run_profile(config: Any) -> RunProfile:
    """The profile of a run's config: its step, model size and data kind. A step that starts
    from another run (`step.init_from`) or reads one's data (`step.data_dir`) takes the model
    or data from that run's config.yaml (a Hugging Face model: its config.json)."""
    model = _select(config, "model")
    data = _select(config, "data")
    init_from = _select(config, "step.init_from")
    if isinstance(init_from, str):
        model = _run_config_node(Path(init_from), "model", hf_config=True) or model
    data_dir = _select(config, "step.data_dir")
    if isinstance(data_dir, str):
        data = _run_config_node(Path(data_dir), "data") or data
    step = _select(config, "step.name")
    return RunProfile(
        step=str(step) if step is not None else None,
        model=model_size(model),
        data=_first_text(data, ("kind", "name")),
    )


def model_size(model: Any) -> str | None:
    """A model config's size: its hidden size and layer count when it states them (any name:
    llama_tiny and a llama_custom of its shape are the same size), else its name or path."""
    if not isinstance(model, dict):
        return None
    hidden = model.get("hidden_size")
    layers = model.get("num_layers", model.get("num_hidden_layers"))
    if isinstance(hidden, int) and isinstance(layers, int):
        return f"hidden_size {hidden}, num_layers {layers}"
    return _first_text(model, ("name_or_path", "name"))


def sweep_profile(
    config: Any, objective: str, direction: str, searched: Iterable[str]
) -> SweepProfile:
    """This sweep's profile: its base config's run profile; a model or data key it searches
    (`model`, `model.hidden_size`, `data`...) leaves that attribute out of the comparison."""
    run = run_profile(config)
    searched_roots = {key.split(".")[0] for key in searched}
    compared = tuple(
        a
        for a in ATTRIBUTES
        if run.get(a) is not None and not (a in ("model", "data") and a in searched_roots)
    )
    return SweepProfile(run, objective, direction, compared)


def find_earlier_studies(
    output_dir: Path, profile: SweepProfile, exclude: tuple[str, str]
) -> list[EarlierStudy]:
    """Every study stored under `output_dir` but `exclude` (storage URL, study name), each
    with whether it is similar to this sweep's and why."""
    import optuna

    found = []
    for path in sorted(Path(output_dir).glob(STUDY_FILES)):
        url = storage_url(path, path.parent)
        try:
            names = optuna.get_all_study_names(storage=url)
        except Exception as exc:  # an unreadable file is no reason to stop this sweep
            found.append(EarlierStudy("?", url, False, f"unreadable: {one_line(str(exc))}"))
            continue
        for name in names:
            if (url, name) == exclude:
                continue
            try:
                study = optuna.load_study(study_name=name, storage=url)
                found.append(_judge(study, url, path.parent, profile))
            except Exception as exc:  # a broken run config or report, likewise
                found.append(EarlierStudy(name, url, False, f"unreadable: {one_line(str(exc))}"))
    return found


def _judge(study: optuna.Study, url: str, sweep_dir: Path, profile: SweepProfile) -> EarlierStudy:
    from optuna.trial import TrialState

    def skipped(reason: str) -> EarlierStudy:
        return EarlierStudy(study.study_name, url, False, reason)

    if len(study.directions) != 1:
        return skipped("a multi-objective study")
    direction = study.direction.name.lower()
    objective = study_objective(study, sweep_dir)
    if objective != profile.objective:
        return skipped(f"objective {objective}, not {profile.objective}")
    if direction != profile.direction:
        return skipped(f"direction {direction}, not {profile.direction}")
    completed = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not completed:
        return skipped("no completed trials")
    alike, differences = [], Counter[str]()
    for trial in completed:
        difference = _difference(trial, sweep_dir, profile)
        if difference:
            differences[difference] += 1
        else:
            assert trial.value is not None  # completed with a finite value, as filtered above
            source = f"{url}#{study.study_name}:{trial.number}"
            alike.append(EarlierTrial(dict(trial.params), trial.value, source))
    if not alike:
        return skipped(f"its runs differ: {differences.most_common(1)[0][0]}")
    alike.sort(key=lambda t: t.value, reverse=direction == "maximize")
    reason = f"{len(alike)} of {len(completed)} completed trials ran alike"
    return EarlierStudy(study.study_name, url, True, reason, alike)


def _difference(trial: optuna.trial.FrozenTrial, sweep_dir: Path, profile: SweepProfile) -> str:
    """How the trial's run differs from this sweep's runs; '' when it does not."""
    run_dir = Path(trial.user_attrs.get(RUN_DIR_ATTR) or sweep_dir / str(trial.number))
    config = next((run_dir / n for n in RUN_CONFIGS if (run_dir / n).is_file()), None)
    if config is None:
        return f"no run config (config.yaml) in {run_dir}"
    ran = run_profile(OmegaConf.load(config))
    for attribute in profile.compared:
        theirs, ours = ran.get(attribute), profile.run.get(attribute)
        if theirs != ours:
            return f"{attribute} {theirs} (this sweep: {ours})"
    return ""


def study_objective(study: optuna.Study, sweep_dir: Path) -> str | None:
    """The metric a study optimised: recorded in the study (since warm_start.source: auto
    exists), else in its sweep directory's hpo_report.json or multirun.yaml."""
    recorded = study.user_attrs.get(OBJECTIVE_ATTR)
    if recorded:
        return str(recorded)
    report = sweep_dir / "hpo_report.json"
    if report.is_file():
        data = json.loads(report.read_text())
        if data.get("study_name") == study.study_name and data.get("objective"):
            return str(data["objective"])
    multirun = sweep_dir / "multirun.yaml"
    if multirun.is_file():
        config = OmegaConf.load(multirun)
        name = _select(config, "hydra.sweeper.study_name")
        objective = _select(config, "hydra.sweeper.objective")
        if name in (study.study_name, None) and objective:
            return str(objective)
    return None


def _select(config: Any, key: str) -> Any:
    """The value at `key` as plain Python (a node: a dict), None when absent or unresolvable."""
    value = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
    if isinstance(value, DictConfig):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except Exception:  # an interpolation only Hydra's own run can resolve
            return OmegaConf.to_container(value, resolve=False)
    return value


def _run_config_node(directory: Path, key: str, hf_config: bool = False) -> Any:
    config = next((directory / n for n in RUN_CONFIGS if (directory / n).is_file()), None)
    if config is not None:
        return _select(OmegaConf.load(config), key)
    hf = directory / "config.json"
    if hf_config and hf.is_file():
        return json.loads(hf.read_text())
    return None


def _first_text(node: Any, keys: tuple[str, ...]) -> str | None:
    if not isinstance(node, dict):
        return None
    return next((str(node[k]) for k in keys if node.get(k) is not None), None)
