"""The step registry: every step Quark runs, declared once.

Adding a step takes three edits: its module `src/quark/steps/<name>.py` (`inputs(cfg)` and
`run(cfg, run, inputs)`), its config `conf/step/<name>.yaml`, and one `StepSpec` line below
naming both and the schema that checks the config. Everything else (the `step=` choices,
validation, `pipeline.stages.*.step`, run reuse, which runs hold a trained model) derives
from this list. docs/architecture.md walks through an example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quark.core.schemas.evaluate_step import EvaluateStepSchema
from quark.core.schemas.improve import ImproveStepSchema
from quark.core.schemas.orchestrate import OrchestrateStepSchema
from quark.core.schemas.retrieve import RetrieveStepSchema
from quark.core.schemas.serve_step import ServeStepSchema
from quark.core.schemas.steps import (
    AlignStepSchema,
    DataStepSchema,
    FinetuneStepSchema,
    OptimizeStepSchema,
    PlanStepSchema,
    PretrainStepSchema,
)


@dataclass(frozen=True)
class StepSpec:
    """One step: its name (`step=<name>`), the module that runs it, the schema of its config.

    `reusable`: whether a pipeline stage or a rerun sweep job may take an earlier completed run
    of the same config and inputs instead of running (not for a service such as serve); or a
    function of the config that says so (the gateway: when it answers its demo prompts or
    evaluation and stops).
    `trains_model`: whether its runs hold a trained Hugging Face model in hf/, which later steps
    (finetune, optimize, evaluate, serve) start from.
    """

    name: str
    module: str
    schema: type
    reusable: bool | Callable[[Any], bool] = True
    trains_model: bool = False

    def reusable_for(self, cfg: Any) -> bool:
        return bool(self.reusable(cfg) if callable(self.reusable) else self.reusable)


def _gateway_ends_by_itself(cfg: Any) -> bool:
    step = cfg.step
    return step.demo_prompt is not None or bool(step.demo_prompts) or bool(step.evaluate.enabled)


# In lifecycle order.
STEPS: tuple[StepSpec, ...] = (
    StepSpec("plan", "quark.steps.plan", PlanStepSchema),
    StepSpec("data", "quark.steps.data", DataStepSchema),
    StepSpec("pretrain", "quark.steps.pretrain", PretrainStepSchema, trains_model=True),
    StepSpec("finetune", "quark.steps.finetune", FinetuneStepSchema, trains_model=True),
    StepSpec("align", "quark.steps.align", AlignStepSchema, trains_model=True),
    StepSpec("retrieve", "quark.steps.retrieve", RetrieveStepSchema),
    StepSpec(
        "orchestrate",
        "quark.steps.orchestrate",
        OrchestrateStepSchema,
        reusable=_gateway_ends_by_itself,
    ),
    StepSpec("optimize", "quark.steps.optimize", OptimizeStepSchema),
    StepSpec("evaluate", "quark.steps.evaluate", EvaluateStepSchema),
    StepSpec("improve", "quark.steps.improve", ImproveStepSchema),
    StepSpec("serve", "quark.steps.serve", ServeStepSchema, reusable=False),
)

BY_NAME: dict[str, StepSpec] = {spec.name: spec for spec in STEPS}
# what quark.core.schemas.validate checks `step` against
STEP_SCHEMAS: dict[str, type] = {spec.name: spec.schema for spec in STEPS}


def step_names() -> list[str]:
    """Every step's name, in lifecycle order."""
    return [spec.name for spec in STEPS]


def model_steps() -> tuple[str, ...]:
    """Steps whose runs hold a trained model, the latest in the lifecycle first: when no model
    is named, a step takes the newest run of the first of these that has one (align, then
    finetune, then pretrain)."""
    return tuple(spec.name for spec in reversed(STEPS) if spec.trains_model)
