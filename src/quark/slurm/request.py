"""What the launcher asks SLURM for, checked before anything is submitted: one srun task per
device, one layout per job array, and a partition (read with `sinfo`) that can hold it. Each
refusal is one line naming the key; a job asking for more than any node has would otherwise
pend forever, or fail at sbatch with a message that names no Quark key."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError

# Overrides that can change what a job asks SLURM for (all jobs of an array ask for the same)
LAYOUT_KEYS = ("trainer", "trainer.devices", "trainer.num_nodes", "trainer.accelerator")
# `sinfo --Node`: one line per node and partition; %P marks the default partition with '*'
SINFO = ["sinfo", "--noheader", "--Node", "--format=%N|%P|%c|%m|%G|%l"]


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: int
    cpus_per_node: int  # the largest node's
    memory_mb: int
    gpus_per_node: int
    time_limit_min: float  # inf: no limit


def read_partitions(text: str) -> dict[str, Partition]:
    """Partitions from `sinfo` output in the SINFO format; the default one is also under ''."""
    rows: dict[str, list[list[str]]] = {}
    default = ""
    for line in text.splitlines():
        if line.count("|") != 5:
            continue
        node, name, *rest = line.split("|")
        if name.endswith("*"):
            name = name[:-1]
            default = name
        rows.setdefault(name, []).append([node, *rest])
    found = {}
    for name, nodes in rows.items():
        found[name] = Partition(
            name=name,
            nodes=len({row[0] for row in nodes}),
            cpus_per_node=max(_number(row[1]) for row in nodes),
            memory_mb=max(_number(row[2]) for row in nodes),
            gpus_per_node=max(_gpus(row[3]) for row in nodes),
            time_limit_min=_minutes(nodes[0][4]),
        )
    if default:
        found[""] = found[default]
    return found


def _number(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def _gpus(gres: str) -> int:
    """GPUs in a node's GRES: gpu:8, gpu:h100:8(S:0-1), gpu:a100:4,mps:400; (null) is none."""
    return sum(int(n) for n in re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres))


def _minutes(limit: str) -> float:
    """A sinfo time limit ([days-]hours:minutes:seconds, minutes:seconds, infinite) in minutes."""
    if limit.strip().lower() in ("infinite", "unlimited", "n/a", ""):
        return float("inf")
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


def query_partitions() -> dict[str, Partition]:
    """The cluster's partitions, by name (the default one also under '')."""
    try:
        done = subprocess.run(SINFO, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ConfigError(
            "hydra.launcher",
            "hydra/launcher=slurm needs Slurm's commands (sinfo, sbatch), which are not on PATH",
            "launch from a login node of the cluster",
        ) from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(
            "hydra.launcher", f"sinfo failed: {reason}", "is the cluster up? (SLURM_CONF)"
        )
    return read_partitions(done.stdout)


def check_request(params: dict[str, Any], partitions: dict[str, Partition]) -> None:
    """Refuse, in one line naming the key, a request no node of the partition can hold."""
    wanted = params.get("partition") or ""
    if wanted not in partitions:
        names = ", ".join(sorted(p for p in partitions if p)) or "none"
        raise ConfigError(
            "hydra.launcher.partition",
            f"no partition '{wanted}' on this cluster"
            if wanted
            else "the cluster has no default partition",
            f"partitions: {names}",
        )
    part = partitions[wanted]
    where = f"partition '{part.name}'"
    nodes = int(params.get("nodes") or 1)
    if nodes > part.nodes:
        raise ConfigError(
            "hydra.launcher.nodes",
            f"{nodes} nodes (trainer.num_nodes) but {where} has {part.nodes}",
            f"allowed: <= {part.nodes}, or another partition (hydra.launcher.partition)",
        )
    gpus = int(params.get("gpus_per_node") or 0)
    if gpus > part.gpus_per_node:
        raise ConfigError(
            "hydra.launcher.gpus_per_node",
            f"{gpus} GPUs per node (trainer.devices) but the nodes of {where} have "
            f"{part.gpus_per_node}",
            f"allowed: <= {part.gpus_per_node}, or another partition (hydra.launcher.partition)",
        )
    tasks = int(params.get("tasks_per_node") or 1)
    cpus = tasks * int(params.get("cpus_per_task") or 1)
    if cpus > part.cpus_per_node:
        raise ConfigError(
            "hydra.launcher.cpus_per_task",
            f"{tasks} tasks per node x {params.get('cpus_per_task') or 1} CPUs = {cpus} CPUs, "
            f"but the nodes of {where} have {part.cpus_per_node}",
            f"allowed: tasks_per_node x cpus_per_task <= {part.cpus_per_node}",
        )
    memory_gb = params.get("mem_gb")
    if memory_gb and float(memory_gb) * 1024 > part.memory_mb:
        raise ConfigError(
            "hydra.launcher.mem_gb",
            f"{memory_gb} GB per node but the nodes of {where} have {part.memory_mb / 1024:.0f} GB",
            f"allowed: <= {part.memory_mb // 1024}, or null for the partition's default",
        )
    minutes = float(params.get("timeout_min") or 0)
    if minutes > part.time_limit_min:
        raise ConfigError(
            "hydra.launcher.timeout_min",
            f"{minutes:g} minutes but {where} allows {part.time_limit_min:g}",
            "allowed: up to the partition's limit; a longer run is requeued at the limit "
            "(max_num_timeout) and resumes",
        )


def check_layout(config: DictConfig, params: dict[str, Any]) -> None:
    """One srun task per device, on trainer.num_nodes nodes."""
    devices = OmegaConf.select(config, "trainer.devices", default=None)
    nodes = OmegaConf.select(config, "trainer.num_nodes", default=None)
    if devices is not None and int(params.get("tasks_per_node") or 1) != int(devices):
        raise ConfigError(
            "hydra.launcher.tasks_per_node",
            f"{params.get('tasks_per_node')} but trainer.devices is {devices}",
            "Lightning on SLURM runs one task per device: leave it at ${trainer.devices}",
        )
    if nodes is not None and int(params.get("nodes") or 1) != int(nodes):
        raise ConfigError(
            "hydra.launcher.nodes",
            f"{params.get('nodes')} but trainer.num_nodes is {nodes}",
            "leave it at ${trainer.num_nodes}",
        )


def check_one_layout(
    hydra_context: Any, config: DictConfig, job_overrides: Sequence[Sequence[str]]
) -> None:
    """Every job of the array asks SLURM for what the first one does (one request per array):
    a sweep over trainer=ddp,deepspeed_zero3 may share one, trainer.devices=2,8 cannot."""
    by_layout: dict[tuple[str, ...], list[str]] = {}
    for overrides in job_overrides:
        chosen = tuple(o for o in overrides if o.lstrip("+~").split("=")[0] in LAYOUT_KEYS)
        by_layout.setdefault(chosen, list(overrides))
    if len(by_layout) < 2:
        return
    seen: dict[tuple[Any, ...], tuple[str, ...]] = {}
    for chosen, overrides in by_layout.items():
        cfg = hydra_context.config_loader.load_sweep_config(config, overrides)
        layout = tuple(
            OmegaConf.select(cfg, f"trainer.{key}", default=None)
            for key in ("accelerator", "devices", "num_nodes")
        )
        seen.setdefault(layout, chosen)
    if len(seen) > 1:
        described = "; ".join(
            f"{' '.join(chosen) or 'the defaults'}: {layout[1]} x {layout[0]} on {layout[2]} node(s)"
            for layout, chosen in seen.items()
        )
        raise ConfigError(
            "trainer",
            f"the sweep's jobs need different resources ({described}), but one SLURM job array "
            "asks for one",
            "launch each layout separately",
        )
