"""Loading a Hugging Face model with the hub off (which directories hold a model, and the one a
run exported: tests/lineage/test_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from quark.core.errors import ConfigError
from quark.models.hf import load_causal_lm
from quark.models.llama import LlamaShape, build_llama

from ..conftest import CONF

TINY = LlamaShape(64, 32, 2, 4, 2, 64, 32)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A saved tiny Llama and its weights."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    model = build_llama(**TINY.as_dict())
    model.save_pretrained(directory)
    return directory, model.state_dict()


@pytest.mark.parametrize("offline", [None, "1"])
def test_a_hub_name_is_refused_while_offline(
    offline: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # Quark's default: offline
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.chdir(tmp_path)  # no local directory of that name
    with pytest.raises(ConfigError) as raised:
        load_causal_lm("meta-llama/Llama-3.2-1B")
    assert raised.value.key == "model.name_or_path"
    assert "'meta-llama/Llama-3.2-1B' is not a local directory" in raised.value.problem
    assert "HF_HUB_OFFLINE=0" in str(raised.value.allowed)


def test_model_hf_loads_a_local_directory_offline(
    tiny_model: tuple[Path, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    directory, weights = tiny_model
    group = OmegaConf.load(CONF / "model" / "hf.yaml")
    group.name_or_path = str(directory)
    model = instantiate(group)  # as the steps build model=hf: with the group's other keys
    assert model.config.num_hidden_layers == TINY.num_layers
    loaded = model.state_dict()
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[name], weights[name]) for name in weights)
