"""The Lightning Trainer a training step runs: layout, precision, schedule, loggers, callbacks;
and the fit it runs, from resuming to the final validation.

Pretrain and finetune share both, so both read `step.max_steps`, `step.val_every_n_steps`,
`step.checkpoint_every_n_steps`, `step.grad_clip`, `step.resume` and the `trainer` and `logger`
groups the same way, and leave the same checkpoints/last.ckpt.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from quark.core.errors import ConfigError
from quark.core.run import Run
from quark.slurm.requeue import SlurmRequeue, slurm_environment
from quark.training.guards import DivergenceGuard
from quark.training.host_memory import cache_host_memory
from quark.training.relaunch import relaunch_jobs_not_command_lines
from quark.training.resume import resume_checkpoint, resume_key
from quark.training.skipped_validation import ValidateSkippedStep
from quark.training.strategies import build_strategy
from quark.training.throughput import ThroughputLogger, peak_flops


def build_trainer(
    cfg: DictConfig,
    run: Run,
    *,
    flops_per_token: float | None = None,
    tokens_per_sample: int,
    callbacks: Sequence[L.Callback] = (),
) -> L.Trainer:
    """A Trainer writing checkpoints to `run`'s checkpoints/ and metrics to its logs/.

    `tokens_per_sample` (the sequence length) and `flops_per_token` feed the throughput and
    MFU log; `callbacks` come after Quark's own.
    """
    step, layout = cfg.step, cfg.trainer
    accumulate = int(layout.accumulate_grad_batches)
    world = int(layout.devices) * int(layout.num_nodes)
    tokens_per_step = tokens_per_sample * int(layout.micro_batch_size) * accumulate * world
    progress = _progress_bar(str(layout.progress_bar))
    if layout.cache_host_memory:
        cache_host_memory()
    relaunch_jobs_not_command_lines()
    slurm = slurm_environment()  # srun started this process: one task per device
    return L.Trainer(
        accelerator=str(layout.accelerator),
        devices=int(layout.devices),
        num_nodes=int(layout.num_nodes),
        strategy=build_strategy(layout),
        plugins=[slurm] if slurm else None,
        # the DataModules shard the sample stream by rank themselves, resumably
        use_distributed_sampler=False,
        precision=str(layout.precision),  # type: ignore[arg-type]  # a schema choice
        max_steps=int(step.max_steps),
        accumulate_grad_batches=accumulate,
        gradient_clip_val=float(step.grad_clip) or None,
        val_check_interval=int(step.val_every_n_steps) * accumulate,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=int(layout.log_every_n_steps),
        logger=build_loggers(cfg, run),
        callbacks=[
            DivergenceGuard(),  # before ModelCheckpoint: a non-finite step never gets saved
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=str(run.dir / "checkpoints"),
                filename="step_{step:06d}",  # no "=": the path must work as a Hydra override value
                auto_insert_metric_name=False,
                every_n_train_steps=int(step.checkpoint_every_n_steps),
                save_top_k=-1,
                save_last=True,
            ),
            ThroughputLogger(
                tokens_per_step,
                flops_per_token,
                peak_flops(str(layout.accelerator), str(layout.precision), world),
                int(layout.log_every_n_steps),
            ),
            *([progress] if progress else []),
            # preempted or at its time limit: checkpoint, requeue, resume in this run directory
            *([SlurmRequeue(run)] if SlurmRequeue.wanted() else []),
            # a resumed run validates the step its checkpoint was saved at, if it was not yet
            # (after SlurmRequeue, whose earlier rows of the metrics log go before that row)
            ValidateSkippedStep(int(step.val_every_n_steps)),
            *callbacks,
        ],
        enable_progress_bar=progress is not None,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=str(run.dir),
    )


@dataclass(frozen=True)
class Fitted:
    """What a finished fit leaves: the trainer (its global step, strategy and rank), the last
    checkpoint, the last logged training loss, the final validation metrics and the seconds
    `Trainer.fit` took."""

    trainer: L.Trainer
    last_checkpoint: Path
    train_loss: float
    validation: Mapping[str, float]
    seconds: float


def fit(
    cfg: DictConfig,
    run: Run,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    *,
    tokens_per_sample: int,
    flops_per_token: float | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> Fitted:
    """Train `module` on `datamodule` with `build_trainer`'s Trainer, from the checkpoint
    `step.resume` names (recorded in `run` as resumed_from, with the resume key), then save
    checkpoints/last.ckpt and validate the trained weights (`final_validation`).

    Every rank returns, after the final validation; the caller lets rank 0 alone export and
    record (`Fitted.trainer.is_global_zero`).
    """
    trainer = build_trainer(
        cfg,
        run,
        tokens_per_sample=tokens_per_sample,
        flops_per_token=flops_per_token,
        callbacks=callbacks,
    )
    resume_from = resume_checkpoint(cfg, run)
    # resume=auto finds an interrupted run of this config by this key
    run.update(resume_key=resume_key(cfg), resumed_from=str(resume_from) if resume_from else None)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    last = run.dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(str(last))
    train_loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    return Fitted(trainer, last, train_loss, final_validation(trainer, module, datamodule), seconds)


def final_validation(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule
) -> Mapping[str, float]:
    """The validation metrics of the trained weights: those of the fit's own validation when it
    validated after its last step (step.val_every_n_steps divides step.max_steps), else
    `trainer.validate`'s. One validation costs as much as a few training steps."""
    callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning, unannotated
    [validated] = [c for c in callbacks if isinstance(c, ValidateSkippedStep)]
    if validated.measured is not None:
        step, metrics = validated.measured
        if step == trainer.global_step and metrics:
            return metrics
    return trainer.validate(module, datamodule=datamodule, verbose=False)[0]


def quiet_libraries() -> None:
    """Silence what would bury Quark's own output: progress bars of weight loading and
    saving, a deprecation warning inside Lightning, DeepSpeed's accelerator guess on CPU."""
    import os
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Lightning's hint on any machine with Slurm's client installed; Quark runs under srun
    # through hydra/launcher=slurm, and a run started by hand there is meant to run as it is
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    # step=align align=grpo keeps its prompt batches on the CPU (transfer_batch_to_device)
    warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device`")
    # transformers imports DeepSpeed when installed; without CUDA it warns that it chose CPU
    if not _cuda_visible():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    # transformers imports torchao when installed (the export extra), which warns on import
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's enum notices


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def build_loggers(cfg: DictConfig, run: Run) -> list[Any]:
    """logs/metrics.csv always (later steps read it), plus the `logger` group's choice."""
    from lightning.pytorch import loggers

    chosen = cfg.get("logger") or {"name": "csv"}
    name = str(chosen["name"])
    found: list[Any] = [loggers.CSVLogger(str(run.dir), name="logs", version="")]
    try:
        if name == "tensorboard":
            found.append(
                loggers.TensorBoardLogger(str(run.dir), name="logs", version="tensorboard")
            )
        elif name == "mlflow":
            found.append(
                loggers.MLFlowLogger(
                    experiment_name=str(chosen.get("project") or cfg.experiment_name),
                    tracking_uri=str(chosen.get("tracking_uri") or "")
                    or f"sqlite:///{Path(cfg.paths.output_dir).resolve() / 'mlflow.db'}",
                    run_name=f"{cfg.step.name}/{run.dir.name}",
                    tags={"quark.run_dir": str(run.dir), "quark.step": str(cfg.step.name)},
                )
            )
        elif name == "wandb":
            found.append(
                loggers.WandbLogger(
                    project=str(chosen.get("project") or "quark"),
                    name=f"{cfg.experiment_name}/{cfg.step.name}/{run.dir.name}",
                    save_dir=str(run.dir),
                    offline=str(chosen.get("mode", "offline")) == "offline",
                )
            )
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "logger",
            f"logger={name} needs the '{exc.name}' package, which is not installed",
            "pip install 'quark[loggers]', or use logger=csv",
        ) from None
    return found


def _progress_bar(choice: str) -> L.Callback | None:
    if choice == "rich" or (choice == "auto" and sys.stdout.isatty()):
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar(leave=True)
    return None
