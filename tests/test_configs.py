"""Every option of every config group composes and passes its schema (lightning-hydra-template's
test_configs, with schemas): a shipped config that breaks fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from quark.core.schemas import validate
from quark.core.step_registry import step_names
from quark.resolvers import register_resolvers

from .conftest import CONF, MISTRAL_7B_SIZES

register_resolvers()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="launch", overrides=overrides)


# Options that need a value from the user before they compose into a valid config.
REQUIRED = {
    "data/text_files": lambda tmp: [f"data.sources.0.paths=[{tmp}/*.json]"],
    "data/jsonl": lambda tmp: [f"data.sources.0.paths=[{tmp}/*.jsonl]"],
    "data/parquet": lambda tmp: [f"data.sources.0.paths=[{tmp}/*.parquet]"],
    "data/hf_dataset": lambda tmp: [f"data.sources.0.name_or_path={tmp}"],
    "data/code_and_docs": lambda tmp: [f"data.sources.1.paths=[{tmp}/*.md]"],
    "model/hf": lambda tmp: [f"model.name_or_path={tmp}"],
    "model/llama_custom": lambda tmp: MISTRAL_7B_SIZES,
    "embedder/sentence_transformers": lambda tmp: [f"embedder.path={tmp}"],
}
# Options read by one step only: composed with it (align's options set that step's keys).
STEP_OF = {"align": "align"}


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, o)
        for g in (
            "step",
            "data",
            "model",
            "trainer",
            "logger",
            "peft",
            "paths",
            "pipeline",
            "experiment",
            "export",
            "hparams_search",
            "align",
            "safety",
            "embedder",
            "index",
            "governance",
            "router",
        )
        for o in options(g)
    ],
)
def test_every_option_composes_and_validates(group: str, option: str, hf_model_dir: Path) -> None:
    extra = REQUIRED.get(f"{group}/{option}", lambda _: [])(hf_model_dir)
    step = [f"step={STEP_OF[group]}"] if group in STEP_OF else []
    cfg = composed([*step, f"{group}={option}", *extra])
    validate(cfg)
    if group == "pipeline":
        assert cfg.pipeline.stages, "a pipeline without stages"
    if group in ("step", "data", "align", "safety", "embedder", "index", "governance", "router"):
        assert cfg[group].name == option


def test_step_group_matches_the_built_steps() -> None:
    assert options("step") == sorted(step_names())


def test_validate_writes_typed_values_back() -> None:
    cfg = composed(["step=plan", "trainer.devices=4", "trainer=ddp", "step.mfu=0.5"])
    validate(cfg)
    assert cfg.trainer.devices == 4 and isinstance(cfg.trainer.devices, int)
    assert cfg.step.mfu == 0.5
    # defaults from the schema are filled in
    assert cfg.model.head_dim is None and cfg.model.rope_theta == 10000.0
