"""LlamaShape, read from a `model` config group or a config.json, and the transformers model
build_llama makes of it. (The planner's parameter counts against the same models are checked in
tests/planning/test_parameters.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError, QuarkError
from quark.models.llama import LlamaShape, build_llama

from ..conftest import CONF

BUILT_IN = sorted(p.stem for p in (CONF / "model").glob("llama_*.yaml") if p.stem != "llama_custom")


def model_group(option: str) -> DictConfig:
    loaded = OmegaConf.load(CONF / "model" / f"{option}.yaml")
    assert isinstance(loaded, DictConfig)
    return loaded


@pytest.mark.parametrize("option", BUILT_IN)
def test_a_built_in_size_builds_the_model_its_shape_describes(option: str) -> None:
    group = model_group(option)
    shape = LlamaShape.from_model_config(group)
    with torch.device("meta"):  # shapes only: llama_1b would take 5 GB
        model = build_llama(**OmegaConf.to_container(group))  # type: ignore[arg-type]
    head_dim = shape.attention_head_dim
    layer = model.model.layers[0]
    assert model.get_input_embeddings().weight.shape == (shape.vocab_size, shape.hidden_size)
    assert len(model.model.layers) == shape.num_layers
    assert layer.self_attn.q_proj.weight.shape == (shape.num_heads * head_dim, shape.hidden_size)
    assert layer.self_attn.k_proj.weight.shape == (shape.num_kv_heads * head_dim, shape.hidden_size)
    assert layer.mlp.up_proj.weight.shape == (shape.intermediate_size, shape.hidden_size)
    assert model.config.max_position_embeddings == shape.max_seq_len
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == shape.tie_embeddings


@pytest.mark.parametrize("option", BUILT_IN)
def test_a_saved_config_reads_back_as_the_same_shape(option: str, tmp_path: Path) -> None:
    # what model=hf plans for a model Quark trained and exported
    shape = LlamaShape.from_model_config(model_group(option))
    shape.to_hf_config().save_pretrained(tmp_path)
    read = LlamaShape.from_model_config(OmegaConf.create({"name_or_path": str(tmp_path)}))
    # config.json always states head_dim; the built-in sizes leave it to hidden_size / num_heads
    assert read.attention_head_dim == shape.attention_head_dim
    assert replace(read, head_dim=None) == replace(shape, head_dim=None)


def test_a_config_without_the_decoder_sizes_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "bert", "vocab_size": 100, "hidden_size": 64}))
    with pytest.raises(QuarkError) as raised:
        LlamaShape.from_hf_config(config)
    assert str(raised.value).startswith(f"{config}: not a decoder config the planner understands")
    assert "missing num_hidden_layers, num_attention_heads, intermediate_size" in str(raised.value)


def test_an_unreadable_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{not json")
    with pytest.raises(QuarkError, match="cannot read the model config"):
        LlamaShape.from_hf_config(config)


@pytest.mark.parametrize(
    ("name", "problem"),
    [("empty", "has no config.json"), ("missing", "is not a local directory or file")],
)
def test_a_name_or_path_without_a_config_is_a_config_error(
    name: str, problem: str, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as raised:
        LlamaShape.from_model_config(OmegaConf.create({"name_or_path": str(tmp_path / name)}))
    assert raised.value.key == "model.name_or_path"
    assert problem in raised.value.problem


def test_the_scaled_init_draws_small_init_weights_and_depth_scaled_residual_projections() -> None:
    shape = LlamaShape(
        vocab_size=4096, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4,
        intermediate_size=1024, max_seq_len=64,
    )  # fmt: skip
    torch.manual_seed(0)
    scaled = build_llama(init="scaled", **shape.as_dict())
    torch.manual_seed(0)
    hf = build_llama(init="hf", **shape.as_dict())
    small, residual = (2 / (5 * 256)) ** 0.5, 1 / 256**0.5 / 4  # 0.0395, 0.0156
    for name, weight in scaled.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.equal(weight, torch.ones_like(weight)), name
            continue
        expected = residual if name.endswith(("o_proj.weight", "down_proj.weight")) else small
        assert weight.std().item() == pytest.approx(expected, rel=0.05), name
    # transformers' own: normal(0, 0.02) for every embedding and linear layer
    for name, weight in hf.named_parameters():
        if not name.endswith("norm.weight"):
            assert weight.std().item() == pytest.approx(0.02, rel=0.05), name


def test_an_unknown_init_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.init: 'xavier' is not an initialisation"):
        build_llama(**{**model_group("llama_tiny"), "init": "xavier"})  # type: ignore[arg-type]
