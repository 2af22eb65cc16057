"""Field helpers that attach range and choice rules to dataclass schema fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any


def ranged(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A field whose numeric value must lie in the given bounds (None is always allowed)."""
    bounds = {
        name: v for name, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None
    }
    return field(default=default, metadata=bounds)


def choice(default: Any, options: Sequence[str]) -> Any:
    """A string field whose value must be one of `options`."""
    return field(default=default, metadata={"choices": tuple(options)})


def pattern(default: Any, regex: str, description: str) -> Any:
    """A string field whose value must match `regex` (described to users as `description`)."""
    return field(default=default, metadata={"pattern": regex, "pattern_description": description})
