"""Rewrites Hydra's and OmegaConf's config errors as one line: key, what is wrong, what is allowed."""

from __future__ import annotations

import re

import yaml
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from quark.core.errors import one_line


def describe_hydra_error(exc: BaseException) -> str | None:
    """One line for a Hydra or OmegaConf config error, or None if `exc` is not one."""
    if isinstance(exc, MissingConfigException):
        return _missing_option(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        return _yaml(exc)
    if isinstance(exc, OverrideParseException):
        return f"{one_line(str(exc))}; overrides look like key=value, +key=value or group=option"
    if isinstance(exc, ConfigCompositionException):
        return _composition(exc)
    if isinstance(exc, MissingMandatoryValue):
        key = _full_key(exc)
        return f"{key}: no value given (???); set it on the command line, e.g. {key}=..."
    if isinstance(exc, InterpolationResolutionError):
        return f"{_full_key(exc)}: {_first_line(exc)}"
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        return f"{_full_key(exc)}: no such key"
    if isinstance(exc, ValidationError):
        return f"{_full_key(exc)}: {_first_line(exc)}"
    if isinstance(exc, OmegaConfBaseException):
        return f"{_full_key(exc)}: {_first_line(exc)}"
    if isinstance(exc, OSError) and _raised_making_run_dir(exc):
        return (
            f"paths.output_dir: the run directory {exc.filename} cannot be made "
            f"({exc.strerror}); allowed: a writable directory, or a path one can be made at "
            "(QUARK_OUTPUT_DIR sets it too)"
        )
    return None


def _raised_making_run_dir(exc: OSError) -> bool:
    """Whether Hydra raised `exc` making the run's directory (before the task function: the
    run directory comes from hydra.run.dir, under paths.output_dir)."""
    frame = exc.__traceback__
    while frame is not None:
        code = frame.tb_frame.f_code
        if code.co_name == "run_job" and code.co_filename.endswith("hydra/core/utils.py"):
            return True
        frame = frame.tb_next
    return False


def _missing_option(exc: MissingConfigException) -> str:
    path = exc.missing_cfg_file or ""
    if "/" in path:
        group, option = path.rsplit("/", 1)
        options = ", ".join(sorted(exc.options or [])) or "none"
        noun = "step" if group == "step" else "option"
        return f"{group}={option}: no such {noun}; available: {options}"
    return f"{path or 'config'}: not found; {_first_line(exc)}"


def _yaml(exc: yaml.MarkedYAMLError) -> str:
    """A config file that is not YAML: the file, line and column, and the parser's problem."""
    mark = exc.problem_mark or exc.context_mark
    where = f"{mark.name}: line {mark.line + 1}, column {mark.column + 1}" if mark else "config"
    problem = exc.problem or exc.context or "unreadable"
    return (
        f"{where}: not valid YAML ({problem}); fix the file (a value holding brackets, braces "
        "or ': ' needs quotes, e.g. - 'step.tasks=[red_team]')"
    )


def _composition(exc: ConfigCompositionException) -> str:
    text = str(exc)
    override = re.search(r"Could not override '([^']+)'", text)
    cause = exc.__cause__
    if override:
        key = override.group(1)
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            return _unknown_key(key)
        if cause is not None:
            return f"{key}: {_first_line(cause)}"
    if "Could not append to config" in text and isinstance(cause, Exception):
        return f"{_first_line(exc)}: {_first_line(cause)}"
    return _first_line(exc)


def _unknown_key(key: str) -> str:
    from quark.core.schemas import allowed_keys

    parent, _, name = key.rpartition(".")
    keys = allowed_keys(parent)
    if name in keys:
        # the schema knows the key, but the chosen option leaves it out
        hint = f"add it with +{key}=VALUE"
        if parent == "step":
            hint += f" (with pipeline=...: ++{key}=VALUE reaches the stages whose step has it)"
        return f"{key}: not set by the chosen {parent.split('.')[0]} option; {hint}"
    if keys:
        return f"{key}: no such key; keys allowed in {parent or 'the top level'}: {', '.join(keys)}"
    return f"{key}: no such key"


def _full_key(exc: BaseException) -> str:
    key = getattr(exc, "full_key", None)
    return str(key) if key else "config"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [
        line for line in lines if not line.startswith(("full_key:", "object_type", "reference"))
    ]
    return one_line(kept[0] if kept else type(exc).__name__)
