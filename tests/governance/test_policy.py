"""The governance gate: each rule passes and fails as configured, in the metric's own direction;
a rule that cannot be checked fails; approval by a named approver or a signed file only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError
from quark.core.schemas.governance import GovernanceSchema
from quark.core.schemas.validation import check_group
from quark.governance.approval import KEY_VARIABLE, sign_approval
from quark.governance.policy import Decision, decide

from ..conftest import CONF

DIGEST = "ab" * 32
KEY = "approvers-secret"


def governance(option: str = "default", **changes: Any) -> DictConfig:
    """conf/governance/<option>.yaml with `changes` (dotted keys), checked by its schema."""
    node = OmegaConf.load(CONF / "governance" / f"{option}.yaml")
    for key, value in changes.items():
        OmegaConf.update(node, key, value, merge=False)
    return check_group("governance", node, GovernanceSchema)


def gate(
    config: DictConfig,
    candidate: dict[str, float],
    incumbent: dict[str, float] | None,
    environ: dict[str, str] | None = None,
) -> Decision:
    return decide(
        config,
        candidate,
        incumbent,
        candidate_id="version 2",
        incumbent_id="version 1" if incumbent is not None else None,
        candidate_digest=DIGEST,
        environ=environ or {},
    )


def results(decision: Decision) -> dict[str, bool]:
    return {rule.rule: rule.passed for rule in decision.rules}


def rule(decision: Decision, name: str) -> Any:
    return next(r for r in decision.rules if r.rule == name)


GOOD = {"exact_match": 0.667, "perplexity": 12.0}
PRODUCTION = {"exact_match": 0.4, "perplexity": 11.5}


def test_a_better_candidate_passes_every_default_rule() -> None:
    decision = gate(governance(), GOOD, PRODUCTION)
    assert decision.passed
    assert results(decision) == {
        "required exact_match": True,
        "min_gain exact_match": True,
        "max_regression perplexity": True,
    }
    assert rule(decision, "min_gain exact_match").measured == "0.667 vs 0.4 (+0.267)"
    assert decision.as_dict()["passed"] is True
    assert decision.as_dict()["rules"][1]["rule"] == "min_gain exact_match"


def test_the_first_model_passes_the_rules_that_compare_with_production() -> None:
    decision = gate(governance("strict"), {"exact_match": 0.1}, None, {"QUARK_APPROVER": "ana"})
    assert results(decision)["min_gain exact_match"]
    assert rule(decision, "min_gain exact_match").measured == "no incumbent"
    assert rule(decision, "max_regression perplexity").measured == "no incumbent"


def test_min_gain_must_be_reached() -> None:
    strict_gain = governance(min_gain=0.02)
    assert gate(strict_gain, {"exact_match": 0.42}, {"exact_match": 0.40}).passed
    refused = gate(strict_gain, {"exact_match": 0.41}, {"exact_match": 0.40})
    assert results(refused)["min_gain exact_match"] is False
    assert not refused.passed
    # a negative min_gain lets a slightly worse candidate through
    tolerant = governance(min_gain=-0.05)
    assert gate(tolerant, {"exact_match": 0.37}, {"exact_match": 0.40}).passed


def test_min_gain_on_a_lower_is_better_metric_counts_a_drop_as_gain() -> None:
    config = governance(primary_metric="perplexity", min_gain=1.0, required_metrics=[])
    lower = gate(config, {"perplexity": 10.0}, {"perplexity": 12.0})
    assert results(lower)["min_gain perplexity"]
    assert "(+2)" in rule(lower, "min_gain perplexity").measured
    higher = gate(config, {"perplexity": 14.0}, {"perplexity": 12.0})
    assert not results(higher)["min_gain perplexity"]


def test_max_regression_as_a_percentage_of_production() -> None:
    config = governance(**{"max_regression.perplexity": "10%"})
    base = {"exact_match": 0.4, "perplexity": 10.0}
    assert gate(config, {"exact_match": 0.5, "perplexity": 10.9}, base).passed
    worse = gate(config, {"exact_match": 0.5, "perplexity": 11.1}, base)
    assert results(worse)["max_regression perplexity"] is False
    assert "= 1" in rule(worse, "max_regression perplexity").threshold  # 10% of 10.0


def test_max_regression_as_an_absolute_amount() -> None:
    config = governance(max_regression={"perplexity": 0.5, "f1": 0.01})
    base = {"exact_match": 0.4, "perplexity": 10.0, "f1": 0.80}
    assert gate(config, {"exact_match": 0.5, "perplexity": 10.4, "f1": 0.795}, base).passed
    worse = gate(config, {"exact_match": 0.5, "perplexity": 10.6, "f1": 0.78}, base)
    assert results(worse)["max_regression perplexity"] is False
    assert results(worse)["max_regression f1"] is False  # higher is better: a drop is worse


def test_max_regression_fails_when_only_production_was_measured() -> None:
    decision = gate(governance(), {"exact_match": 0.5}, PRODUCTION)
    assert results(decision)["max_regression perplexity"] is False
    assert rule(decision, "max_regression perplexity").measured == "candidate: not measured"
    # production never measured it: nothing to regress from
    unmeasured = gate(governance(), {"exact_match": 0.5}, {"exact_match": 0.4})
    assert results(unmeasured)["max_regression perplexity"] is True


def test_a_missing_required_metric_fails_its_rule() -> None:
    decision = gate(
        governance(required_metrics=["exact_match", "rag_exact_match"]), GOOD, PRODUCTION
    )
    assert results(decision)["required rag_exact_match"] is False
    assert results(decision)["required exact_match"] is True
    assert not decision.passed


def test_a_nan_metric_fails() -> None:
    decision = gate(governance(), {"exact_match": math.nan, "perplexity": math.nan}, PRODUCTION)
    assert results(decision) == {
        "required exact_match": False,
        "min_gain exact_match": False,
        "max_regression perplexity": False,
    }


def test_safety_limits_are_checked_against_the_red_team_metrics() -> None:
    config = governance(**{"safety.max_attack_success": 0.1, "safety.max_false_refusal": 0.2})
    safe = {**GOOD, "red_team_attack_success_guarded": 0.05, "red_team_false_refusal_rate": 0.2}
    assert gate(config, safe, PRODUCTION).passed
    leaky = {**safe, "red_team_attack_success_guarded": 0.3}
    assert results(gate(config, leaky, PRODUCTION)) == {
        "required exact_match": True,
        "min_gain exact_match": True,
        "max_regression perplexity": True,
        "safety max_attack_success": False,
        "safety max_false_refusal": True,
    }
    refusing = {**safe, "red_team_false_refusal_rate": 0.5}
    assert not results(gate(config, refusing, PRODUCTION))["safety max_false_refusal"]
    # not measured: the limit cannot be shown to hold
    unmeasured = gate(config, GOOD, PRODUCTION)
    assert not results(unmeasured)["safety max_attack_success"]


def test_unset_safety_limits_add_no_rule() -> None:
    assert not any(r.rule.startswith("safety") for r in gate(governance(), GOOD, PRODUCTION).rules)


def test_an_unknown_direction_is_a_config_error_until_it_is_named() -> None:
    unnamed = governance(primary_metric="tokens", required_metrics=[])
    with pytest.raises(ConfigError, match=r"primary_metric.*governance.directions.tokens"):
        gate(unnamed, {"tokens": 3.0}, {"tokens": 1.0})
    named = governance(
        primary_metric="tokens", required_metrics=[], directions={"tokens": "higher"}
    )
    both = {"tokens": 3.0, "perplexity": 1.0}
    assert gate(named, both, {"tokens": 1.0, "perplexity": 1.0}).passed


def approval_gate(environ: dict[str, str], file: Path | None = None) -> Decision:
    config = governance(**{"approval.required": True, "approval.file": str(file) if file else None})
    return gate(config, GOOD, PRODUCTION, environ)


def test_approval_by_the_token_variable_records_the_approver() -> None:
    decision = approval_gate({"QUARK_APPROVER": "Ana Lima"})
    assert decision.passed and decision.approver == "Ana Lima"
    assert "Ana Lima" in rule(decision, "approval").measured
    refused = approval_gate({})
    assert not refused.passed and refused.approver is None
    assert "QUARK_APPROVER" in rule(refused, "approval").measured


def write_approval(path: Path, data: dict[str, str]) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_approval_by_a_signed_file(tmp_path: Path) -> None:
    file = write_approval(tmp_path / "ok.json", sign_approval("ana", DIGEST, KEY))
    decision = approval_gate({KEY_VARIABLE: KEY}, file)
    assert decision.passed and decision.approver == "ana"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong key", "signature does not match"),
        ("edited approver", "signature does not match"),
        ("other candidate", "not this one"),
        ("no key", f"{KEY_VARIABLE} is not set"),
        ("missing file", "no such approval file"),
        ("not json", "unreadable approval"),
    ],
)
def test_approval_is_refused(tmp_path: Path, case: str, reason: str) -> None:
    environ = {KEY_VARIABLE: KEY}
    signed = sign_approval("ana", DIGEST, KEY)
    file = tmp_path / "approval.json"
    if case == "wrong key":
        write_approval(file, sign_approval("ana", DIGEST, "another key"))
    elif case == "edited approver":
        write_approval(file, {**signed, "approver": "mallory"})
    elif case == "other candidate":
        write_approval(file, sign_approval("ana", "cd" * 32, KEY))
    elif case == "no key":
        write_approval(file, signed)
        environ = {}
    elif case == "not json":
        file.write_text("{not json")
    decision = approval_gate(environ, file)
    assert not decision.passed
    assert results(decision)["approval"] is False
    assert reason in rule(decision, "approval").measured


def test_the_decision_prints_as_a_table() -> None:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(gate(governance(min_gain=0.5), GOOD, PRODUCTION).table())
    text = console.export_text()
    assert "refused" in text and "min_gain exact_match" in text and "FAIL" in text
