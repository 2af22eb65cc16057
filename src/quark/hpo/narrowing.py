"""Earlier trials' parameters fitted to this study's search space, and the space narrowed to
where the best of them lie (for `warm_start.source: auto`).

A numeric range becomes the span of the best trials' values (on the log scale for a log
parameter), widened on each side by `margin` times that span and kept inside the configured
range; a span narrower than a tenth of the configured range counts as a tenth, so trials that
agree on one value still leave room around it. A categorical, when asked, keeps the choices the
best trials took; there is no margin for it, so a choice the earlier studies never tried with
good values of the other parameters is gone for good, which is why it is asked for separately
(warm_start.narrow_choices). A parameter the earlier trials never set keeps its distribution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

# The narrowest span a range is widened from, as a fraction of the configured range
MIN_SPAN_FRACTION = 0.1


def fit_to_space(
    params: Mapping[str, Any], space: Mapping[str, BaseDistribution]
) -> dict[str, Any]:
    """The values of `params` that this space searches, each a value of its distribution:
    a number clipped to the range (and rounded to its step or to an integer); a categorical
    value kept only when it is one of the choices."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    fitted: dict[str, Any] = {}
    for key, value in params.items():
        distribution = space.get(key)
        if distribution is None:
            continue
        if isinstance(distribution, CategoricalDistribution):
            if value in distribution.choices:
                fitted[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high = distribution.low, distribution.high  # type: ignore[attr-defined]
        step = distribution.step  # type: ignore[attr-defined]
        number = min(max(float(value), low), high)
        if step is not None:
            number = _on_grid(low, step, round((number - low) / step), high)
        if isinstance(distribution, IntDistribution):
            fitted[key] = min(max(round(number), low), high)
        else:
            fitted[key] = number
    return fitted


def narrow_space(
    space: Mapping[str, BaseDistribution],
    best: Iterable[Mapping[str, Any]],
    margin: float,
    choices: bool,
) -> dict[str, BaseDistribution]:
    """`space` narrowed to where the parameter sets `best` lie (values already fitted to the
    space, as fit_to_space returns them), categoricals too when `choices`; see the module."""
    from optuna.distributions import CategoricalDistribution

    chosen = list(best)
    narrowed: dict[str, BaseDistribution] = {}
    for key, distribution in space.items():
        values = [params[key] for params in chosen if key in params]
        categorical = isinstance(distribution, CategoricalDistribution)
        if not values or (categorical and not choices):
            narrowed[key] = distribution
        elif categorical:
            kept = tuple(c for c in distribution.choices if c in values)  # type: ignore[attr-defined]
            narrowed[key] = CategoricalDistribution(kept) if kept else distribution
        else:
            narrowed[key] = _narrow_range(distribution, values, margin)
    return narrowed


def _narrow_range(distribution: Any, values: list[Any], margin: float) -> BaseDistribution:
    from optuna.distributions import IntDistribution

    log, step = distribution.log, distribution.step
    scale = math.log if log else float
    lowest, highest = scale(distribution.low), scale(distribution.high)
    points = [scale(v) for v in values]
    span = max(max(points) - min(points), MIN_SPAN_FRACTION * (highest - lowest))
    low = max(lowest, min(points) - margin * span)
    high = min(highest, max(points) + margin * span)
    low, high = (math.exp(low), math.exp(high)) if log else (low, high)
    if step is not None:  # outwards to the configured grid, so every grid value inside stays
        first = distribution.low
        low = _on_grid(first, step, math.floor((low - first) / step + 1e-9), distribution.high)
        high = _on_grid(first, step, math.ceil((high - first) / step - 1e-9), distribution.high)
    if isinstance(distribution, IntDistribution):
        low, high = math.floor(low + 1e-9), math.ceil(high - 1e-9)
    low = min(max(low, distribution.low), distribution.high)
    high = min(max(high, low), distribution.high)
    return type(distribution)(low, high, log=log, step=step)


def _on_grid(first: float, step: float, index: int, last: float) -> Any:
    """The grid value first + index * step, exactly (no float residue Optuna would warn
    about), no higher than `last`."""
    if isinstance(first, int) and isinstance(step, int):
        return min(first + index * step, last)
    value = float(Decimal(str(first)) + index * Decimal(str(step)))
    return min(value, last)


def describe(distribution: BaseDistribution) -> dict[str, Any]:
    """A distribution as warm_start.json and the log show it: low, high (log, step) or choices."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return {"choices": list(distribution.choices)}
    described = {"low": distribution.low, "high": distribution.high}  # type: ignore[attr-defined]
    if distribution.log:  # type: ignore[attr-defined]
        described["log"] = True
    step = distribution.step  # type: ignore[attr-defined]
    if step is not None and not (isinstance(distribution, IntDistribution) and step == 1):
        described["step"] = step
    return described
