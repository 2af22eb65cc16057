"""How Lightning starts the extra ranks of a distributed run under Hydra: the job, not the
command line.

Lightning relaunches `sys.argv` with `hydra.run.dir` pinned. In a multirun, `sys.argv` is the
whole sweep (`-m lr=1e-3,3e-4`), so every extra rank would start a sweep of its own in the
wrong directory. Quark relaunches the job's own overrides (`hydra.overrides.task`, which
holds this job's values) with `hydra.run.dir` set to the job's output directory, so extra
ranks join their job in its run directory whether it came from a single run, a sweep or a
pipeline stage (see quark.pipeline for how a stage's ranks find their stage).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def job_subprocess_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command and working directory that start rank `local_rank` of this Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    # the user's Hydra settings (a search path, logging) too, but not the sweep's or placement's
    replaced = ("hydra.mode", "hydra.run.", "hydra.sweep.", "hydra.job.name", "hydra.output_subdir")
    command += [o for o in hydra_cfg.overrides.hydra if not o.lstrip("+~").startswith(replaced)]
    command += list(hydra_cfg.overrides.task)
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_rank_{local_rank}",
        # the extra ranks must not rewrite rank 0's .hydra/ files
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def relaunch_jobs_not_command_lines() -> None:
    """Make Lightning's subprocess launcher (DDP, FSDP, DeepSpeed) use `job_subprocess_command`."""
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

    # Lightning looks the function up in its module at launch time; both modules hold a reference.
    pytorch_launcher._hydra_subprocess_cmd = job_subprocess_command
    fabric_launcher._hydra_subprocess_cmd = job_subprocess_command
