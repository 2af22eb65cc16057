"""trainer.compile=true trains a torch.compile'd model to the loss of the eager one, and its
checkpoint and HF export keep the eager parameter names."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import LaunchFn
from ..steps.test_pretrain import TRAIN, data_run, pretrain_runs, weights

__all__ = ["data_run"]  # the fixture, imported for the tests below


@pytest.mark.slow
def test_a_compiled_model_trains_like_the_eager_one(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    short = [*TRAIN, "step.max_steps=4"]
    launch(*short, check=True)
    launch(*short, "trainer.compile=true", check=True)
    eager, compiled = pretrain_runs(outputs)
    assert compiled["status"] == "completed"
    # inductor fuses kernels, so floating-point sums differ in the last bits only
    assert abs(eager["metrics"]["val_loss"] - compiled["metrics"]["val_loss"]) < 1e-3
    assert compiled["metrics"]["hf_max_logit_diff"] < 1e-4
    a = weights(Path(eager["run_dir"]) / "checkpoints" / "last.ckpt")
    b = weights(Path(compiled["run_dir"]) / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()  # no "_orig_mod." prefixes: the checkpoint resumes either way
