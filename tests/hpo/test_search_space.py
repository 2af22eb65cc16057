"""The YAML search space and command-line sweeps become Optuna distributions; a bad range is
refused with one line naming its key; every shipped hparams_search space names real keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from quark.core.errors import ConfigError
from quark.hpo.search_space import command_line_space, override_value, parse_search_space
from quark.hpo.sweeper import check_keys_exist
from quark.resolvers import register_resolvers

from ..conftest import CONF

register_resolvers()


def test_float_int_and_categorical_specs_become_distributions() -> None:
    space = parse_search_space(
        {
            "step.optim.lr": {"type": "float", "low": "1e-4", "high": 3.0e-2, "log": True},
            "step.optim.weight_decay": {"type": "float", "low": 0, "high": 0.2, "step": 0.05},
            "step.optim.warmup_steps": {"type": "int", "low": 0, "high": 40, "step": 10},
            "trainer.micro_batch_size": {"type": "categorical", "choices": [4, 8, 16]},
        }
    )
    assert space == {
        "step.optim.lr": FloatDistribution(1e-4, 3e-2, log=True),
        "step.optim.weight_decay": FloatDistribution(0.0, 0.2, step=0.05),
        "step.optim.warmup_steps": IntDistribution(0, 40, step=10),
        "trainer.micro_batch_size": CategoricalDistribution((4, 8, 16)),
    }


P = "hydra.sweeper.params.step.optim.lr"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "float", "low": 0.1, "high": 0.01},
            f"{P}: low 0.1 is not below high 0.01; allowed: low < high",
        ),
        (
            {"type": "int", "low": 5, "high": 5},
            f"{P}: low 5 is not below high 5; allowed: low < high",
        ),
        (
            {"type": "float", "low": 0.0, "high": 0.1, "log": True},
            f"{P}: log scale with low 0.0; allowed: low > 0 when log: true",
        ),
        (
            {"type": "floaty", "low": 0.0, "high": 0.1},
            f"{P}.type: 'floaty' is not a search type; allowed: float, int, categorical",
        ),
        (
            {"type": "float", "lo": 0.0, "high": 0.1},
            f"{P}.lo: not a key of a float search spec; allowed: type, low, high, log, step",
        ),
        (
            {"type": "float", "low": "small", "high": 0.1},
            f"{P}.low: 'small' is not a float; give a float",
        ),
        (
            {"type": "int", "low": 0.5, "high": 4},
            f"{P}.low: '0.5' is not an integer; give an integer",
        ),
        (
            {"type": "float", "low": 0.0, "high": 1.0, "step": 0},
            f"{P}.step: 0.0 is not positive; allowed: step > 0",
        ),
        (
            {"type": "float", "low": 0.1, "high": 1.0, "step": 0.1, "log": True},
            f"{P}: log and step together; give one of them",
        ),
        ({"type": "categorical", "choices": []}, f"{P}.choices: empty; give at least one choice"),
        (
            "1e-3..1e-2",
            f"{P}: '1e-3..1e-2' is not a search spec; e.g. {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}",
        ),
    ],
)
def test_a_bad_spec_names_its_key_and_what_is_allowed(spec: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_search_space({"step.optim.lr": spec})
    assert str(raised.value) == message


def test_command_line_sweeps_join_the_space_and_the_rest_stays_fixed() -> None:
    parser = OverridesParser.create()
    fixed, space = command_line_space(
        [
            "step=plan",
            "model=llama_tiny,llama_small",
            "step.mfu=interval(0.2,0.6)",
            "step.optim.lr=tag(log,interval(1e-4,1e-2))",
            "step.optim.warmup_steps=range(0,40,10)",
        ],
        parser.parse_overrides,
    )
    assert fixed == ["step=plan"]
    assert space == {
        "model": CategoricalDistribution(("llama_tiny", "llama_small")),
        "step.mfu": FloatDistribution(0.2, 0.6),
        "step.optim.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "step.optim.warmup_steps": IntDistribution(0, 30, step=10),
    }
    with pytest.raises(ConfigError, match=r"^step.mfu: low 0.6 is not below high 0.2"):
        command_line_space(["step.mfu=interval(0.6,0.2)"], parser.parse_overrides)


def test_values_are_written_as_hydra_overrides() -> None:
    assert [override_value(v) for v in (1e-05, 3, True, None, "[q_proj,v_proj]")] == [
        "1e-05",
        "3",
        "true",
        "null",
        "[q_proj,v_proj]",
    ]


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_every_shipped_search_space_parses_and_names_config_keys(option: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="launch",
            overrides=[f"hparams_search={option}"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper._target_.endswith("QuarkOptunaSweeper")
    assert Path(str(cfg.hydra.sweep.dir)).name == cfg.hydra.sweeper.study_name == option
    space = parse_search_space(cfg.hydra.sweeper.params)
    assert len(space) >= 3
    check_keys_exist(space, cfg, from_command_line=set())
