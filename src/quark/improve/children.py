"""The runs a cycle starts: the candidate's fine-tuning and the evaluations of both models are
runs of their own steps (quark.launch.run_step), each in its own run directory with its own
manifest, so `quark runs` lists them and `quark lineage` follows them. A child whose config and
inputs match a completed run is reused, as a pipeline stage is (an incumbent evaluated once is
not evaluated again by the next cycle)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("quark.improve")


@dataclass(frozen=True)
class ChildRun:
    step: str
    run_dir: Path
    metrics: dict[str, float]
    reused: bool


def shared_overrides(cfg: DictConfig) -> list[str]:
    """What every child takes from the improve run's config on the command line: where runs
    go, the experiment, the seed."""
    return [
        f"paths.output_dir={cfg.paths.output_dir}",
        f"experiment_name={cfg.experiment_name}",
        f"seed={cfg.seed}",
    ]


# Groups a child takes whole from the improve run (the options and every key under them, as
# this run resolved them): one override on the command line reaches the candidate's training
# and both evaluations as it reaches any step.
SHARED_GROUPS = ("safety", "trainer", "logger", "peft")


def run_child(cfg: DictConfig, step: str, overrides: list[str]) -> ChildRun:
    """Compose `step` with the shared and the given overrides and this run's shared groups,
    validate it, and run it in a new run directory of its step (or reuse a completed run of
    the same config and inputs)."""
    from hydra import compose
    from omegaconf import OmegaConf, open_dict

    from quark.core.runs import reusable_run
    from quark.core.schemas import validate
    from quark.launch import resolve_inputs, run_step
    from quark.pipeline import config_name_of_launch, find_runs_metrics, write_hydra_files
    from quark.resolvers import unique_run_dir

    everything = [*shared_overrides(cfg), *overrides, f"step={step}"]
    child_cfg = compose(config_name=config_name_of_launch(), overrides=everything)
    with open_dict(child_cfg):
        child_cfg.pop("pipeline", None)
        child_cfg.inputs = {}
        for group in SHARED_GROUPS:
            if not any(o.lstrip("+~").startswith((f"{group}=", f"{group}.")) for o in overrides):
                # (a group the child's own overrides name is theirs: step.retrain.overrides)
                child_cfg[group] = OmegaConf.create(
                    OmegaConf.to_container(cfg[group], resolve=True)
                )
    validate(child_cfg)
    resolved = resolve_inputs(child_cfg)
    earlier = reusable_run(child_cfg, resolved[1])
    if earlier is not None:
        log.info("improve: %s reused %s (same config and inputs)", step, earlier)
        return ChildRun(step, earlier, find_runs_metrics(earlier), reused=True)
    run_dir = unique_run_dir(Path(str(cfg.paths.output_dir)) / str(cfg.experiment_name) / step)
    run_dir.mkdir(parents=True)
    write_hydra_files(run_dir, child_cfg, everything)
    metrics = run_step(child_cfg, run_dir, everything, resolved=resolved)
    return ChildRun(step, run_dir, metrics, reused=False)


def child_record(child: ChildRun) -> dict[str, Any]:
    return {"step": child.step, "run_dir": str(child.run_dir), "reused": child.reused}
