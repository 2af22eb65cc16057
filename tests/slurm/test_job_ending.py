"""quark.slurm.launcher's judgement of a failed rank: a failure that comes as SLURM ends the job
(a requeue, a cancel) is no job result, even where a peer's exit reached this rank before
SLURM's SIGTERM did; a failure with no SIGTERM on its way is the job's result."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

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
