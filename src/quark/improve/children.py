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
    """What every child takes from the improve run: where runs go, the experiment, the seed,
    the safety group, and the launch's choice of trainer, logger and peft (one override on the
    command line reaches the candidate's training as it reaches any training step)."""
    shared = [
        f"paths.output_dir={cfg.paths.output_dir}",
        f"experiment_name={cfg.experiment_name}",
        f"seed={cfg.seed}",
        f"safety={cfg.safety.name}",
    ]
    return shared + [f"{group}={option}" for group, option in launch_choices(CHOSEN_GROUPS).items()]


# groups without a name key of their own, whose choice the launch's Hydra config knows
CHOSEN_GROUPS = ("trainer", "logger", "peft")


def launch_choices(groups: tuple[str, ...]) -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {group: str(choices[group]) for group in groups if choices.get(group)}


def run_child(cfg: DictConfig, step: str, overrides: list[str]) -> ChildRun:
    """Compose `step` with the shared and the given overrides, validate it, and run it in a new
    run directory of its step (or reuse a completed run of the same config and inputs)."""
    from quark.core.runs import reusable_run
    from quark.launch import resolve_inputs, run_step
    from quark.pipeline import (
        compose_stage,
        config_name_of_launch,
        find_runs_metrics,
        write_hydra_files,
    )
    from quark.resolvers import unique_run_dir

    everything = [*shared_overrides(cfg), *overrides, f"step={step}"]
    child_cfg = compose_stage(config_name_of_launch(), everything, {})
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
