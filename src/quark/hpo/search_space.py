"""The search space of a study: `hydra.sweeper.params` in YAML, as Optuna distributions.

    params:
      step.optim.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
      step.optim.warmup_steps: {type: int, low: 0, high: 40, step: 10}
      trainer.micro_batch_size: {type: categorical, choices: [4, 8, 16]}

A key is a config key as the command line writes it (a config group such as `model` works
too); a trial sets it with an override `key=value`. A command-line sweep `key=a,b,c` joins the
space as a categorical. Every range is checked here, before any trial runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from quark.core.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

PARAMS_KEY = "hydra.sweeper.params"
TYPES = ("float", "int", "categorical")
SPEC_KEYS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}
SPEC_EXAMPLE = "e.g. {type: float, low: 1.0e-4, high: 1.0e-2, log: true}"


def parse_search_space(params: Mapping[str, Any] | None) -> dict[str, BaseDistribution]:
    """Optuna distributions by config key, from the `params` mapping of the sweeper config.

    Raises:
        ConfigError: a spec that is not a mapping, an unknown type or spec key, low >= high,
            a log scale with low <= 0, a step <= 0, log with step, empty or non-scalar choices.
    """
    return {str(key): parse_param(str(key), spec) for key, spec in (params or {}).items()}


def parse_param(key: str, spec: Any, where: str | None = None) -> BaseDistribution:
    """One parameter's distribution; errors name `where` (default: its key under params)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    where = where or f"{PARAMS_KEY}.{key}"
    if not isinstance(spec, Mapping):
        raise ConfigError(where, f"'{spec}' is not a search spec", SPEC_EXAMPLE)
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(
            f"{where}.type", f"'{kind}' is not a search type", f"allowed: {', '.join(TYPES)}"
        )
    unknown = [str(name) for name in spec if name not in SPEC_KEYS[kind]]
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}",
            f"not a key of a {kind} search spec",
            f"allowed: {', '.join(SPEC_KEYS[kind])}",
        )
    if kind == "categorical":
        return CategoricalDistribution(_choices(where, spec.get("choices")))
    number = float if kind == "float" else int
    low, high = (_number(f"{where}.{bound}", spec.get(bound), number) for bound in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log", f"'{log}' is not a boolean", "allowed: true, false")
    step = spec.get("step")
    if step is not None:
        step = _number(f"{where}.step", step, number)
    if low >= high:
        raise ConfigError(where, f"low {low} is not below high {high}", "allowed: low < high")
    if log and low <= 0:
        raise ConfigError(where, f"log scale with low {low}", "allowed: low > 0 when log: true")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}.step", f"{step} is not positive", "allowed: step > 0")
    if log and step is not None:
        raise ConfigError(where, "log and step together", "give one of them")
    if kind == "float":
        return FloatDistribution(low, high, log=log, step=step)
    return IntDistribution(int(low), int(high), log=log, step=int(step or 1))


def _number(key: str, value: Any, number: type) -> Any:
    """`value` as a float or an int (a YAML string such as '1e-4' too), or ConfigError."""
    kind = "a float" if number is float else "an integer"
    if value is None:
        raise ConfigError(key, "not set", "a float or int search spec needs low and high")
    try:
        converted = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    except (TypeError, ValueError):
        converted = math.nan
    if (
        isinstance(value, bool)
        or not math.isfinite(converted)
        or (number is int and not converted.is_integer())
    ):
        raise ConfigError(key, f"'{value}' is not {kind}", f"give {kind}")
    return number(converted)


def _choices(key: str, choices: Any) -> tuple[Any, ...]:
    if isinstance(choices, str) or not isinstance(choices, Iterable):
        raise ConfigError(
            f"{key}.choices", f"'{choices}' is not a list", "e.g. choices: [4, 8, 16]"
        )
    found = tuple(choices)
    if not found:
        raise ConfigError(f"{key}.choices", "empty", "give at least one choice")
    for choice in found:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise ConfigError(
                f"{key}.choices",
                f"'{choice}' is not a number, string, boolean or null",
                "write a list as a string in override syntax, e.g. '[q_proj,v_proj]'",
            )
    return found


def command_line_space(arguments: list[str], parse: Any) -> tuple[list[str], dict[str, Any]]:
    """The command line split into fixed overrides and sweeps, which join the search space:
    `key=a,b,c` a categorical, `key=range(0,40,10)` an int (or stepped float),
    `key=interval(0.9,0.999)` a float, `key=tag(log,interval(1e-4,1e-2))` a log-scale float.

    `parse` is Hydra's override parser (`OverridesParser.parse_overrides`).
    """
    fixed, space = [], {}
    for override in parse(arguments):
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        key = override.get_key_element()
        sweep = override.value()
        if override.is_choice_sweep():
            spec: dict[str, Any] = {
                "type": "categorical",
                "choices": list(override.sweep_string_iterator()),
            }
        elif override.is_range_sweep():
            values = list(sweep.range())
            numbers = [sweep.start, sweep.stop, sweep.step]
            kind = "int" if all(isinstance(n, int) for n in numbers) else "float"
            spec = {
                "type": kind,
                "low": values[0] if values else sweep.start,
                "high": values[-1] if values else sweep.start,
                "step": sweep.step,
            }
        else:  # interval
            spec = {
                "type": "float",
                "low": sweep.start,
                "high": sweep.end,
                "log": "log" in sweep.tags,
            }
        space[key] = parse_param(key, spec, where=key)
    return fixed, space


def override_value(value: Any) -> str:
    """`value` as a Hydra override writes it: strings pass as written (override syntax)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def in_space(distribution: BaseDistribution, value: Any) -> bool:
    """Whether `value` is a value of `distribution` (for warm-starting from another study)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    low, high = distribution.low, distribution.high  # type: ignore[attr-defined]
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
