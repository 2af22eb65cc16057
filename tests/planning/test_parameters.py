"""The planner's analytic parameter counts equal those of the instantiated Hugging Face models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from quark.models.llama import LlamaShape, build_llama
from quark.planning.parameters import count_parameters, training_flops_per_token

from ..conftest import CONF

BUILT_IN = sorted(p.stem for p in (CONF / "model").glob("llama_*.yaml") if p.stem != "llama_custom")


def shape_of(option: str) -> LlamaShape:
    return LlamaShape.from_model_config(OmegaConf.load(CONF / "model" / f"{option}.yaml"))


@pytest.mark.parametrize("option", BUILT_IN)
def test_counts_match_the_instantiated_model(option: str) -> None:
    shape = shape_of(option)
    with torch.device("meta"):  # no memory: llama_1b would take 5 GB
        model = build_llama(
            **OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{option}.yaml"))
        )
    counts = count_parameters(shape)
    assert counts.total == sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    if not shape.tie_embeddings:
        embedding += model.get_output_embeddings().weight.numel()
    assert counts.embedding == embedding
    # DeepSpeed's "largest layer": the most parameters any single module holds itself
    assert counts.largest_layer == max(
        sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()
    )


def test_built_in_sizes_are_what_their_names_say() -> None:
    sizes = {option: count_parameters(shape_of(option)).total for option in BUILT_IN}
    assert 7e6 < sizes["llama_tiny"] < 10e6
    assert 25e6 < sizes["llama_small"] < 35e6
    assert 120e6 < sizes["llama_124m"] < 128e6
    assert 1.1e9 < sizes["llama_1b"] < 1.3e9


def test_an_hf_config_counts_like_the_model_it_describes(hf_model_dir: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = LlamaShape.from_model_config(OmegaConf.create({"name_or_path": str(hf_model_dir)}))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(hf_model_dir))
    assert count_parameters(shape).total == sum(p.numel() for p in model.parameters())


def test_flops_per_token_is_6n_plus_attention() -> None:
    shape = shape_of("llama_124m")
    counts = count_parameters(shape)
    matmul_params = counts.non_embedding + shape.vocab_size * shape.hidden_size
    short, long = training_flops_per_token(shape, 128), training_flops_per_token(shape, 1024)
    assert short == 6 * matmul_params + 12 * 12 * 128 * 768
    assert long - short == 12 * 12 * (1024 - 128) * 768
