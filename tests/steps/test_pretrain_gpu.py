"""Pretrain on one GPU in bf16-mixed: loss falls, MFU is logged against the GPU's peak, and the
checkpoint the export is made from holds the trained weights exactly. Runs on the accelerator machine only."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ..conftest import LaunchFn
from .test_pretrain import TRAIN, data_run, pretrain_runs

__all__ = ["data_run"]  # the fixture, imported for the tests below


@pytest.mark.gpu
@pytest.mark.slow
def test_bf16_pretraining_on_one_gpu(launch: LaunchFn, outputs: Path, data_run: Path) -> None:
    launch(*TRAIN, "trainer=gpu", "trainer.log_every_n_steps=4", check=True)
    [run] = pretrain_runs(outputs)
    metrics = run["metrics"]
    # one process held the model whole: the checkpoint holds its weights exactly
    assert metrics["checkpoint_max_weight_diff"] == 0.0
    with open(Path(run["run_dir"]) / "logs" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert losses[-1] < losses[0]
    mfu = [float(r["perf/mfu"]) for r in rows if r.get("perf/mfu")]
    # logged for the GPUs the planner knows (H100, H200, A100): there it must be
    import torch

    known = any(name in torch.cuda.get_device_name() for name in ("H100", "H200", "A100"))
    assert mfu or not known, "no MFU logged on a GPU whose peak the planner knows"
    assert all(0 < m < 1 for m in mfu)
