"""Schema of the `pipeline` group: steps run in order, each with its own overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from quark.core.errors import ConfigError


@dataclass
class PipelineStageSchema:
    step: str = MISSING
    overrides: list[str] = field(default_factory=list)


@dataclass
class PipelineSchema:
    name: str = MISSING
    run_subdir: str = MISSING
    # Overrides applied to every stage, before the stage's own.
    overrides: list[str] = field(default_factory=list)
    stages: list[PipelineStageSchema] = field(default_factory=list)

    def check(self) -> None:
        from quark.core.step_registry import step_names

        if not self.stages:
            raise ConfigError("pipeline.stages", "is empty", "list at least one {step: NAME}")
        steps = step_names()
        for index, stage in enumerate(self.stages):
            if stage.step not in steps:
                raise ConfigError(
                    f"pipeline.stages.{index}.step",
                    f"'{stage.step}' is not a step",
                    f"available steps: {', '.join(steps)}",
                )
            for override in stage.overrides:
                if override.split("=", 1)[0].lstrip("+~") == "step":
                    raise ConfigError(
                        f"pipeline.stages.{index}.overrides",
                        f"'{override}' sets the step",
                        "name the step with the stage's `step:` key",
                    )
