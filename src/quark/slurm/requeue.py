"""Preemption and time limits on SLURM: the run saves an exact checkpoint, requeues its job, and
the requeued job continues it in the same run directory.

SLURM warns a job before its time limit, and before preempting it where the cluster sets
`SlurmctldParameters=preempt_send_user_signal`, with the signal submitit asks for
(`#SBATCH --signal=USR2@<hydra.launcher.signal_delay_s>`). It goes to the job's srun tasks, which
are the ranks. Lightning's own answer (`SLURMEnvironment(auto_requeue=True)`) saves a checkpoint
inside the signal handler, wherever the loop happens to be: between a backward pass and its
optimizer step, or, under DeepSpeed and FSDP, while the rank is inside another collective that
the collective save then deadlocks with. Quark turns that off (`slurm_environment`) and instead:

1. the handler only notes the signal;
2. at the next optimizer-step boundary the ranks agree (any rank signalled), save
   `checkpoints/step_<N>.ckpt` together, and record the requeue in the manifest;
3. rank 0 hands over to submitit's own handler, which requeues the job (`scontrol requeue`) and
   counts time-limit requeues against `hydra.launcher.max_num_timeout` (preemptions are free);
4. every rank ends with `RunRequeued`: the manifest stays `running`, and neither Hydra nor
   submitit records the job as finished, so the submitting process keeps waiting for it.

The requeued job is the same array task running the same pickled job, so it lands in the same
job directory: `quark.slurm.launcher` points `step.resume` at the newest checkpoint there and
`Run.open` reopens the run.
"""

from __future__ import annotations

import csv
import logging
import os
import signal
import threading
from typing import Any

import lightning as L

from quark.core.run import Run, RunRequeued, now_iso
from quark.training.skipped_validation import ValidateSkippedStep

log = logging.getLogger("quark.slurm")

# Set once this process has saved its requeue checkpoint and is ending for the requeue: whatever
# fails after that (a collective whose peer rank has already exited) is part of the ending, and
# quark.slurm.launcher must not report it as the job's result: submitit's submitting process
# takes any result file for the job's end, though SLURM runs the job again.
STARTED = threading.Event()


def slurm_environment() -> Any | None:
    """Lightning's SLURM cluster environment, without its signal-handler requeue, for a process
    that srun started; None elsewhere."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return None
    return SLURMEnvironment(auto_requeue=False)


class SlurmRequeue(L.Callback):
    """On submitit's preemption signal: checkpoint at the next step boundary, requeue, stop."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.signalled = False
        self._signal: signal.Signals | None = None
        self._previous: Any = None
        self._last_step = -1
        self._flush_at_next_batch = False
        # Lightning's CSV logger empties logs/metrics.csv when it starts: a reopened run keeps
        # the rows its earlier attempts logged (read now, before the logger starts)
        metrics = run.dir / "logs" / "metrics.csv"
        self._earlier_rows = (
            list(csv.DictReader(metrics.open(newline="")))
            if run.manifest.get("restarts") and metrics.is_file()
            else []
        )

    @staticmethod
    def wanted() -> bool:
        """In a job submitit started on SLURM: the requeued job comes back to the same directory."""
        return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        from submitit import JobEnvironment

        # the signal submitit asked SLURM for (SUBMITIT_PREEMPT_SIGNAL, USR2 unless set)
        self._signal = signal.Signals[f"SIG{JobEnvironment.USR_SIG}"]
        self._previous = signal.getsignal(self._signal)
        signal.signal(self._signal, self._note_signal)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self._earlier_rows and trainer.is_global_zero):
            return
        from lightning.pytorch.loggers import CSVLogger

        # rows logged at step s come after s + 1 optimizer steps; later ones are computed again,
        # and so is the validation of the step resumed at when the checkpoint was saved before
        # it (ValidateSkippedStep, after this callback), though an earlier attempt may have
        # logged it
        resumed_at = trainer.global_step
        revalidated = any(
            isinstance(callback, ValidateSkippedStep) and callback.owed(trainer)
            for callback in trainer.callbacks  # type: ignore[attr-defined]
        )
        kept = [
            row
            for row in self._earlier_rows
            if float(row["step"]) < resumed_at
            and not (revalidated and float(row["step"]) == resumed_at - 1 and _validation_row(row))
        ]
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.experiment.metrics[:0] = kept  # written with the first new rows
                break

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._signal is not None:
            signal.signal(self._signal, self._previous)
            self._signal = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._flush_at_next_batch = True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # A checkpoint is saved in on_train_batch_end, before Lightning logs that step's row of
        # the metrics log. A requeue without warning (SIGTERM, then SIGKILL) resumes from that
        # checkpoint, keeping only the rows on disk: write them now, one batch after the save,
        # or the row of the step before the checkpoint is lost (CI saw row 59 missing after a
        # requeue at step 60). The CSV logger otherwise writes every 100 steps.
        if self._flush_at_next_batch:
            self._flush_at_next_batch = False
            for logger in trainer.loggers:
                logger.save()

    def _note_signal(self, signum: int, frame: Any) -> None:
        log.warning(
            "%s received: checkpointing at the next step boundary, then requeueing",
            signal.Signals(signum).name,
        )
        self.signalled = True

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._signal is None or trainer.global_step == self._last_step:
            return  # inside gradient accumulation: the optimizer has not stepped since last time
        self._last_step = trainer.global_step
        # a collective on every rank at every step boundary (one boolean), so all ranks stop together
        if trainer.strategy.reduce_boolean_decision(self.signalled, all=False):
            self._checkpoint_and_requeue(trainer, self._signal)

    def _checkpoint_and_requeue(self, trainer: L.Trainer, signum: signal.Signals) -> None:
        step = trainer.global_step
        # This step's row of the metrics log is logged by Lightning's loop after
        # on_train_batch_end, where we are, and the loop never gets there: log it now (what
        # the loop would do next) and write every logger's rows to disk before the checkpoint,
        # or the resumed run's log lacks the row of the step before it (CI saw row 19 missing
        # after a requeue at step 20). Private API of Lightning's loop, used as the loop does.
        connector = trainer._logger_connector
        connector.on_batch_end()
        connector.update_train_step_metrics()
        for logger in trainer.loggers:
            logger.save()
        checkpoint = self.run.dir / "checkpoints" / f"step_{step:06d}.ckpt"
        trainer.save_checkpoint(str(checkpoint))  # all ranks: sharded strategies save together
        job = os.environ.get("SLURM_JOB_ID")
        self.run.update(
            requeues=[
                *self.run.manifest.get("requeues", []),
                {"at": now_iso(), "step": step, "checkpoint": str(checkpoint), "slurm_job_id": job},
            ]
        )
        log.warning("saved %s at step %d; requeueing SLURM job %s", checkpoint, step, job)
        # exit status 0: srun runs with --kill-on-bad-exit, and rank 0 has yet to requeue
        ending = RunRequeued(0)
        STARTED.set()
        if trainer.global_rank != 0:
            raise ending  # submitit requeues from rank 0
        try:
            # submitit's handler requeues and calls sys.exit, or raises when it will not requeue
            # (more time-outs than max_num_timeout): then the run fails, its checkpoint kept
            self._previous(signum, None)
        except SystemExit:
            raise ending from None
        raise RuntimeError(f"submitit's {signum.name} handler returned without requeueing")


def _validation_row(row: dict[str, str]) -> bool:
    """Whether a metrics log row holds a validation's metrics (val/...)."""
    return any(key.startswith("val/") and value for key, value in row.items())
