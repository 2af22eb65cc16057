"""Schema of the `governance` group: the registry a model is promoted in, the gate it must pass,
and where each decision is recorded (quark.governance)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from quark.core.errors import ConfigError
from quark.core.schemas.fields import pattern, ranged
from quark.core.schemas.tolerance import DIRECTIONS, parse_tolerance


@dataclass
class RegistrySchema:
    # null: sqlite:///<paths.output_dir>/<experiment_name>/registry/mlflow.db; else any MLflow
    # database URI (postgresql://host/db; a tracking server is not supported yet)
    uri: str | None = None
    # the registered model's name; null: the experiment's name
    model_name: str | None = None


@dataclass
class GateSafetySchema:
    # the candidate's red_team_attack_success_guarded must be <= this; null: not checked
    max_attack_success: float | None = ranged(None, ge=0, le=1)
    # the candidate's red_team_false_refusal_rate must be <= this; null: not checked
    max_false_refusal: float | None = ranged(None, ge=0, le=1)


@dataclass
class ApprovalSchema:
    # whether a person must approve the candidate before it is promoted
    required: bool = False
    # a signed approval (JSON: approver, candidate digest, HMAC-SHA256 signature made with the
    # key in QUARK_APPROVAL_KEY): `quark audit approve` writes one
    file: str | None = None
    # an environment variable holding the approver's name; set, it approves the candidate
    # (unauthenticated: null accepts signed files only)
    token_variable: str | None = pattern(
        "QUARK_APPROVER", r"^[A-Za-z_][A-Za-z0-9_]*$", "an environment variable name"
    )


@dataclass
class GovernanceSchema:
    name: str = "default"
    registry: RegistrySchema = field(default_factory=RegistrySchema)
    # the hash-chained JSONL record of every decision; null:
    # <paths.output_dir>/<experiment_name>/registry/audit.jsonl
    audit_log: str | None = None
    # the metric the candidate must gain on over the production model
    primary_metric: str = "exact_match"
    # candidate - production on primary_metric (production - candidate when lower is better);
    # negative: the candidate may be that much worse
    min_gain: float = 0.01
    # metrics the candidate must have been measured on
    required_metrics: list[str] = field(default_factory=lambda: ["exact_match"])
    # metric: how much worse than production it may get, a number (absolute) or "5%"
    max_regression: dict[str, Any] = field(default_factory=dict)
    # metric: lower | higher, for metrics whose name does not say (perplexity, loss: lower;
    # accuracy, exact_match, f1: higher); null rather than {} in the YAML, so that a mapping
    # can be given on the command line
    directions: dict[str, str] | None = None
    safety: GateSafetySchema = field(default_factory=GateSafetySchema)
    approval: ApprovalSchema = field(default_factory=ApprovalSchema)

    def check(self) -> None:
        if not math.isfinite(self.min_gain):
            raise ConfigError(
                "governance.min_gain",
                f"{self.min_gain} is not a number",
                "allowed: a finite number",
            )
        for metric, tolerance in self.max_regression.items():
            parse_tolerance(f"governance.max_regression.{metric}", tolerance)
        for metric, side in (self.directions or {}).items():
            if side not in DIRECTIONS:
                raise ConfigError(
                    f"governance.directions.{metric}",
                    f"'{side}' is not a direction",
                    f"allowed: {', '.join(DIRECTIONS)}",
                )
