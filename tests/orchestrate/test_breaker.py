"""The circuit breaker: opens after failures in a row, refuses during the cooldown, lets one
probe through after it, and closes or opens again on the probe's outcome."""

from __future__ import annotations

from quark.orchestrate.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_failures_in_a_row_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures_to_open=3, cooldown_s=10, clock=Clock())
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allow() and not breaker.available()
    assert breaker.snapshot()["retry_in_s"] == 10.0


def test_one_probe_after_the_cooldown_closes_or_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=1, cooldown_s=5, clock=clock)
    breaker.failure()
    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.available()
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.failure()
    assert breaker.state == OPEN and breaker.times_opened == 2
    clock.now = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow() and breaker.allow()


def test_a_probe_that_ended_without_an_outcome_lets_another_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=1, cooldown_s=1, clock=clock)
    breaker.failure()
    clock.now = 2.0
    assert breaker.allow() and not breaker.allow()
    breaker.release()
    assert breaker.allow()
