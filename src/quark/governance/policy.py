"""The governance gate: whether a candidate model may replace the production one, rule by rule.

The rules come from the `governance` group (conf/governance/), in this order:

    required <metric>          the candidate was measured on it (a number, not NaN)
    min_gain <primary>         candidate - production >= min_gain, better side first
    max_regression <metric>    worse than production by no more than the tolerance
    safety max_attack_success  red_team_attack_success_guarded <= the limit
    safety max_false_refusal   red_team_false_refusal_rate <= the limit
    approval                   a person approved this candidate (quark.governance.approval)

A rule that cannot be checked fails (a metric that was not measured, a NaN); the first model
(no production yet) passes min_gain and max_regression, which compare with production, and a
max_regression metric production was never measured on has nothing to regress from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from quark.core.errors import ConfigError
from quark.core.schemas.tolerance import parse_tolerance
from quark.eval.regression import Comparison, direction

if TYPE_CHECKING:
    from rich.table import Table

# the red-team metrics quark.eval.red_team measures, by governance.safety key
SAFETY_METRICS = {
    "max_attack_success": "red_team_attack_success_guarded",
    "max_false_refusal": "red_team_false_refusal_rate",
}
# 0.42 - 0.40 is 0.0199999... in floating point: a gain this close to min_gain meets it
GAIN_SLACK = 1e-9
NO_INCUMBENT = "no incumbent"


@dataclass(frozen=True)
class RuleResult:
    """One rule of the gate: what was measured, what it had to meet, whether it did."""

    rule: str
    measured: str
    threshold: str
    passed: bool


@dataclass(frozen=True)
class Decision:
    """Every rule's result for promoting `candidate` over `incumbent` (None: no production yet)."""

    candidate: str
    incumbent: str | None
    rules: tuple[RuleResult, ...]
    candidate_digest: str = ""
    approver: str | None = None

    @property
    def passed(self) -> bool:
        return all(rule.passed for rule in self.rules)

    @property
    def failed(self) -> list[RuleResult]:
        return [rule for rule in self.rules if not rule.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "incumbent": self.incumbent,
            "candidate_digest": self.candidate_digest,
            "approver": self.approver,
            "passed": self.passed,
            "rules": [asdict(rule) for rule in self.rules],
        }

    def table(self) -> Table:
        """The decision as a rich table: one row per rule, its verdict in the title."""
        from rich.markup import escape
        from rich.table import Table

        verdict = "[green]promote[/]" if self.passed else "[red]refused[/]"
        against = self.incumbent or "no production model"
        table = Table(
            title=f"Governance: {escape(self.candidate)} over {escape(against)}: {verdict}",
            title_justify="left",
        )
        for column in ("rule", "measured", "threshold", "result"):
            table.add_column(column, overflow="fold")
        for rule in self.rules:
            result = "[green]pass[/]" if rule.passed else "[red]FAIL[/]"
            table.add_row(escape(rule.rule), escape(rule.measured), escape(rule.threshold), result)
        return table


def decide(
    governance: Any,
    candidate: dict[str, float],
    incumbent: dict[str, float] | None,
    *,
    candidate_id: str,
    incumbent_id: str | None,
    candidate_digest: str,
    environ: Mapping[str, str] | None = None,
) -> Decision:
    """Check `candidate`'s metrics against the gate in `governance` (the validated group) and
    the production model's metrics `incumbent` (None: there is none yet).

    `environ` (default os.environ) is where the approval's token and key are read.

    Raises:
        ConfigError: governance.primary_metric or a governance.max_regression metric whose
            better side is unknown (name it in governance.directions).
    """
    from quark.governance.approval import check_approval

    directions = {str(k): str(v) for k, v in (governance.directions or {}).items()}
    rules = [_required(str(metric), candidate) for metric in governance.required_metrics]
    rules.append(_min_gain(governance, candidate, incumbent, directions))
    for metric, tolerance in (governance.max_regression or {}).items():
        rules.append(_max_regression(str(metric), tolerance, candidate, incumbent, directions))
    for key, metric in SAFETY_METRICS.items():
        limit = governance.safety[key]
        if limit is not None:
            rules.append(_at_most(f"safety {key}", metric, float(limit), candidate))
    approver = None
    if governance.approval.required:
        approval = check_approval(governance.approval, candidate_digest, environ)
        approver = approval.approver if approval.approved else None
        rules.append(
            RuleResult("approval", approval.detail, "a person approves", approval.approved)
        )
    return Decision(candidate_id, incumbent_id, tuple(rules), candidate_digest, approver)


def _required(metric: str, candidate: dict[str, float]) -> RuleResult:
    value = candidate.get(metric)
    return RuleResult(f"required {metric}", _shown(value), "measured", _number(value))


def _min_gain(
    governance: Any,
    candidate: dict[str, float],
    incumbent: dict[str, float] | None,
    directions: dict[str, str],
) -> RuleResult:
    metric, min_gain = str(governance.primary_metric), float(governance.min_gain)
    side = _side("governance.primary_metric", metric, directions)
    rule = f"min_gain {metric}"
    threshold = f">= {min_gain:+g}" + (" (lower is better)" if side == "lower" else "")
    value = candidate.get(metric)
    if not _number(value):
        return RuleResult(rule, f"candidate: {_shown(value)}", threshold, False)
    if incumbent is None:
        return RuleResult(rule, NO_INCUMBENT, threshold, True)
    baseline = incumbent.get(metric)
    if not _number(baseline):
        # the gain over production is the point of the gate: unknown, it is not met
        return RuleResult(rule, f"production: {_shown(baseline)}", threshold, False)
    assert value is not None and baseline is not None
    gain = value - baseline if side == "higher" else baseline - value
    measured = f"{value:.4g} vs {baseline:.4g} ({gain:+.4g})"
    return RuleResult(rule, measured, threshold, gain >= min_gain - GAIN_SLACK)


def _max_regression(
    metric: str,
    tolerance: Any,
    candidate: dict[str, float],
    incumbent: dict[str, float] | None,
    directions: dict[str, str],
) -> RuleResult:
    key = f"governance.max_regression.{metric}"
    allowed = parse_tolerance(key, tolerance)
    side = _side(key, metric, directions)
    rule = f"max_regression {metric}"
    threshold = f"worse by <= {allowed} ({side} is better)"
    value = candidate.get(metric)
    if incumbent is None:
        return RuleResult(rule, NO_INCUMBENT, threshold, True)
    baseline = incumbent.get(metric)
    if not _number(baseline):
        # production was never measured on it: there is nothing to regress from
        return RuleResult(rule, f"production: {_shown(baseline)}", threshold, True)
    if not _number(value):
        return RuleResult(rule, f"candidate: {_shown(value)}", threshold, False)
    assert value is not None and baseline is not None
    compared = Comparison(metric, value, baseline, allowed, side)
    measured = f"{value:.4g} vs {baseline:.4g} (worse by {compared.worse_by:+.4g})"
    if allowed.relative:
        threshold = f"worse by <= {allowed} = {allowed.allowed(baseline):.4g} ({side} is better)"
    return RuleResult(rule, measured, threshold, not compared.regressed)


def _at_most(rule: str, metric: str, limit: float, candidate: dict[str, float]) -> RuleResult:
    value = candidate.get(metric)
    threshold = f"{metric} <= {limit:g}"
    if not _number(value):
        return RuleResult(rule, _shown(value), threshold, False)
    assert value is not None
    return RuleResult(rule, f"{value:.4g}", threshold, value <= limit)


def _side(key: str, metric: str, directions: dict[str, str]) -> str:
    side = direction(metric, directions)
    if side is None:
        raise ConfigError(
            key,
            f"whether lower or higher is better for '{metric}' is unknown",
            f"set governance.directions.{metric}=lower or =higher",
        )
    return side


def _number(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _shown(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.4g}"
