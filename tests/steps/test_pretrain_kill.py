"""A pretrain run killed mid-training (SIGKILL, no chance to clean up) resumes with
`step.resume=auto` and ends with exactly the weights of a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from quark.training.resume import newest_checkpoint

from ..conftest import REPO, LaunchFn, manifests
from .test_pretrain import TRAIN, data_run, pretrain_runs, weights

__all__ = ["data_run"]  # the fixture, imported for the tests below

LONG = [*TRAIN, "step.max_steps=40", "step.checkpoint_every_n_steps=4", "step.val_every_n_steps=20"]


def launch_and_kill_after_first_checkpoint(outputs: Path) -> Path:
    """Start a pretrain launch, SIGKILL its process group once step 4's checkpoint exists,
    and return the killed run's directory."""
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs)}
    process = subprocess.Popen(
        [sys.executable, "launch.py", *LONG],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and process.poll() is None:
            found = list((outputs / "demo" / "pretrain").glob("*/checkpoints/step_000004.ckpt"))
            if found:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                return found[0].parent.parent
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"no checkpoint to kill after (exit status {process.returncode})")


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    killed = launch_and_kill_after_first_checkpoint(outputs)
    [record] = pretrain_runs(outputs)
    # killed for real: the manifest still says running, the run never finished its 40 steps
    assert record["status"] == "running"
    newest = newest_checkpoint(killed / "checkpoints")
    assert newest is not None
    assert 4 <= int(torch.load(newest, weights_only=False)["global_step"]) < 40

    launch(*LONG, "step.resume=auto", check=True)
    resumed = pretrain_runs(outputs)[-1]
    assert resumed["resumed_from"] == str(newest)
    assert resumed["metrics"]["steps"] == 40

    launch(*LONG, check=True)
    straight = pretrain_runs(outputs)[-1]
    assert straight["resumed_from"] is None
    a = weights(Path(straight["run_dir"]) / "checkpoints" / "last.ckpt")
    b = weights(Path(resumed["run_dir"]) / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert len(manifests(outputs)) == 4  # data, killed, resumed, straight
