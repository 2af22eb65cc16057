"""Regression against a baseline: the metrics that got worse than a baseline by more than allowed.

A baseline is another run (the metrics of its manifest) or a file, YAML or JSON, of
`metric: value` (a `metrics:` mapping inside, as in a manifest, is read too). Each metric shared
by the run and the baseline whose better direction is known is compared:

    lower is better    names containing perplexity, ppl or loss
    higher is better   names containing accuracy, acc, exact_match, f1, bleu or rouge
    otherwise          what step.regression.directions says, or not compared (counts such as
                       exact_match_samples or val_tokens, times)

A tolerance (quark.core.schemas.tolerance) is how much worse a metric may get: a number (in the
metric's units) or a percentage of the baseline's value ("5%"); 0 allows no worsening at all.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError
from quark.core.schemas.tolerance import Tolerance, parse_tolerance

BASELINE_KEY = "step.regression.baseline"
BASELINE_ALLOWED = "give a run directory, or a YAML or JSON file of metric: number"
LOWER_IS_BETTER = re.compile(r"perplexity|ppl|loss")
HIGHER_IS_BETTER = re.compile(r"accuracy|(^|[/_])acc($|[/_,])|exact_match|f1|bleu|rouge")
# how much was measured, not how well: exact_match_samples, val_tokens, train_seconds
COUNTS = re.compile(r"_(samples|tokens|count|seconds|s)$")


def direction(metric: str, given: dict[str, str]) -> str | None:
    """'lower' or 'higher' (the better side of `metric`), or None when unknown."""
    if metric in given:
        return given[metric]
    name = metric.lower()
    if COUNTS.search(name):
        return None
    if LOWER_IS_BETTER.search(name):
        return "lower"
    if HIGHER_IS_BETTER.search(name):
        return "higher"
    return None


@dataclass(frozen=True)
class Comparison:
    """One metric of the run against its baseline."""

    metric: str
    value: float
    baseline: float
    tolerance: Tolerance
    direction: str

    @property
    def worse_by(self) -> float:
        """How much worse than the baseline (negative: better)."""
        change = self.value - self.baseline
        return change if self.direction == "lower" else -change

    @property
    def regressed(self) -> bool:
        return math.isnan(self.value) or self.worse_by > self.tolerance.allowed(self.baseline)

    def describe(self) -> str:
        return (
            f"{self.metric} {self.value:.6g} vs baseline {self.baseline:.6g} "
            f"(tolerance {self.tolerance}, {self.direction} is better)"
        )


@dataclass(frozen=True)
class Baseline:
    source: Path
    metrics: dict[str, float]


def read_baseline(spec: str) -> Baseline:
    """The metrics of a run directory's manifest, or of a YAML or JSON file.

    Raises:
        ConfigError: no such path, a directory that is not a run, a file that does not parse,
            or one that is not a mapping of metric names to numbers.
    """
    from quark.core.run import MANIFEST

    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(BASELINE_KEY, f"{path} does not exist", BASELINE_ALLOWED)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise ConfigError(BASELINE_KEY, f"{path} is not a run directory", BASELINE_ALLOWED)
        path = path / MANIFEST
    try:
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            BASELINE_KEY, f"{path} is unreadable ({_first_line(exc)})", BASELINE_ALLOWED
        ) from None
    except Exception as exc:  # yaml.YAMLError: PyYAML is imported only here
        raise ConfigError(
            BASELINE_KEY, f"{path} is not YAML ({_first_line(exc)})", BASELINE_ALLOWED
        ) from None
    if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
        data = data["metrics"]
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            BASELINE_KEY, f"{path} holds no mapping of metric names to numbers", BASELINE_ALLOWED
        )
    metrics = {}
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                BASELINE_KEY,
                f"{path}: the value of '{name}' is {value!r}, not a number",
                BASELINE_ALLOWED,
            )
        metrics[str(name)] = float(value)
    return Baseline(path.parent if path.name == MANIFEST else path, metrics)


def compare(
    metrics: dict[str, float],
    baseline: Baseline,
    tolerances: dict[str, Any],
    default_tolerance: Any,
    directions: dict[str, str],
) -> list[Comparison]:
    """Every metric of `metrics` that the baseline has and whose better side is known.

    Raises:
        ConfigError: a tolerance that names no compared metric (a typo would check nothing),
            or a baseline sharing no comparable metric with the run.
    """
    default = parse_tolerance("step.regression.default_tolerance", default_tolerance)
    compared = [
        name
        for name in metrics
        if name in baseline.metrics and direction(name, directions) is not None
    ]
    for name in tolerances:
        if name not in compared:
            raise ConfigError(
                f"step.regression.tolerances.{name}",
                "names no metric that this run measured and the baseline records",
                f"metrics compared: {', '.join(compared) or 'none'}",
            )
    if not compared:
        raise ConfigError(
            BASELINE_KEY,
            f"{baseline.source} shares no comparable metric with this run "
            f"(measured: {', '.join(metrics)}; baseline: {', '.join(baseline.metrics)})",
            "give a baseline of the same metrics, e.g. an earlier evaluate run",
        )
    return [
        Comparison(
            name,
            metrics[name],
            baseline.metrics[name],
            parse_tolerance(f"step.regression.tolerances.{name}", tolerances[name])
            if name in tolerances
            else default,
            str(direction(name, directions)),
        )
        for name in compared
    ]


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
