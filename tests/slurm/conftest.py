"""The one-node Slurm cluster the `slurm` tests submit to: started once per test session, when
the first test that uses it runs (`SLURM` below), by scripts/slurm-cluster in the session's
temporary directory, and stopped at the end. Tests reach it through SLURM_CONF, which `launch`
passes on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..conftest import REPO

SCRIPT = REPO / "scripts" / "slurm-cluster"
# scripts/slurm-cluster's exit statuses for "cannot run here", as opposed to "broken"
NOT_ROOT, NO_PACKAGES = 3, 4


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Start the cluster (installing Debian's Slurm and MariaDB if missing), yield its state
    directory with SLURM_CONF set, stop it. Skips only where it cannot run (not root, no
    package mirror); a cluster that fails to start is a failure."""
    state = tmp_path_factory.mktemp("slurm")
    started = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=900
    )
    if done.returncode in (NOT_ROOT, NO_PACKAGES):
        pytest.skip(f"no local Slurm cluster: {done.stderr.strip().splitlines()[-1]}")
    if done.returncode != 0:
        subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True, timeout=120)
        pytest.fail(f"scripts/slurm-cluster start failed:\n{done.stderr}", pytrace=False)
    print(f"\nlocal Slurm cluster up in {time.monotonic() - started:.1f} s ({state})")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    try:
        yield state
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True, timeout=120)


# what a test module that submits jobs declares: `pytestmark = SLURM`
SLURM = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def slurm(*args: str) -> str:
    """A Slurm command's output (squeue, sacct, scancel, scontrol) against the test cluster."""
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


Background = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def background(outputs: Path) -> Iterator[Background]:
    """Start `python launch.py ARGS` as `launch` does, but in the background (to act on its jobs
    while it waits for them); one still running when the test ends is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        environ = {k: v for k, v in os.environ.items() if k != "QUARK_DEBUG"}
        process = subprocess.Popen(
            [sys.executable, "launch.py", *args],
            cwd=REPO,
            env={**environ, "QUARK_OUTPUT_DIR": str(outputs)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()
