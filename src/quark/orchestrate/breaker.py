"""A circuit breaker per backend: a backend that keeps failing is taken out of rotation, so
requests go to the others at once instead of waiting on its timeouts, and is probed back in.

closed     requests pass; `failures_to_open` failures in a row open it
open       requests are refused without trying, until `cooldown_s` has passed
half_open  one request passes as the probe: success closes the breaker, failure opens it again
           for another cooldown

Only faults of the backend count (refused connections, timeouts, 5xx): a 4xx says the request
was wrong, not the backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failures_to_open: int = 3,
        cooldown_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.state = CLOSED
        self.failures = 0  # in a row
        self.opened_at = 0.0
        self.times_opened = 0
        self._probing = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a request may go to the backend now (the one probe, when half open)."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self.clock() - self.opened_at >= self.cooldown_s:
                self.state = HALF_OPEN
                self._probing = False
            if self.state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def available(self) -> bool:
        """Whether `allow` would let a request through, without claiming the probe."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN:
                return self.clock() - self.opened_at >= self.cooldown_s
            return not self._probing

    def success(self) -> None:
        with self._lock:
            self.state, self.failures, self._probing = CLOSED, 0, False

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.state == HALF_OPEN or self.failures >= self.failures_to_open:
                if self.state != OPEN:
                    self.times_opened += 1
                self.state, self.opened_at, self._probing = OPEN, self.clock(), False

    def release(self) -> None:
        """The probe ended without telling either way (the client left): let another probe."""
        with self._lock:
            self._probing = False

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            retry_in = max(0.0, self.cooldown_s - (self.clock() - self.opened_at))
            return {
                "state": self.state,
                "failures_in_a_row": self.failures,
                "times_opened": self.times_opened,
                **({"retry_in_s": round(retry_in, 1)} if self.state == OPEN else {}),
            }
