"""The study behind a sweep: opened from persistent storage (a rerun continues it), trials an
interrupted sweep left running given another go, warm start from an earlier study, and what a
finished job means for its trial."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from quark.core.errors import ConfigError
from quark.hpo.settings import (
    STORAGE_FILE,
    SWEEPER_KEY,
    StudySettings,
    build_optuna_object,
    storage_url,
)

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

log = logging.getLogger("quark.hpo")
# user attributes of a trial
WORKER_ATTR = "worker"  # host and pid of the sweep that asked it: a dead pid means interrupted
RUN_DIR_ATTR = "run_dir"  # the run directory that computed it (a reused job points there)
RETRY_ATTR = "retry_of"  # the interrupted trial this one evaluates again
WARM_START_ATTR = "warm_start_from"
ERROR_ATTR = "error"
# user attributes of a study
OBJECTIVE_ATTR = "objective"  # the metric it optimises, for later studies looking for similar ones
# Samplers that call study.stop() when their grid is exhausted, which raises outside optimize()
STUDY_STOPPING_SAMPLERS = ("GridSampler", "BruteForceSampler")


def open_study(settings: StudySettings) -> optuna.Study:
    """The study named in `settings`, created on first use and loaded on every rerun."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Quark logs each trial itself
    sampler = build_optuna_object(settings.sampler, "sampler")
    if type(sampler).__name__ in STUDY_STOPPING_SAMPLERS:
        raise ConfigError(
            f"{SWEEPER_KEY}.sampler",
            f"{type(sampler).__name__} stops the study from inside Optuna's own optimize loop, "
            "which a sweep does not use",
            "use TPESampler, RandomSampler, GPSampler, CmaEsSampler or QMCSampler; "
            "for a grid, a grid sweep (key=a,b,c without hparams_search)",
        )
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=settings.storage,
        direction=settings.direction,  # type: ignore[arg-type]  # checked: minimize | maximize
        sampler=sampler,
        pruner=build_optuna_object(settings.pruner, "pruner") or optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    stored = study.direction.name.lower()
    if stored != settings.direction:
        raise ConfigError(
            f"{SWEEPER_KEY}.direction",
            f"the study '{settings.study_name}' in {settings.storage} was created to {stored}",
            f"use direction={stored}, or a new hydra.sweeper.study_name",
        )
    if OBJECTIVE_ATTR not in study.user_attrs:
        study.set_user_attr(OBJECTIVE_ATTR, settings.objective)
    existing = len(study.get_trials(deepcopy=False))
    seed = settings.sampler.get("seed") if settings.sampler is not None else None
    if existing and seed is not None:
        # A rerun starts the sampler's random stream again: seeded as the first run was, it would
        # draw the first run's trials once more. Offset by the trials so far, it stays repeatable.
        reseeded = OmegaConf.merge(settings.sampler, {"seed": int(seed) + existing})
        study.sampler = build_optuna_object(reseeded, "sampler")
    return study


def check_space_matches(
    study: optuna.Study, space: dict[str, BaseDistribution], name: Callable[[str], str]
) -> None:
    """Raise when a parameter's type, log flag or choices differ from those the study already
    recorded for it: Optuna refuses them, and would only say so after starting a trial."""
    from optuna.distributions import check_distribution_compatibility

    for trial in study.get_trials(deepcopy=False):
        for key, recorded in trial.distributions.items():
            if key not in space:
                continue
            try:
                check_distribution_compatibility(recorded, space[key])
            except ValueError:
                raise ConfigError(
                    name(key),
                    f"now {space[key]}, but the study '{study.study_name}' recorded {recorded}",
                    "keep a parameter's type, log flag and choices within a study, "
                    "or start another with hydra.sweeper.study_name",
                ) from None


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards n_trials: those that told the study something (completed or
    pruned), and those running. A failed trial does not count: after fixing what made trials
    fail, rerunning the command still runs the trials the study lacks."""
    counted = ("COMPLETE", "PRUNED", "RUNNING")
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in counted)


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left running by a sweep of this host that no longer exists as failed, and
    enqueue their parameters again: the new trial's job resumes the interrupted run from its
    checkpoint (a sweep job resumes a run of the same config). Returns their numbers."""
    from optuna.trial import TrialState

    retried = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _worker_gone(trial.user_attrs.get(WORKER_ATTR)):
            continue  # a live sweep (maybe another worker) owns it
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})
        retried.append(trial.number)
    if retried:
        log.info("trials %s were interrupted; evaluating them again", retried)
    return retried


def _worker_gone(worker: Any) -> bool:
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False  # another machine's sweep: it cannot be checked from here
    try:
        os.kill(int(worker["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, KeyError):
        return False
    return False


def this_worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def resolve_warm_start(settings: StudySettings) -> tuple[str, str] | None:
    """The storage URL and study name of an explicit warm start, checked; None when none."""
    warm = settings.warm_start
    if warm.source is None or warm.auto:  # auto: auto_warm_start.py finds its studies
        return None
    key = f"{SWEEPER_KEY}.warm_start.source"
    source = warm.source
    if "://" not in source:
        path = Path(source).expanduser()
        path = path / STORAGE_FILE if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(
                key,
                f"{path} not found",
                "give an earlier study's optuna.db, its sweep directory or a storage URL",
            )
        source = str(path)
    url = storage_url(source, Path("."))
    import optuna

    names = optuna.get_all_study_names(storage=url)
    name = warm.study_name
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        raise ConfigError(
            f"{SWEEPER_KEY}.warm_start.study_name",
            f"'{name}' is not a study in {url}" if name else f"{url} holds {len(names)} studies",
            f"studies there: {', '.join(names) or 'none'}",
        )
    return url, str(name)


def warm_start(
    study: optuna.Study, source: tuple[str, str], trials: int, space: dict[str, BaseDistribution]
) -> int:
    """Enqueue the best `trials` completed trials of the study `source` names (their values of
    parameters in this space), once per source. They are evaluated again here, under this
    study's fixed settings; a job whose config matches a completed run is reused, not rerun.
    Returns how many were enqueued."""
    import optuna
    from optuna.trial import TrialState

    from quark.hpo.search_space import in_space

    url, name = source
    started_from = list(study.user_attrs.get(WARM_START_ATTR, []))
    if f"{url}#{name}" in started_from:
        return 0
    earlier = optuna.load_study(study_name=name, storage=url)
    done = earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = earlier.direction.name == "MAXIMIZE"
    best = sorted(done, key=lambda t: t.value if t.value is not None else 0.0, reverse=maximize)
    enqueued = 0
    for trial in best[:trials]:
        params = {k: v for k, v in trial.params.items() if k in space and in_space(space[k], v)}
        if params:
            attrs = {WARM_START_ATTR: f"{url}#{name}:{trial.number}"}
            study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
            enqueued += 1
    study.set_user_attr(WARM_START_ATTR, [*started_from, f"{url}#{name}"])
    log.info("warm start: %d trials of study '%s' (%s) enqueued", enqueued, name, url)
    return enqueued


@dataclass
class JobOutcome:
    state: str  # COMPLETE | PRUNED | FAIL, as Optuna names trial states
    value: float | None
    run_dir: Path
    message: str = ""


def job_outcome(job_dir: Path, objective: str) -> JobOutcome:
    """What a trial's job ended as, read from its manifest: the objective of a completed or
    reused run, a pruned run, or a failure and why.

    Raises:
        ConfigError: a completed job did not record the objective (every trial would miss it).
    """
    path = job_dir / "manifest.json"
    if not path.is_file():
        return JobOutcome("FAIL", None, job_dir, "the job left no manifest")
    manifest = json.loads(path.read_text())
    status = manifest.get("status")
    run_dir = Path(manifest.get("reused_run") or job_dir)
    error = manifest.get("error") or {}
    if status in ("completed", "reused"):
        metrics = manifest.get("metrics", {})
        if objective not in metrics:
            raise ConfigError(
                f"{SWEEPER_KEY}.objective",
                f"'{objective}' is not a metric of {manifest.get('step')} ({job_dir})",
                f"metrics it records: {', '.join(sorted(metrics)) or 'none'}",
            )
        return JobOutcome("COMPLETE", float(metrics[objective]), run_dir)
    if status == "pruned" or error.get("type") == "TrialPruned":
        return JobOutcome("PRUNED", None, run_dir, str(error.get("message", "")))
    return JobOutcome(
        "FAIL", None, run_dir, str(error.get("message") or f"the job ended '{status}'")
    )
