"""conf/hydra/launcher: every option composes, and the SLURM request follows the trainer layout
(one srun task per device, trainer.num_nodes nodes), as the DeepSpeed example in docs/slurm.md asks."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from quark.resolvers import register_resolvers

from ..conftest import CONF

register_resolvers()


def launcher(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="launch", overrides=list(overrides), return_hydra_config=True)
    chosen = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(chosen, dict)
    return chosen


@pytest.mark.parametrize(
    "option", sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml"))
)
def test_every_launcher_option_composes(option: str) -> None:
    chosen = launcher(f"hydra/launcher={option}", "hydra.sweep.dir=/tmp/sweep")
    assert chosen["_target_"].startswith("hydra_plugins.")  # where Hydra looks for launchers
    assert chosen["tasks_per_node"] == 1 and chosen["nodes"] == 1  # trainer=cpu
    assert chosen["additional_parameters"]["requeue"] is True


def test_the_request_follows_the_trainer_layout() -> None:
    chosen = launcher(
        "hydra/launcher=slurm",
        "trainer=deepspeed_zero3",
        "trainer.devices=8",
        "trainer.num_nodes=4",
        "hydra.sweep.dir=/tmp/sweep",
    )
    assert (chosen["nodes"], chosen["tasks_per_node"], chosen["gpus_per_node"]) == (4, 8, 8)
    assert chosen["signal_delay_s"] == 120 and chosen["max_num_timeout"] == 10
    assert chosen["submitit_folder"] == "/tmp/sweep/.submitit/%j"
