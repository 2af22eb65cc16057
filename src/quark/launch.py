"""`main(cfg)`: validate the config, open the run, dispatch to the step, close the run."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import RunStopped
from quark.core.run import Run, describe_input, process_rank, record_failure, record_reuse
from quark.core.schemas import validate
from quark.steps import load_step

log = logging.getLogger("quark")
# Set while a sweep job runs: a training step whose step.resume is null resumes as with auto.
RESUME_DEFAULT_VARIABLE = "QUARK_RESUME_DEFAULT"


def main(cfg: DictConfig) -> dict[str, float]:
    """Run the configured step, or the configured pipeline, in Hydra's run directory."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    if cfg.get("pipeline"):
        from quark.pipeline import run_pipeline

        return run_pipeline(cfg, run_dir, overrides)
    try:
        validate(cfg)
    except Exception as exc:
        record_failure(run_dir, cfg, overrides, exc)
        raise
    from hydra.types import RunMode

    if hydra_cfg.mode == RunMode.MULTIRUN:
        # Rerunning a sweep: a job that completed is taken as it is, one that was interrupted
        # continues from its newest checkpoint (its extra ranks inherit the variable).
        os.environ[RESUME_DEFAULT_VARIABLE] = "auto"
        try:
            return run_step(cfg, run_dir, overrides, reuse_completed=True)
        finally:
            os.environ.pop(RESUME_DEFAULT_VARIABLE, None)
    return run_step(cfg, run_dir, overrides)


def resolve_inputs(cfg: DictConfig) -> tuple[Any, list[dict[str, Any]]]:
    """The configured step's inputs, resolved once by its `inputs(cfg)` (and handed to its
    `run`), and their records for the manifest: each verified and hashed, with its role."""
    step = load_step(str(cfg.step.name))
    declare = getattr(step, "inputs", None)
    resolved = declare(cfg) if declare else None
    recorded = resolved.recorded() if resolved is not None else {}
    records = [
        {"role": role, **(item if isinstance(item, dict) else describe_input(item))}
        for role, item in recorded.items()
    ]
    return resolved, records


# What Lightning's launcher puts in os.environ for a distributed job. A sweep or a pipeline runs
# several jobs in one process: the next job must not find the last one's ranks and port.
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def distributed_job() -> Iterator[None]:
    """Run one job; afterwards close its process group and restore the launcher's variables."""
    saved = {name: os.environ.get(name) for name in LAUNCHER_VARIABLES}
    try:
        yield
    finally:
        if "torch.distributed" in sys.modules:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_step(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    reuse_completed: bool = False,
    resolved: tuple[Any, list[dict[str, Any]]] | None = None,
) -> dict[str, float]:
    """Open a Run in `run_dir`, run the step in it, and close it as completed or failed.

    With `reuse_completed`, a completed run of the same config and inputs is taken instead:
    `run_dir` records it as `reused`, pointing at it, and its metrics are returned.
    `resolved`: what resolve_inputs(cfg) returned already (a pipeline stage's reuse check).
    """
    step = load_step(str(cfg.step.name))
    try:
        inputs, records = resolved if resolved is not None else resolve_inputs(cfg)
    except Exception as exc:
        record_failure(run_dir, cfg, overrides, exc)
        raise
    if reuse_completed and process_rank() == 0:
        from quark.core.runs import reusable_run

        earlier = reusable_run(cfg, records)
        if earlier is not None:
            log.info("%s: reused %s (same config and inputs)", cfg.step.name, earlier)
            return record_reuse(run_dir, cfg, overrides, earlier)
    if process_rank() != 0:
        # an extra process of a distributed run, in rank 0's run directory: train, record nothing
        with distributed_job():
            return step.run(cfg, Run.follower(run_dir, cfg), inputs)
    run = Run.open(run_dir, cfg, inputs=records, overrides=overrides)
    log.info("%s: run directory %s", cfg.step.name, run.dir)
    try:
        with distributed_job():
            metrics = step.run(cfg, run, inputs)
        run.complete(metrics)
    except RunStopped as stopped:
        # stopped on purpose (an HPO trial its pruner cut short): not a failure
        run.stop(stopped)
        log.info("%s stopped: %s", cfg.step.name, stopped)
        return {}
    except BaseException as exc:
        run.fail(exc)
        raise
    log.info("%s completed in %.1f s: %s", cfg.step.name, run.manifest["duration_s"], run.dir)
    return metrics
