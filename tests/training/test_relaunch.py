"""DDP under Hydra beyond a single run: in a sweep and in a pipeline stage, the extra rank joins
its own job in its own run directory (Lightning alone relaunches the whole command line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ..conftest import LaunchFn, manifests
from ..steps.test_pretrain import TINY_MODEL, data_run, weights

__all__ = ["data_run"]  # the fixture, imported for the tests below

DDP = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "trainer.devices=2",
    "trainer.micro_batch_size=2",
]
SHORT = [
    *TINY_MODEL,
    "step.seq_len=32",
    "step.max_steps=4",
    "step.val_every_n_steps=4",
    "step.val_samples=4",
    "step.checkpoint_every_n_steps=4",
]


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_trains_each_job_once_in_its_own_directory(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    done = launch("-m", "step=pretrain", *SHORT, *DDP, "step.optim.lr=1e-2,3e-3", check=True)
    runs = [m for m in manifests(outputs) if m["step"] == "pretrain"]
    # two jobs, not four: the extra ranks did not start sweeps of their own
    assert len(runs) == 2, done.stdout
    assert sorted(Path(m["run_dir"]).name for m in runs) == ["0", "1"]
    assert all(m["status"] == "completed" for m in runs)
    assert {tuple(m["overrides"])[-1] for m in runs} == {
        "step.optim.lr=0.01",  # Hydra's sweeper writes the values back as floats
        "step.optim.lr=0.003",
    }
    # the jobs trained with their own learning rates
    a, b = (weights(Path(m["run_dir"]) / "checkpoints" / "last.ckpt") for m in runs)
    assert not torch.equal(a["model.lm_head.weight"], b["model.lm_head.weight"])


PIPELINE = """
name: ddp_pretrain
run_subdir: pipeline/${.name}
overrides: []
stages:
  - step: pretrain
    overrides: [%s]
"""


@pytest.mark.slow
def test_a_ddp_stage_of_a_pipeline_runs_once_in_the_stage_directory(
    launch: LaunchFn, outputs: Path, data_run: Path, tmp_path: Path
) -> None:
    conf = tmp_path / "extra_conf"
    (conf / "pipeline").mkdir(parents=True)
    (conf / "pipeline" / "ddp_pretrain.yaml").write_text(
        PIPELINE % ", ".join(f"'{o}'" for o in [*SHORT, *DDP])
    )
    launch("pipeline=ddp_pretrain", f"hydra.searchpath=[file://{conf}]", check=True)
    runs = [m for m in manifests(outputs) if m["step"] == "pretrain"]
    assert len(runs) == 1 and runs[0]["status"] == "completed"
    # the extra rank trained in the stage's directory: no second pipeline, no stray run
    run_dir = Path(runs[0]["run_dir"])
    assert run_dir.parent == outputs / "demo" / "pretrain"
    assert len(list(run_dir.parent.iterdir())) == 1
    assert len(list((outputs / "demo" / "pipeline" / "ddp_pretrain").iterdir())) == 1
