"""Typed schemas for every config group, checked before any heavy import or work.

`validate(cfg)` checks each group against its dataclass schema (unknown keys, types, missing
values, ranges, cross-field rules) and writes the typed, resolved groups back into `cfg`, so a
step reads values that are known to be valid.
"""

from __future__ import annotations

from quark.core.schemas.launch import GROUP_SCHEMAS, TOP_LEVEL_KEYS
from quark.core.schemas.validation import allowed_keys, validate

__all__ = ["GROUP_SCHEMAS", "TOP_LEVEL_KEYS", "allowed_keys", "validate"]
