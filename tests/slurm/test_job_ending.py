"""quark.slurm.launcher's judgement of a failed rank: a failure that comes as SLURM ends the job
(a requeue, a cancel) is no job result, even where a peer's exit reached this rank before
SLURM's SIGTERM did; a failure with no SIGTERM on its way is the job's result. A failed task then exits
with status 1 (srun ends the others), a rank other than 0 only if rank 0 has not ended by
itself."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from quark.slurm import launcher


@pytest.fixture
def noted() -> Iterator[launcher._SigtermNoted]:
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what the noter hands on to: nothing
    try:
        yield launcher._SigtermNoted()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_that_arrives_after_the_failure_still_marks_the_job_ending(
    noted: launcher._SigtermNoted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_NTASKS", "2")
    # the peer has gone (this rank failed in a collective); SLURM's signal comes a moment later
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    assert launcher._ending_by_slurm(noted, grace_s=5.0)
    assert time.monotonic() - started < 4.0  # it stopped waiting once the signal came


def test_a_failure_with_no_signal_is_the_jobs_result(
    noted: launcher._SigtermNoted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert not launcher._ending_by_slurm(noted, grace_s=0.3)
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: no peer to outrun the signal, no wait
    started = time.monotonic()
    assert not launcher._ending_by_slurm(noted, grace_s=30.0)
    assert time.monotonic() - started < 1.0


def test_a_sigterm_already_seen_is_the_end_without_waiting(
    noted: launcher._SigtermNoted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_NTASKS", "2")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # the handler runs in the main thread at its next bytecode
    assert noted.seen and launcher._ending_by_slurm(noted, grace_s=30.0)


class Exited(Exception):
    pass


@pytest.fixture
def job_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A submitit job folder for job 7, this process its task 1; os._exit raises Exited."""
    import submitit

    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path / "%j"))
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: SimpleNamespace(job_id="7"))

    def exit_(status: int) -> None:
        raise Exited(status)

    monkeypatch.setattr(launcher.os, "_exit", exit_)
    (tmp_path / "7").mkdir()
    return tmp_path / "7"


def test_a_failed_rank_other_than_0_ends_the_job_unless_rank_0_ends_by_itself(
    job_folder: Path,
) -> None:
    # rank 0 still running after the grace: it waits for this rank; exit 1 so srun ends it
    with pytest.raises(Exited, match="1"):
        launcher._end_the_other_tasks(rank=1, grace_s=0.3)
    # rank 0 saved its result (it failed as well, or finished): a normal exit
    (job_folder / "7_0_result.pkl").write_bytes(b"")
    launcher._end_the_other_tasks(rank=1, grace_s=30.0)


def test_a_failed_rank_0_ends_the_job_at_once(job_folder: Path) -> None:
    started = time.monotonic()
    with pytest.raises(Exited, match="1"):
        launcher._end_the_other_tasks(rank=0, grace_s=30.0)
    assert time.monotonic() - started < 5.0
