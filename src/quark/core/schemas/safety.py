"""Schema of the `safety` group: the guard serve and the data step put in front of text."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

GUARDS = ("none", "rules", "classifier")
CLASSIFIED_TEXTS = ("requests", "answers", "documents")
DATA_ACTIONS = ("drop", "flag")


@dataclass
class ClassifierSchema:
    # an align=safety_classifier run (its classifier/) or a local text-classification model
    # directory; null: the newest align run of the experiment holding a classifier
    path: str | None = None
    # a text is blocked when p(every label but the benign one) reaches this
    threshold: float = ranged(0.5, gt=0, lt=1)
    benign_label: str = "benign"
    # which texts the classifier reads (the rules read every text)
    checks: list[str] = field(default_factory=lambda: ["requests"])
    batch_size: int = ranged(32, ge=1)


@dataclass
class SafetySchema:
    # none: nothing is checked; rules: patterns and word lists (quark.safety.rules);
    # classifier: the rules and a text classifier (quark.safety.classifier)
    name: str = choice("none", GUARDS)
    # rules: the built-in secret and personal-data patterns
    patterns: bool = True
    # rules: category -> phrases, matched whole-word in any case (and in leetspeak and base64)
    lists: dict[str, list[str]] = field(default_factory=dict)
    # serve: characters of an answer held back until the guard has checked them
    hold_back: int = ranged(64, ge=1)
    # data step: drop the documents the guard blocks, or keep them and count them (flag)
    data: str = choice("drop", DATA_ACTIONS)
    classifier: ClassifierSchema = field(default_factory=ClassifierSchema)

    def check(self) -> None:
        unknown = [kind for kind in self.classifier.checks if kind not in CLASSIFIED_TEXTS]
        if unknown:
            raise ConfigError(
                "safety.classifier.checks",
                f"{unknown} are not texts the guard reads",
                f"allowed: {', '.join(CLASSIFIED_TEXTS)}",
            )
        if self.name == "rules" and not self.patterns and not any(self.lists.values()):
            raise ConfigError(
                "safety.lists",
                "is empty and safety.patterns is false: the guard would check nothing",
                "name at least one category with phrases, or set safety.patterns=true",
            )
