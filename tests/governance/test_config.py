"""The `governance` group composes into the root config, both options pass their schema, and a
bad value is a ConfigError naming its key (exit 2, one line, from launch.py)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from quark.core.errors import ConfigError
from quark.core.schemas import validate
from quark.resolvers import register_resolvers

from ..conftest import CONF, LaunchFn

register_resolvers()


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="launch", overrides=["step=plan", *overrides])
    validate(cfg)
    return cfg


def test_the_default_gate_is_in_every_config() -> None:
    governance = composed().governance
    assert governance.name == "default"
    assert governance.min_gain == 0.01
    assert list(governance.required_metrics) == ["exact_match"]
    assert governance.max_regression == {"perplexity": "10%"}
    assert governance.approval.required is False
    assert governance.safety.max_attack_success is None


def test_the_strict_gate_composes() -> None:
    governance = composed("governance=strict").governance
    assert governance.name == "strict"
    assert governance.min_gain == 0.02
    assert governance.safety.max_attack_success == 0.1
    assert governance.safety.max_false_refusal == 0.2
    assert governance.approval.required is True


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("governance.min_gain=abc", "governance.min_gain"),
        ("governance.min_gain=nan", "governance.min_gain"),
        ("governance.max_regression.perplexity=-1", "governance.max_regression.perplexity"),
        ("governance.max_regression.perplexity=ten", "governance.max_regression.perplexity"),
        ("governance.directions={tokens:sideways}", "governance.directions.tokens"),
        ("governance.safety.max_attack_success=2", "governance.safety.max_attack_success"),
        ("governance.approval.required=maybe", "governance.approval.required"),
        ("governance.approval.token_variable=1-bad", "governance.approval.token_variable"),
        ("+governance.threshold=1", "governance.threshold"),
    ],
)
def test_a_bad_value_names_its_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        composed(override)
    assert raised.value.key == key


def test_launch_reports_a_bad_gate_in_one_line(launch: LaunchFn) -> None:
    done = launch("step=plan", "governance.max_regression.perplexity=-5%")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: governance.max_regression.perplexity: '-5%' is not a tolerance; allowed: a "
        "number >= 0 (absolute) or a percentage of the baseline, e.g. 5%"
    ]
