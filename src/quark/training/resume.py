"""Which checkpoint a training run continues from: a path, or `auto` (the newest unfinished run
of the same config)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError
from quark.core.run import Run, config_hash


def resume_key(cfg: DictConfig) -> str:
    """Hash of the config without `step.resume`: runs that differ only in it share this key."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(copy, DictConfig)
    copy.step.resume = None
    return config_hash(copy)


def resume_checkpoint(cfg: DictConfig, run: Run) -> Path | None:
    """The checkpoint to continue from: `step.resume` as a path, or (auto) the `last.ckpt` of
    the newest run of this step and experiment that did not complete and has the same
    resume key."""
    resume = cfg.step.resume
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
        last = record.path / "checkpoints" / "last.ckpt"
        if last.exists() and record.manifest.get("resume_key") == wanted:
            return last
    return None
