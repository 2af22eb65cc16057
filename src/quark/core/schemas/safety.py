"""Schema of the `safety` group: the guard serve and the data step put in front of text."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

GUARDS = ("none", "rules")
DATA_ACTIONS = ("drop", "flag")


@dataclass
class SafetySchema:
    # none: nothing is checked; rules: patterns and word lists (quark.safety.rules)
    name: str = choice("none", GUARDS)
    # rules: the built-in secret and personal-data patterns
    patterns: bool = True
    # rules: category -> phrases, matched whole-word in any case (and in leetspeak and base64)
    lists: dict[str, list[str]] = field(default_factory=dict)
    # serve: characters of an answer held back until the guard has checked them
    hold_back: int = ranged(64, ge=1)
    # data step: drop the documents the guard blocks, or keep them and count them (flag)
    data: str = choice("drop", DATA_ACTIONS)

    def check(self) -> None:
        if self.name == "rules" and not self.patterns and not any(self.lists.values()):
            raise ConfigError(
                "safety.lists",
                "is empty and safety.patterns is false: the guard would check nothing",
                "name at least one category with phrases, or set safety.patterns=true",
            )
