"""Pruning inside a trial's job: after each validation, report the monitored metric (val/loss)
to the trial through the study's storage and stop the job when the study's pruner says so.

The sweeper runs the job, so the trial lives in the storage, not in this process: the job finds
it by the number in QUARK_OPTUNA_TRIAL and by the sweeper's settings in its own Hydra config.
The job ends with optuna.TrialPruned; the sweeper records it as pruned. In a distributed job
rank 0 decides and every rank stops together.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import lightning as L

from quark.core.errors import ConfigError, RunStopped
from quark.hpo.settings import TRIAL_VARIABLE, StudySettings, build_optuna_object, read_settings

log = logging.getLogger("quark.hpo")


def trial_callbacks() -> list[L.Callback]:
    """[the pruning callback] when this job is a trial of a Quark Optuna study, else []."""
    number = os.environ.get(TRIAL_VARIABLE, "")  # set by quark.hpo.sweeper for each trial
    return [TrialPruning(int(number))] if number.isdigit() else []


class TrialReport:
    """Rank 0's link to its trial: report a value, ask the pruner."""

    def __init__(self, settings: StudySettings, number: int) -> None:
        import optuna  # here, not at the top: a pretrain run that is no trial never needs it

        self.settings = settings
        self.number = number
        self.storage = optuna.storages.RDBStorage(settings.storage)
        self.study = optuna.load_study(
            study_name=settings.study_name,
            storage=self.storage,
            sampler=optuna.samplers.RandomSampler(),  # never samples here
            pruner=build_optuna_object(settings.pruner, "pruner") or optuna.pruners.NopPruner(),
        )
        study_id = self.storage.get_study_id_from_name(settings.study_name)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    @classmethod
    def from_hydra(cls, number: int) -> TrialReport:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        return cls(read_settings(hydra_cfg.sweeper, Path(str(hydra_cfg.sweep.dir))), number)

    def should_prune(self, step: int, value: float) -> bool:
        """Record `value` at `step` (in the study's direction) and ask the pruner."""
        self.storage.set_trial_intermediate_value(
            self.trial_id, step, self.settings.pruning_sign * value
        )
        return bool(self.study.pruner.prune(self.study, self.storage.get_trial(self.trial_id)))


@functools.cache
def pruned_trial_type() -> type[Exception]:
    """optuna.TrialPruned that is also Quark's RunStopped, so the launch records the job as
    `pruned` rather than failed (optuna is imported only when a trial is pruned)."""
    import optuna

    return type("PrunedTrial", (optuna.TrialPruned, RunStopped), {})


class TrialPruning(L.Callback):
    """After each validation during fit: report, ask the pruner, stop with TrialPruned."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.trial: TrialReport | None = None  # opened on rank 0 at the first validation

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # the final validate() after fit is the objective, not a pruning point
        prune, message = False, ""
        if trainer.is_global_zero:
            if self.trial is None:
                self.trial = TrialReport.from_hydra(self.number)
            metric = self.trial.settings.pruning_metric
            if metric not in trainer.callback_metrics:
                raise ConfigError(
                    "hydra.sweeper.pruning_metric",
                    f"'{metric}' is not logged at validation",
                    f"logged: {', '.join(sorted(trainer.callback_metrics))}",
                )
            value = float(trainer.callback_metrics[metric])
            step = int(trainer.global_step)
            # at the last step the trial is as good as finished: its objective decides
            prune = self.trial.should_prune(step, value) and step < int(trainer.max_steps)
            message = f"trial {self.number} pruned at step {step}: {metric} {value:.4g}"
        if trainer.strategy.broadcast(prune, src=0):
            if message:
                log.info(message)
            raise pruned_trial_type()(message or f"trial {self.number} pruned")
