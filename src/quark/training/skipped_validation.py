"""The validation a resumed training run owes: the one of the step its checkpoint was saved at."""

from __future__ import annotations

from typing import Any

import lightning as L


class ValidateSkippedStep(L.Callback):
    """Runs the validation of the step a run resumes at, when the checkpoint was saved before it.

    Lightning saves a step's checkpoint in on_train_batch_end, before that step's validation,
    and a run resumed from it skips that validation: a run killed (or requeued) right after a
    checkpoint on a validation step would lack that row of logs/metrics.csv. The checkpoint
    records the last step validated; on resume, a validation step not yet validated is validated
    first, logged at the step it belongs to, exactly as the uninterrupted run logs it.
    """

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self.validated_step = -1
        # (step, val/* metrics) of the last validation this process ran during fit, so the
        # fit's final validation is not run twice on the same weights (not checkpointed)
        self.measured: tuple[int, dict[str, float]] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.validated_step = trainer.global_step
            metrics = trainer.callback_metrics
            self.measured = (
                trainer.global_step,
                {k: float(v) for k, v in metrics.items() if k.startswith("val/")},
            )

    def state_dict(self) -> dict[str, Any]:
        return {"validated_step": self.validated_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validated_step = int(state_dict.get("validated_step", -1))

    def owed(self, trainer: L.Trainer) -> bool:
        """Whether `trainer`, resumed at its global step, owes that step's validation: a
        validation step not validated before its checkpoint was saved. Not the last step: a run
        resumed there trains nothing and the fit's own final validation follows."""
        step = trainer.global_step
        return (
            0 < step < trainer.max_steps
            and step % self.every_n_steps == 0
            and self.validated_step != step
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.owed(trainer):
            return
        # What Lightning's training epoch loop does after a validation step's batch
        # (_TrainingEpochLoop.on_advance_end; private API, used as the loop uses it). Until the
        # first batch, the loop's step counter for loggers is where it was when the checkpoint
        # was saved, so the row is logged at the step the uninterrupted run logged it at.
        epoch_loop = trainer.fit_loop.epoch_loop
        epoch_loop.val_loop.restarting = False
        trainer.validating = True
        try:
            epoch_loop.val_loop.run()
        finally:
            trainer.training = True
