"""The guard a `safety` config describes, for the steps that check text with it."""

from __future__ import annotations

from typing import Any

from quark.safety.rules import RuleGuard


def build_guard(safety: Any) -> RuleGuard | None:
    """The guard of `cfg.safety` (None for safety=none, or a config without the group)."""
    if safety is None or str(safety.get("name", "none")) == "none":
        return None
    lists = {str(k): [str(p) for p in v] for k, v in (safety.get("lists") or {}).items()}
    return RuleGuard.from_lists(lists, patterns=bool(safety.get("patterns", True)))
