"""Quark's entry point: compose conf/launch.yaml with Hydra and run the chosen step or pipeline.

python launch.py                      # the embedded default: pipeline=default (data, then pretrain)
python launch.py step=plan model=llama_1b trainer=deepspeed_zero3 trainer.devices=8
python launch.py --help
"""

import sys

import hydra
from omegaconf import DictConfig

from quark.core.errors import exit_cleanly, reported_by_exit_cleanly
from quark.resolvers import register_resolvers

register_resolvers()

# A command line that chooses nothing to run gets conf/pipeline/default.yaml; one that names a
# step, a pipeline, an experiment or a search, asks for help, or sweeps (-m) is left as it is.
DEFAULT_PIPELINE = "pipeline=default"
CHOOSERS = ("step", "pipeline", "experiment", "hparams_search")
OWN_MODES = ("-m", "--multirun", "-h", "--help", "--hydra-help", "--info", "--shell-completion")


def with_default_pipeline(argv: list[str]) -> list[str]:
    """`argv` with pipeline=default added when it chooses nothing to run."""
    for arg in argv:
        if arg in OWN_MODES or arg.startswith("--shell-completion"):
            return argv
        if arg.split("=", 1)[0].lstrip("+~") in CHOOSERS:
            return argv
    return [*argv, DEFAULT_PIPELINE]


@hydra.main(version_base="1.3", config_path="conf", config_name="launch")
@reported_by_exit_cleanly
def launch(cfg: DictConfig) -> None:
    from quark.launch import main

    main(cfg)


if __name__ == "__main__":
    sys.argv[1:] = with_default_pipeline(sys.argv[1:])
    exit_cleanly(launch)
