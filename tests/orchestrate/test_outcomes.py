"""The router's memory of its backends: it persists, learns the better backend per kind,
counts feedback once per request, and trades success against latency when asked."""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

import pytest

from quark.orchestrate.outcomes import Estimate, Outcomes


def simulate(
    outcomes: Outcomes, kind: str, rates: dict[str, float], rounds: int, seed: int
) -> list[str]:
    """`rounds` of choose-then-record against backends that succeed at `rates`; the choices."""
    rng = random.Random(seed)
    chosen = []
    for _ in range(rounds):
        backend, _ = outcomes.choose(kind, sorted(rates), rng=rng)
        outcomes.record(backend, kind, rng.random() < rates[backend], latency_s=0.1)
        chosen.append(backend)
    return chosen


def test_what_was_learnt_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "router" / "outcomes.sqlite"
    with Outcomes(path) as outcomes:
        outcomes.record("a", "code", True, latency_s=2.0, request_id="r1")
        outcomes.record("a", "code", False, latency_s=1.0)
        outcomes.record("a", "code", None, latency_s=1.0)  # unverifiable: latency only
    with Outcomes(path) as reopened:
        (estimate,) = reopened.estimates("code")
        assert (estimate.successes, estimate.failures, estimate.calls) == (1.0, 1.0, 3)
        # moving average: 2.0, then 0.8 * 2.0 + 0.2 * 1.0, then again with 1.0
        assert estimate.mean_latency_s == pytest.approx(0.8 * 1.8 + 0.2 * 1.0)
        assert estimate.success_rate() == pytest.approx(2 / 4)
        assert reopened.feedback("r1", False) == ("a", "code")  # ids survive too
        assert [h["success"] for h in reopened.history()] == [True, False, None, False]


def test_thompson_sampling_settles_on_the_better_backend(tmp_path: Path) -> None:
    with Outcomes(tmp_path / "o.sqlite") as outcomes:
        chosen = simulate(outcomes, "x", {"a": 0.9, "b": 0.3}, rounds=300, seed=0)
        assert Counter(chosen[-100:])["a"] > 80
        # but it tried the worse one while it knew little
        assert "b" in chosen[:30]


def test_each_kind_learns_its_own_best_backend(tmp_path: Path) -> None:
    with Outcomes(tmp_path / "o.sqlite") as outcomes:
        on_x = simulate(outcomes, "x", {"a": 0.9, "b": 0.3}, rounds=300, seed=1)
        on_y = simulate(outcomes, "y", {"a": 0.2, "b": 0.85}, rounds=300, seed=2)
        assert Counter(on_x[-100:])["a"] > 80
        assert Counter(on_y[-100:])["b"] > 80
        rates = {(e.backend, e.kind): e.success_rate() for e in outcomes.estimates()}
        assert rates[("a", "x")] > rates[("b", "x")] and rates[("b", "y")] > rates[("a", "y")]
        assert {e.kind for e in outcomes.estimates("y")} == {"y"}


def test_feedback_counts_once_per_request_and_the_last_verdict_wins(tmp_path: Path) -> None:
    with Outcomes(tmp_path / "o.sqlite") as outcomes:
        outcomes.record("a", "docs", None, latency_s=0.5, request_id="r1")
        assert outcomes.feedback("r1", True) == ("a", "docs")
        assert outcomes.feedback("r1", True) == ("a", "docs")
        (estimate,) = outcomes.estimates("docs")
        assert (estimate.successes, estimate.failures) == (1.0, 0.0)
        outcomes.feedback("r1", False)  # the user changed their mind
        (estimate,) = outcomes.estimates("docs")
        assert (estimate.successes, estimate.failures, estimate.calls) == (0.0, 1.0, 1)
        # the log keeps every verdict, marked as feedback
        assert [(h["source"], h["success"]) for h in outcomes.history()] == [
            ("call", None),
            ("feedback", True),
            ("feedback", True),
            ("feedback", False),
        ]


def test_feedback_on_an_unknown_request_changes_nothing(tmp_path: Path) -> None:
    with Outcomes(tmp_path / "o.sqlite") as outcomes:
        outcomes.record("a", "docs", True, request_id="r1")
        assert outcomes.feedback("nobody-sent-this", False) is None
        (estimate,) = outcomes.estimates()
        assert (estimate.successes, estimate.failures) == (1.0, 0.0)
        assert len(outcomes.history()) == 1


def test_latency_weight_picks_the_faster_of_two_equally_good_backends(tmp_path: Path) -> None:
    with Outcomes(tmp_path / "o.sqlite") as outcomes:
        for success in [True] * 8 + [False] * 2:
            outcomes.record("slow", "code", success, latency_s=3.0)
            outcomes.record("fast", "code", success, latency_s=0.2)
        backends = ["slow", "fast"]
        # without a weight the choice is greedy's tie: the first listed
        assert outcomes.choose("code", backends, rule="greedy")[0] == "slow"
        assert outcomes.choose("code", backends, rule="greedy", latency_weight=0.1)[0] == "fast"
        rng = random.Random(0)
        picks = Counter(
            outcomes.choose("code", backends, rng=rng, latency_weight=0.1)[0] for _ in range(200)
        )
        assert picks["fast"] > 180
        _, scores = outcomes.choose("code", backends, rule="greedy", latency_weight=0.1)
        assert scores["slow"] == pytest.approx(9 / 12 - 0.3)
        assert scores["fast"] == pytest.approx(9 / 12 - 0.02)


def test_greedy_takes_the_best_posterior_mean_and_unseen_backends_score_the_prior(
    tmp_path: Path,
) -> None:
    with Outcomes(tmp_path / "o.sqlite", prior=(2.0, 2.0)) as outcomes:
        for success in (True, True, True, False):
            outcomes.record("a", "x", success)
        outcomes.record("b", "x", False)
        chosen, scores = outcomes.choose("x", ["b", "new", "a"], rule="greedy")
        assert chosen == "a"
        assert scores == pytest.approx({"a": 5 / 8, "new": 0.5, "b": 2 / 5})
        # the estimates carry the store's prior into their posterior mean
        rates = {e.backend: e.success_rate() for e in outcomes.estimates("x")}
        assert rates == pytest.approx({"a": 5 / 8, "b": 2 / 5})
    assert Estimate("a", "x", 3.0, 1.0, 4, 0.0).success_rate() == pytest.approx(4 / 6)


def test_bad_choices_are_refused(tmp_path: Path) -> None:
    with Outcomes(tmp_path / "o.sqlite") as outcomes:
        with pytest.raises(ValueError, match="allowed: thompson, greedy"):
            outcomes.choose("x", ["a"], rule="epsilon")
        with pytest.raises(ValueError, match="no backends"):
            outcomes.choose("x", [])
    with pytest.raises(ValueError, match="prior"):
        Outcomes(tmp_path / "p.sqlite", prior=(0.0, 1.0))


def test_threads_can_record_and_choose_at_once(tmp_path: Path) -> None:
    with Outcomes(tmp_path / "o.sqlite") as outcomes:
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            rng = random.Random(worker)
            try:
                for step in range(50):
                    backend, _ = outcomes.choose("x", ["a", "b"], rng=rng)
                    outcomes.record(
                        backend, "x", step % 2 == 0, 0.01, request_id=f"{worker}-{step}"
                    )
                    if step % 10 == 0:
                        outcomes.feedback(f"{worker}-{step}", True)
            except BaseException as error:  # surfaced by the assert below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        estimates = outcomes.estimates("x")
        assert sum(e.calls for e in estimates) == 8 * 50
        # half the calls succeeded, plus 5 feedbacks per worker on successful calls
        assert sum(e.successes for e in estimates) == 8 * 25 + 8 * 5
        assert sum(e.failures for e in estimates) == 8 * 25
        assert len(outcomes.history()) == 8 * 55
