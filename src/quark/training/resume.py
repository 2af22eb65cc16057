"""Which checkpoint a training run continues from: a path, or `auto` (the newest unfinished run
of the same config)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from quark.core.errors import ConfigError
from quark.core.run import Run, config_hash


def resume_key(cfg: DictConfig) -> str:
    """The key resume=auto matches runs on: the config hash, which leaves `step.resume` out, so
    runs that differ only in it share the key."""
    return config_hash(cfg)


def resume_checkpoint(cfg: DictConfig, run: Run) -> Path | None:
    """The checkpoint to continue from: `step.resume` as a path, or (auto) the newest checkpoint
    of the newest run of this step and experiment that did not complete and has the same
    resume key."""
    resume = cfg.step.resume or os.environ.get("QUARK_RESUME_DEFAULT")  # set in sweep jobs
    if not resume:
        return None
    if str(resume) != "auto":
        path = Path(str(resume)).expanduser()
        if not path.exists():
            raise ConfigError(
                "step.resume", f"{path} is not a checkpoint", "give a .ckpt path, or auto"
            )
        return path
    from quark.core.runs import find_runs

    wanted = resume_key(cfg)
    for record in reversed(
        find_runs(
            cfg.paths.output_dir, experiment=str(cfg.experiment_name), step=str(cfg.step.name)
        )
    ):
        if record.path == run.dir or record.manifest.get("status") == "completed":
            continue
        newest = newest_checkpoint(record.path / "checkpoints")
        if newest is not None and record.manifest.get("resume_key") == wanted:
            return newest
    return None


def newest_checkpoint(directory: Path) -> Path | None:
    """The most recently written checkpoint in `directory`: `last.ckpt` normally, a step
    checkpoint when the run was killed between writing it and updating `last.ckpt`.
    Checkpoints are written whole or not at all (Lightning saves to a temporary file and
    renames it), so the newest one on disk is complete."""
    found = [
        p for p in directory.glob("*.ckpt") if p.name == "last.ckpt" or p.name.startswith("step_")
    ]
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), default=None)
