"""What the gateway's router has learnt about its backends, from outcomes it could check.

Each (backend, request kind) pair keeps a Beta posterior over its success rate (successes
and failures on top of a prior) and a moving average of its latency. Outcomes come from
checked answers (`record`) and from users' feedback on an earlier request (`feedback`, at
most one per request: a second replaces the first). The router picks a backend per request
by Thompson sampling (`choose`): a draw from each posterior, so a backend with few outcomes
still gets tried while the evidence is thin, and the better one wins once it is not.

Everything lives in one SQLite file (WAL), so what was learnt survives a restart of the
gateway; one connection behind a lock serves the gateway's threads.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

RULES = ("thompson", "greedy")
# weight of the newest call in the latency average: about the last ten calls count
LATENCY_ALPHA = 0.2

SCHEMA = """
CREATE TABLE IF NOT EXISTS estimates (
    backend TEXT NOT NULL,
    kind TEXT NOT NULL,
    successes REAL NOT NULL DEFAULT 0,
    failures REAL NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    mean_latency_s REAL,
    PRIMARY KEY (backend, kind)
);
-- every outcome in order: calls, and feedback (a replaced feedback stays in the log)
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    backend TEXT NOT NULL,
    kind TEXT NOT NULL,
    success INTEGER,
    latency_s REAL,
    request_id TEXT,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_by_request ON outcomes (request_id);
-- the feedback that counts, one per request
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY,
    success INTEGER NOT NULL
);
"""


@dataclass
class Estimate:
    """What is known of one backend on one kind of request."""

    backend: str
    kind: str
    successes: float
    failures: float
    calls: int
    mean_latency_s: float  # moving average (LATENCY_ALPHA) of the calls' latency; 0 if none
    prior_a: float = 1.0
    prior_b: float = 1.0

    def success_rate(self) -> float:
        """The posterior mean: (successes + 1) / (successes + failures + 2) under the
        uniform prior."""
        return (self.successes + self.prior_a) / (
            self.successes + self.failures + self.prior_a + self.prior_b
        )


class Outcomes:
    """Per backend and request kind, the outcomes seen so far, kept in the SQLite file `path`.

    `prior` is the Beta prior (a, b) of every backend's success rate: (1, 1) is uniform,
    larger values need more evidence to move."""

    def __init__(self, path: Path, prior: tuple[float, float] = (1.0, 1.0)) -> None:
        if min(prior) <= 0:
            raise ValueError(f"prior {prior}: both Beta parameters must be positive")
        self.path = Path(path)
        self.prior = prior
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(self.path, check_same_thread=False)
        with self._lock, self._connection:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> Outcomes:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def record(
        self,
        backend: str,
        kind: str,
        success: bool | None,
        latency_s: float | None = None,
        request_id: str | None = None,
    ) -> None:
        """One call of `backend` on a request of `kind`: whether its answer was right (None:
        it could not be checked, only the latency counts) and how long it took. A
        `request_id` lets feedback on the request reach this backend and kind later."""
        with self._lock, self._connection as connection:
            self._ensure_row(backend, kind)
            row = connection.execute(
                "SELECT mean_latency_s FROM estimates WHERE backend = ? AND kind = ?",
                (backend, kind),
            ).fetchone()
            mean = row[0]
            if latency_s is not None:
                mean = (
                    latency_s
                    if mean is None
                    else (1 - LATENCY_ALPHA) * mean + (LATENCY_ALPHA * latency_s)
                )
            connection.execute(
                "UPDATE estimates SET successes = successes + ?, failures = failures + ?,"
                " calls = calls + 1, mean_latency_s = ? WHERE backend = ? AND kind = ?",
                (float(success is True), float(success is False), mean, backend, kind),
            )
            self._log("call", backend, kind, success, latency_s, request_id)

    def feedback(self, request_id: str, success: bool) -> tuple[str, str] | None:
        """Count a user's verdict on the recorded request `request_id` for its backend and
        kind, which it returns; None if no call was recorded with that id. A second verdict
        on the same request replaces the first."""
        with self._lock, self._connection as connection:
            call = connection.execute(
                "SELECT backend, kind FROM outcomes WHERE request_id = ? AND source = 'call'"
                " ORDER BY id LIMIT 1",
                (request_id,),
            ).fetchone()
            if call is None:
                return None
            backend, kind = call
            previous = connection.execute(
                "SELECT success FROM feedback WHERE request_id = ?", (request_id,)
            ).fetchone()
            successes, failures = float(success), float(not success)
            if previous is not None:
                successes -= float(previous[0] == 1)
                failures -= float(previous[0] == 0)
            connection.execute(
                "UPDATE estimates SET successes = successes + ?, failures = failures + ?"
                " WHERE backend = ? AND kind = ?",
                (successes, failures, backend, kind),
            )
            connection.execute(
                "INSERT INTO feedback (request_id, success) VALUES (?, ?)"
                " ON CONFLICT (request_id) DO UPDATE SET success = excluded.success",
                (request_id, int(success)),
            )
            self._log("feedback", backend, kind, success, None, request_id)
            return backend, kind

    def estimates(self, kind: str | None = None) -> list[Estimate]:
        """What is known per backend and kind (of `kind` only, if given), in name order."""
        query = "SELECT backend, kind, successes, failures, calls, mean_latency_s FROM estimates"
        arguments: tuple[str, ...] = ()
        if kind is not None:
            query += " WHERE kind = ?"
            arguments = (kind,)
        with self._lock:
            rows = self._connection.execute(query + " ORDER BY backend, kind", arguments)
            return [
                Estimate(b, k, s, f, n, latency or 0.0, *self.prior)
                for b, k, s, f, n, latency in rows.fetchall()
            ]

    def choose(
        self,
        kind: str,
        backends: list[str],
        rule: str = "thompson",
        rng: random.Random | None = None,
        latency_weight: float = 0.0,
    ) -> tuple[str, dict[str, float]]:
        """The backend to call for a request of `kind`, and each backend's score (for the
        decision log). A score is a draw from the backend's Beta posterior ("thompson") or
        its mean ("greedy"), less `latency_weight` times its mean latency in seconds. A
        backend never seen scores by the prior alone; ties go to the first listed."""
        if not backends:
            raise ValueError(f"no backends to choose from for a '{kind}' request")
        if rule not in RULES:
            raise ValueError(f"rule '{rule}' is unknown; allowed: {', '.join(RULES)}")
        rng = rng or random.Random()
        known = {estimate.backend: estimate for estimate in self.estimates(kind)}
        scores = {}
        for backend in backends:
            estimate = known.get(backend) or Estimate(backend, kind, 0.0, 0.0, 0, 0.0, *self.prior)
            if rule == "thompson":
                a, b = self.prior
                score = rng.betavariate(estimate.successes + a, estimate.failures + b)
            else:
                score = estimate.success_rate()
            scores[backend] = score - latency_weight * estimate.mean_latency_s
        chosen = max(backends, key=lambda backend: scores[backend])
        return chosen, scores

    def history(self) -> list[dict[str, Any]]:
        """Every outcome in the order it came: source (call | feedback), backend, kind,
        success (None: unchecked), latency_s, request_id and time (Unix seconds)."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT source, backend, kind, success, latency_s, request_id, time"
                " FROM outcomes ORDER BY id"
            ).fetchall()
        return [
            {
                "source": source,
                "backend": backend,
                "kind": kind,
                "success": None if success is None else bool(success),
                "latency_s": latency_s,
                "request_id": request_id,
                "time": at,
            }
            for source, backend, kind, success, latency_s, request_id, at in rows
        ]

    def _ensure_row(self, backend: str, kind: str) -> None:
        self._connection.execute(
            "INSERT OR IGNORE INTO estimates (backend, kind) VALUES (?, ?)", (backend, kind)
        )

    def _log(
        self,
        source: str,
        backend: str,
        kind: str,
        success: bool | None,
        latency_s: float | None,
        request_id: str | None,
    ) -> None:
        self._connection.execute(
            "INSERT INTO outcomes (source, backend, kind, success, latency_s, request_id, time)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                source,
                backend,
                kind,
                None if success is None else int(success),
                latency_s,
                request_id,
                time.time(),
            ),
        )
