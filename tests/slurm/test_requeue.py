"""A training job on SLURM that is warned (preemption, time limit) and one that is requeued
without warning: each time the job starts again in the same run directory and continues from
its newest checkpoint, to the weights and the metrics log of a run never interrupted. The job
runs two ranks as two srun tasks (Lightning's SLURM environment, gloo), as a multi-node job does."""

from __future__ import annotations

import contextlib
import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..steps.test_pretrain import TRAIN, data_run, weights
from .conftest import SLURM, Background, slurm

__all__ = ["data_run"]  # the fixture, imported for the test below

pytestmark = SLURM

# long enough to interrupt twice: 80 steps, a checkpoint every 10; two ranks of two samples
LONG = [
    o
    for o in TRAIN
    if not o.startswith(
        ("step.max_steps", "step.val_every", "step.checkpoint", "trainer.micro_batch_size")
    )
]
LONG += [
    "step.max_steps=80",
    "step.val_every_n_steps=40",
    "step.checkpoint_every_n_steps=10",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "trainer.devices=2",
    "trainer.micro_batch_size=2",
]


def wait_for(
    path_glob: str, root: Path, until: Callable[[dict], bool] | None = None, timeout: float = 240
) -> Any:
    """The first path under `root` matching `path_glob`; with `until`, the JSON there once
    `until` holds for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(root.glob(path_glob)):
            if until is None:
                return path
            with contextlib.suppress(ValueError):
                data = json.loads(path.read_text())
                if until(data):
                    return data
        time.sleep(0.2)
    raise AssertionError(f"{path_glob} never appeared under {root}")


def metrics_log(run_dir: Path) -> list[tuple[str, str, str]]:
    rows = csv.DictReader((run_dir / "logs" / "metrics.csv").open())
    return [(r["step"], r["train/loss"], r["val/loss"]) for r in rows]


def test_a_requeued_training_job_resumes_in_its_run_directory_to_the_same_weights(
    background: Background, outputs: Path, data_run: Path
) -> None:
    same_data = f"step.data_dir={data_run}"
    # the same training, never interrupted, in another experiment (so resume=auto cannot mix them)
    reference = background(*LONG, same_data, "experiment_name=reference")
    submitter = background("-m", "hydra/launcher=slurm_local", *LONG, same_data)

    sweep = outputs / "demo" / "pretrain" / "multirun"
    job_dir = wait_for("*/0/checkpoints/step_000010.ckpt", sweep).parents[1]
    job_id = json.loads((job_dir / "manifest.json").read_text())["host"]["slurm_job_id"]
    # 1. the warning SLURM sends before the time limit (or before preempting, with
    # SlurmctldParameters=preempt_send_user_signal): checkpoint, requeue, resume
    slurm("scancel", "--signal=USR2", job_id)
    warned = wait_for("0/manifest.json", job_dir.parent, lambda m: "requeues" in m)
    # 2. a requeue without warning (a node failure, preemption by SIGTERM) as soon as the next
    # attempt has saved the checkpoint of a validation step (40): it continues from that
    # checkpoint, which was saved before step 40's validation, and validates step 40 first
    # (whether or not the killed attempt got to it): the metrics log has that row exactly once
    after = (warned["requeues"][0]["step"] // 40 + 1) * 40
    assert after < 80, warned["requeues"]
    wait_for(f"0/checkpoints/step_{after:06d}.ckpt", job_dir.parent)
    slurm("scontrol", "requeue", job_id)

    stdout, stderr = submitter.communicate(timeout=300)
    assert submitter.returncode == 0, stderr
    assert reference.wait(timeout=300) == 0, reference.stderr.read() if reference.stderr else ""

    manifest = json.loads((job_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["run_dir"] == str(job_dir)
    assert manifest["metrics"]["steps"] == 80
    # the same SLURM job, started three times, one run in one directory
    assert manifest["restarts"] == 2 and manifest["host"]["slurm_job_id"] == job_id
    assert [p.name for p in job_dir.parent.iterdir() if p.name.isdigit()] == ["0"]
    [requeue] = manifest["requeues"]  # the warned one; the other came without warning
    saved = job_dir / "checkpoints" / f"step_{requeue['step']:06d}.ckpt"
    assert requeue["checkpoint"] == str(saved) and saved.is_file()
    assert requeue["slurm_job_id"] == job_id
    # the last attempt continued from a later checkpoint of the second one
    resumed = Path(manifest["resumed_from"])
    assert resumed.parent == job_dir / "checkpoints" and resumed != saved
    log = (job_dir.parent / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    # three starts; not submitit's "Requeued job" line: `scontrol requeue` ends the step, and
    # SLURM may kill rank 0 before submitit logs that the call returned
    assert log.count("Starting with JobEnvironment") == 3
    assert (job_dir / "launch_rank_1.log").is_file()  # rank 1 joined rank 0's directory
    assert "completed" in stdout

    # exact state: the weights and the metrics log of the run never interrupted
    [straight] = (outputs / "reference" / "pretrain").iterdir()
    a = weights(straight / "checkpoints" / "last.ckpt")
    b = weights(job_dir / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert metrics_log(job_dir) == metrics_log(straight)
