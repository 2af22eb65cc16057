"""Quark's entry point: compose conf/launch.yaml with Hydra and run the chosen step.

python launch.py                      # the embedded default
python launch.py step=plan model=llama_1b trainer=deepspeed_zero3 trainer.devices=8
python launch.py --help
"""

import hydra
from omegaconf import DictConfig

from quark.core.errors import exit_cleanly, reported_by_exit_cleanly
from quark.core.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="launch")
@reported_by_exit_cleanly
def launch(cfg: DictConfig) -> None:
    from quark.launch import main

    main(cfg)


if __name__ == "__main__":
    exit_cleanly(launch)
