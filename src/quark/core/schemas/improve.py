"""Schema of conf/step/improve.yaml: one governed improvement cycle, or several."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.errors import ConfigError
from quark.core.schemas.fields import ranged

SUITE = ("exact_match", "perplexity", "red_team")


@dataclass
class FailuresSchema:
    high_loss_windows: int = ranged(4, ge=0)  # the validation windows with the highest loss
    windows_scanned: int = ranged(32, ge=1)  # of the first this many
    documents_per_window: int = ranged(3, ge=0)  # similar chunks of a retrieve run, per window


@dataclass
class AugmentSchema:
    per_failure: int = ranged(4, ge=0)  # new examples of its kind per wrong answer
    max_new: int = ranged(400, ge=0)


@dataclass
class RetrainSchema:
    steps: int = ranged(
        300, ge=1
    )  # fine-tuning steps of the first cycle (the goal sets later ones)
    max_steps: int = ranged(2000, ge=1)  # what a goal may raise them to
    lr: float | None = ranged(None, gt=0)  # null: step=finetune's
    overrides: list[str] = field(default_factory=list)  # more for the finetune run


@dataclass
class SuiteSchema:
    tasks: list[str] = field(default_factory=lambda: ["exact_match"])
    split: str = "test"  # the split both models answer; its wrong answers are the failures
    samples: int = ranged(200, ge=1)
    overrides: list[str] = field(default_factory=list)  # more for both evaluate runs

    def check(self, key: str) -> None:
        for number, task in enumerate(self.tasks):
            if task not in SUITE:
                raise ConfigError(f"{key}.tasks.{number}", f"'{task}' is not a task of the suite",
                                  f"allowed: {', '.join(SUITE)}")  # fmt: skip
        if "exact_match" not in self.tasks:
            raise ConfigError(f"{key}.tasks", "has no exact_match",
                              "the wrong answers are what a cycle improves on: keep exact_match")  # fmt: skip


@dataclass
class ImproveStepSchema:
    name: str = "improve"
    # the model the candidate is trained from: a run directory; null: the run a pipeline handed
    # over (align, else finetune), else the registry's production, else the newest align or
    # finetune run
    model_dir: str | None = None
    pairs_dir: str | None = None  # the task set; null: the one the model was fine-tuned on
    retrieval: str | None = (
        None  # a retrieve run for the high-loss windows' documents; null: newest, if any
    )
    # true: no training; the registry's candidate is gated again (after a person approved it,
    # or the policy changed) and promoted on a pass
    regate: bool = False
    max_cycles: int = ranged(1, ge=1)
    time_budget_s: float = ranged(3600.0, gt=0)  # no cycle starts once this is spent
    failures: FailuresSchema = field(default_factory=FailuresSchema)
    augment: AugmentSchema = field(default_factory=AugmentSchema)
    retrain: RetrainSchema = field(default_factory=RetrainSchema)
    suite: SuiteSchema = field(default_factory=SuiteSchema)

    def check(self) -> None:
        self.suite.check("step.suite")
        if self.retrain.steps > self.retrain.max_steps:
            raise ConfigError("step.retrain.steps", f"{self.retrain.steps} is above step.retrain.max_steps ({self.retrain.max_steps})",
                              "raise step.retrain.max_steps or lower steps")  # fmt: skip
