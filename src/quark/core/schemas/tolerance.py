"""How much worse a metric may get than its baseline, and which side of a metric is better.

Read from step.regression in conf/step/evaluate.yaml: checked by its schema before any run, and
applied by quark.eval.regression after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from quark.core.errors import ConfigError

TOLERANCE_ALLOWED = "allowed: a number >= 0 (absolute) or a percentage of the baseline, e.g. 5%"
# what step.regression.directions may say: the better side of a metric
DIRECTIONS = ("lower", "higher")


@dataclass(frozen=True)
class Tolerance:
    """How much worse a metric may get than its baseline: `amount` in the metric's units, or
    `amount` percent of the baseline's value."""

    amount: float
    relative: bool = False

    def allowed(self, baseline: float) -> float:
        return self.amount * abs(baseline) / 100.0 if self.relative else self.amount

    def __str__(self) -> str:
        return f"{self.amount:g}%" if self.relative else f"{self.amount:g}"


def parse_tolerance(key: str, value: Any) -> Tolerance:
    """A tolerance from config: a number >= 0, or a string like "5%".

    Raises:
        ConfigError: `key` holds a bool, a negative or non-finite number, or text that is not a
            number or a percentage.
    """
    text = str(value).strip()
    relative = text.endswith("%")
    try:
        amount = float(text[:-1] if relative else text)
    except ValueError:
        amount = math.nan
    if isinstance(value, bool) or not math.isfinite(amount) or amount < 0:
        raise ConfigError(key, f"'{value}' is not a tolerance", TOLERANCE_ALLOWED)
    return Tolerance(amount, relative)
