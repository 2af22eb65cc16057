"""A Hydra sweeper that runs an Optuna study: each trial is one Quark job of the sweep.

    python launch.py -m hparams_search=pretrain_optuna
    python launch.py -m hparams_search=pretrain_optuna hydra.sweeper.n_trials=40   # extend it

Before any trial runs, the search space is parsed, every key is looked up in the composed config
and the trial configs at the ends of each range are validated against Quark's schemas. Then,
batch by batch: ask the study for trials, launch them with Hydra's launcher (job directory
`<sweep dir>/<trial number>`, the trial number passed in the environment), read each job's
manifest and tell the study its objective, PRUNED or FAIL. A failed job never stops the study.
At the end: report.py's summary. Hydra finds the class through
hydra_plugins.quark_optuna_sweeper, since it instantiates sweepers only from that package.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError
from quark.hpo.search_space import (
    PARAMS_KEY,
    command_line_space,
    override_value,
    parse_search_space,
)
from quark.hpo.settings import TRIAL_VARIABLE, StudySettings, read_settings

if TYPE_CHECKING:
    import optuna
    from hydra.plugins.launcher import Launcher
    from hydra.types import HydraContext, TaskFunction
    from optuna.distributions import BaseDistribution

log = logging.getLogger("quark.hpo")
_ABSENT = object()


class OptunaStudySweeper(Sweeper):
    """Runs `hydra.sweeper.n_trials` trials of an Optuna study as Quark jobs; see the module."""

    def __init__(self, **settings: Any) -> None:
        self.settings_node = settings
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        assert self.config is not None and self.hydra_context is not None and self.launcher
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        settings = read_settings(self.settings_node, sweep_dir)
        space = parse_search_space(settings.params)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed, swept = command_line_space(arguments, parser.parse_overrides)
        space = merge_spaces(space, swept, fixed, parser)
        check_keys_exist(space, self.config, from_command_line=set(swept))
        self.check_trial_configs(space, fixed, from_command_line=set(swept))

        from quark.hpo.auto_warm_start import auto_warm_start, study_space
        from quark.hpo.study import (
            check_space_matches,
            open_study,
            resolve_warm_start,
            retry_interrupted,
            warm_start,
        )

        warm_source = resolve_warm_start(settings)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = open_study(settings)
        check_sweep_dir_matches(study, sweep_dir, settings)
        space = study_space(study, space)  # as narrowed by an automatic warm start, if it was
        if settings.warm_start.auto:
            space = auto_warm_start(study, settings, space, self.config, sweep_dir)
        check_space_matches(study, space, lambda key: searched_key(key, set(swept)))
        retry_interrupted(study)
        if warm_source is not None:
            warm_start(study, warm_source, settings.warm_start.trials, space)
        log.info("study '%s' in %s", settings.study_name, settings.storage)
        returns = self.run_trials(study, space, fixed, settings, sweep_dir)

        from quark.hpo.report import write_report

        write_report(study, settings, sweep_dir)
        return returns

    def run_trials(
        self,
        study: optuna.Study,
        space: dict[str, BaseDistribution],
        fixed: list[str],
        settings: StudySettings,
        sweep_dir: Path,
    ) -> list[Any]:
        """Ask, launch and tell, batch by batch, until the study holds n_trials trials."""
        from quark.hpo.study import RUN_DIR_ATTR, WORKER_ATTR, counted_trials, this_worker

        assert self.launcher is not None
        returns, failed_in_a_row = [], 0
        while (missing := settings.n_trials - counted_trials(study)) > 0:
            if failed_in_a_row >= settings.stop_after_failures:
                log.error(
                    "%d trials failed in a row; the sweep stops (hydra.sweeper.stop_after_failures)",
                    failed_in_a_row,
                )
                break
            batch = [study.ask(space) for _ in range(min(settings.parallel_trials, missing))]
            jobs = []
            for trial in batch:
                trial.set_user_attr(WORKER_ATTR, this_worker())
                trial.set_user_attr(RUN_DIR_ATTR, str((sweep_dir / str(trial.number)).resolve()))
                params = [f"{key}={override_value(value)}" for key, value in trial.params.items()]
                jobs.append(
                    [
                        *fixed,
                        *params,
                        f"hydra.sweep.subdir={trial.number}",
                        f"++hydra.job.env_set.{TRIAL_VARIABLE}={trial.number}",
                    ]
                )
            results = self.launcher.launch(jobs, initial_job_idx=batch[0].number)
            for trial in batch:
                state = tell(study, trial, sweep_dir / str(trial.number), settings.objective)
                failed_in_a_row = failed_in_a_row + 1 if state == "FAIL" else 0
            returns.append(results)
        return returns

    def check_trial_configs(
        self, space: dict[str, BaseDistribution], fixed: list[str], from_command_line: set[str]
    ) -> None:
        """Compose and validate the trial configs at the ends of every range (and every
        choice), so a value the schemas refuse stops the study before its first trial."""
        from quark.core.schemas import validate

        assert self.config is not None and self.hydra_context is not None
        for values in range_ends(space):
            overrides = [*fixed, *(f"{k}={override_value(v)}" for k, v in values.items())]
            composed = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            try:
                validate(composed)
            except ConfigError as exc:
                if exc.key in values:
                    raise ConfigError(
                        searched_key(exc.key, from_command_line),
                        f"{exc.problem} (a value of the search space)",
                        exc.allowed,
                    ) from None
                raise


def tell(study: optuna.Study, trial: optuna.trial.Trial, job_dir: Path, objective: str) -> str:
    """Tell the study how the trial's job ended (its manifest says), log one line, and return
    the trial's state: COMPLETE, PRUNED or FAIL."""
    from optuna.trial import TrialState

    from quark.hpo.study import ERROR_ATTR, RUN_DIR_ATTR, job_outcome

    try:
        outcome = job_outcome(job_dir, objective)
    except ConfigError:
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr(RUN_DIR_ATTR, str(outcome.run_dir))
    if outcome.message:
        trial.set_user_attr(ERROR_ATTR, outcome.message)
    if outcome.state == "COMPLETE":
        told = study.tell(trial, outcome.value)  # a NaN value makes it FAIL
        log.info("trial %d: %s=%.6g %s", trial.number, objective, outcome.value, trial.params)
    elif outcome.state == "PRUNED":
        told = study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d pruned: %s", trial.number, outcome.message)
    else:
        told = study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, outcome.message)
    return told.state.name


def merge_spaces(
    space: dict[str, BaseDistribution],
    swept: dict[str, BaseDistribution],
    fixed: list[str],
    parser: Any,
) -> dict[str, BaseDistribution]:
    """The YAML space plus the command line's sweeps; a key both fixed and searched is an error."""
    merged = {**space, **swept}
    for override in parser.parse_overrides(fixed):
        key = override.get_key_element().lstrip("+~")
        if key in merged:
            raise ConfigError(
                key,
                f"set on the command line and searched in {PARAMS_KEY}",
                "search it or fix it, not both",
            )
    if not merged:
        raise ConfigError(PARAMS_KEY, "empty: nothing to search", "give at least one parameter")
    return merged


def searched_key(key: str, from_command_line: set[str]) -> str:
    """How an error names a searched key: as written on the command line, or in the YAML."""
    return key if key in from_command_line else f"{PARAMS_KEY}.{key}"


def check_keys_exist(
    space: dict[str, BaseDistribution], config: DictConfig, from_command_line: set[str]
) -> None:
    """Every searched key names a key (or a config group) of the composed config."""
    for key in space:
        if (
            OmegaConf.select(config, key, default=_ABSENT, throw_on_resolution_failure=False)
            is not _ABSENT
        ):
            continue
        parent = key.rpartition(".")[0]
        while (
            parent
            and OmegaConf.select(config, parent, default=None, throw_on_resolution_failure=False)
            is None
        ):
            parent = parent.rpartition(".")[0]
        node = OmegaConf.select(config, parent) if parent else config
        keys = [str(k) for k in node if str(k) != "hydra"] if isinstance(node, DictConfig) else []
        raise ConfigError(
            searched_key(key, from_command_line),
            "no such key in the config",
            f"keys in {parent or 'the top level'}: {', '.join(keys)}",
        )


def check_sweep_dir_matches(study: optuna.Study, sweep_dir: Path, settings: StudySettings) -> None:
    """A new study must not start in a sweep directory holding another study's trial runs:
    its trial 0 would find trial 0's run directory taken."""
    if study.get_trials(deepcopy=False):
        return
    taken = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if taken:
        raise ConfigError(
            "hydra.sweep.dir",
            f"{sweep_dir} holds trial runs {', '.join(taken[:5])} of a study that is not in {settings.storage}",
            "choose another hydra.sweeper.study_name, or move that directory away",
        )


def range_ends(space: dict[str, BaseDistribution]) -> list[dict[str, Any]]:
    """Parameter sets covering both ends of every range and every categorical choice."""
    from optuna.distributions import CategoricalDistribution

    def end(distribution: BaseDistribution, last: bool) -> Any:
        if isinstance(distribution, CategoricalDistribution):
            return distribution.choices[-1 if last else 0]
        return distribution.high if last else distribution.low  # type: ignore[attr-defined]

    ends = [{k: end(d, last) for k, d in space.items()} for last in (False, True)]
    for key, distribution in space.items():
        if isinstance(distribution, CategoricalDistribution):
            for choice in distribution.choices[1:-1]:
                ends.append({**ends[0], key: choice})
    return ends
