"""Pipelines: several steps in one launch, in order, each in its own run directory.

A stage whose config hash and input hashes match a completed run is reused, not recomputed; a
failed stage stops the pipeline, and rerunning the same command continues from it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from quark.core.errors import ConfigError, QuarkError, StepFailed
from quark.core.files import write_json_atomic, write_text_atomic
from quark.core.run import now_iso, process_rank
from quark.core.runs import reusable_run
from quark.core.schemas import validate
from quark.core.schemas.pipeline import PipelineSchema
from quark.core.schemas.validation import check_group
from quark.resolvers import unique_run_dir

log = logging.getLogger("quark.pipeline")
# Set while a stage runs: its index, run directory and handed-over inputs, for the extra ranks
# of a distributed stage, which Lightning starts with the pipeline's own command line.
STAGE_VARIABLE = "QUARK_PIPELINE_STAGE"


def run_pipeline(cfg: DictConfig, pipeline_dir: Path, cli_overrides: list[str]) -> dict[str, float]:
    """Run every stage of cfg.pipeline; return the last stage's metrics."""
    from quark.launch import resolve_inputs, run_step

    pipeline = OmegaConf.to_object(check_group("pipeline", cfg.pipeline, PipelineSchema))
    assert isinstance(pipeline, PipelineSchema)
    # The command line wins over the pipeline's overrides, except for choosing the pipeline.
    passed_on = [o for o in cli_overrides if not o.lstrip("+~").startswith("pipeline")]
    _check_step_overrides(passed_on, [stage.step for stage in pipeline.stages])
    stage_of_rank = os.environ.get(STAGE_VARIABLE)
    if process_rank() != 0 and stage_of_rank:
        # an extra rank of a distributed stage, relaunched with the pipeline's command line
        return _join_stage(json.loads(stage_of_rank), pipeline, passed_on, config_name_of_launch())
    record: dict[str, Any] = {
        "pipeline": pipeline.name,
        "started_at": now_iso(),
        "status": "running",
        "stages": [],
    }
    manifest_path = pipeline_dir / "pipeline.json"
    handed: dict[str, str] = {}
    metrics: dict[str, float] = {}
    config_name = config_name_of_launch()

    for index, stage in enumerate(pipeline.stages, start=1):
        where = f"pipeline {pipeline.name}, stage {index} ({stage.step})"
        overrides = _stage_overrides(pipeline, index, passed_on)
        try:
            stage_cfg = compose_stage(config_name, overrides, handed)
            resolved = resolve_inputs(stage_cfg)
        except QuarkError as exc:
            _stage_failed(record, manifest_path, index, stage.step, exc)
            raise QuarkError(f"{where}: {exc}") from exc
        except Exception as exc:
            _stage_failed(record, manifest_path, index, stage.step, exc)
            raise

        entry: dict[str, Any] = {"index": index, "step": stage.step, "overrides": overrides}
        reusable = reusable_run(stage_cfg, resolved[1])
        if reusable is not None:
            log.info("%s: reused %s (same config and inputs)", where, reusable)
            entry.update(status="reused", run_dir=str(reusable))
            metrics = find_runs_metrics(reusable)
        else:
            run_dir = unique_run_dir(
                Path(stage_cfg.paths.output_dir) / stage_cfg.experiment_name / stage.step
            )
            run_dir.mkdir(parents=True)
            write_hydra_files(run_dir, stage_cfg, overrides)
            # the extra ranks of a distributed stage inherit this and join the stage
            os.environ[STAGE_VARIABLE] = json.dumps(
                {"index": index, "run_dir": str(run_dir), "inputs": handed}
            )
            try:
                metrics = run_step(stage_cfg, run_dir, overrides, resolved=resolved)
            except Exception as exc:
                _stage_failed(record, manifest_path, index, stage.step, exc, run_dir)
                if isinstance(exc, QuarkError):
                    raise QuarkError(f"{where}: {exc}") from exc
                raise StepFailed(
                    f"{where} failed: {exc}; rerun the same command to continue from this stage"
                ) from exc
            finally:
                os.environ.pop(STAGE_VARIABLE, None)
            entry.update(status="completed", run_dir=str(run_dir))
        record["stages"].append(entry)
        write_json_atomic(manifest_path, record)
        handed[stage.step] = entry["run_dir"]

    record.update(status="completed", ended_at=now_iso())
    write_json_atomic(manifest_path, record)
    _print_summary(record)
    return metrics


def config_name_of_launch() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.config_name or "launch"


def _stage_overrides(pipeline: PipelineSchema, index: int, passed_on: list[str]) -> list[str]:
    """Overrides of stage `index` (1-based): the pipeline's, the stage's, then the command
    line's that apply to its step."""
    stage = pipeline.stages[index - 1]
    return [
        *pipeline.overrides,
        *stage.overrides,
        *_for_step(passed_on, stage.step),
        f"step={stage.step}",
    ]


def compose_stage(config_name: str, overrides: list[str], handed: dict[str, str]) -> DictConfig:
    from hydra import compose

    stage_cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(stage_cfg):
        stage_cfg.pop("pipeline", None)
        stage_cfg.inputs = dict(handed)
    validate(stage_cfg)
    return stage_cfg


def _join_stage(
    stage: dict[str, Any], pipeline: PipelineSchema, passed_on: list[str], config_name: str
) -> dict[str, float]:
    """Run this process's rank of the stage rank 0 is running (STAGE_VARIABLE says which, in
    which run directory, with which earlier runs handed over)."""
    from quark.launch import run_step

    overrides = _stage_overrides(pipeline, int(stage["index"]), passed_on)
    stage_cfg = compose_stage(config_name, overrides, dict(stage["inputs"]))
    return run_step(stage_cfg, Path(stage["run_dir"]), overrides)


def _step_key(override: str) -> str | None:
    """`X` for a command-line override of `step.X...`, else None."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key.split(".")[1] if key.startswith("step.") and key.count(".") >= 1 else None


def _for_step(overrides: list[str], step: str) -> list[str]:
    """The command-line overrides for a stage: `step.X=...` only reaches steps that have X.

    `++step.X=v` (which the launch's own composition needs when its default step lacks X)
    reaches a stage as plain `step.X=v`.
    """
    import dataclasses

    from quark.core.step_registry import STEP_SCHEMAS

    fields = {f.name for f in dataclasses.fields(STEP_SCHEMAS[step])}
    chosen = []
    for override in overrides:
        key = _step_key(override)
        if key is None:
            chosen.append(override)
        elif key in fields:
            chosen.append(override.lstrip("+"))
    return chosen


def _check_step_overrides(overrides: list[str], steps: list[str]) -> None:
    for override in overrides:
        if _step_key(override) is not None and not any(_for_step([override], s) for s in steps):
            raise ConfigError(
                override.split("=", 1)[0].lstrip("+~"),
                "no stage's step has this key",
                f"this pipeline runs {', '.join(dict.fromkeys(steps))}; step.* overrides reach the stages whose step has the key",
            )


def find_runs_metrics(run_dir: Path) -> dict[str, float]:
    from quark.core.run import read_manifest

    return dict(read_manifest(run_dir).get("metrics", {}))


def write_hydra_files(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    # The same .hydra/ files a direct launch leaves, so every run directory reads alike.
    write_text_atomic(run_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text_atomic(
        run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides))
    )


def _stage_failed(
    record: dict[str, Any],
    path: Path,
    index: int,
    step: str,
    exc: BaseException,
    run_dir: Path | None = None,
) -> None:
    record["stages"].append(
        {
            "index": index,
            "step": step,
            "status": "failed",
            "run_dir": str(run_dir) if run_dir else None,
            "error": " ".join(str(exc).split()),
        }
    )
    record.update(status="failed", ended_at=now_iso())
    write_json_atomic(path, record)


def _print_summary(record: dict[str, Any]) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    table = Table(title=f"Pipeline {record['pipeline']}", title_justify="left")
    for column in ("stage", "step", "status", "run directory"):
        table.add_column(column)
    for stage in record["stages"]:
        table.add_row(str(stage["index"]), stage["step"], stage["status"], stage["run_dir"] or "")
    wide_console().print(table)
