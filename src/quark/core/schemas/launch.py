"""The top level of conf/launch.yaml: which keys exist and which schema checks each group."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.schemas.align import AlignSchema
from quark.core.schemas.data import DataSchema
from quark.core.schemas.export import ExportSchema
from quark.core.schemas.fields import pattern, ranged
from quark.core.schemas.governance import GovernanceSchema
from quark.core.schemas.logger import LoggerSchema
from quark.core.schemas.model import ModelSchema
from quark.core.schemas.orchestrate import RouterSchema
from quark.core.schemas.paths import PathsSchema
from quark.core.schemas.peft import PeftSchema
from quark.core.schemas.pipeline import PipelineSchema
from quark.core.schemas.retrieve import EmbedderSchema, IndexSchema
from quark.core.schemas.safety import SafetySchema
from quark.core.schemas.trainer import TrainerSchema


@dataclass
class TopLevelSchema:
    experiment_name: str = pattern(
        "demo", r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", "letters, digits, '_', '.', '-'"
    )
    seed: int = ranged(1234, ge=0)
    # Run directories of earlier steps handed to this one (a pipeline fills it): step -> path.
    inputs: dict[str, str] = field(default_factory=dict)


GROUP_SCHEMAS: dict[str, type] = {
    "data": DataSchema,
    "model": ModelSchema,
    "trainer": TrainerSchema,
    "logger": LoggerSchema,
    "peft": PeftSchema,
    "align": AlignSchema,
    "safety": SafetySchema,
    "paths": PathsSchema,
    "pipeline": PipelineSchema,
    "export": ExportSchema,
    "embedder": EmbedderSchema,
    "index": IndexSchema,
    "router": RouterSchema,
    "governance": GovernanceSchema,
}

# Each step's schema is declared with the step, in quark.core.step_registry (STEP_SCHEMAS).

TOP_LEVEL_KEYS = ("step", *GROUP_SCHEMAS, *TopLevelSchema.__dataclass_fields__, "hydra")
