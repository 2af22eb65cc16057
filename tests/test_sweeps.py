"""Rerunning a sweep: completed jobs are reused, an interrupted job continues from its
checkpoint, and the summary says which is which."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from .conftest import LaunchFn
from .steps.test_pretrain import TRAIN, data_run

__all__ = ["data_run"]  # the fixture, imported for the tests below

SWEEP = ["-m", *TRAIN, "step.max_steps=8", "step.optim.lr=1e-2,3e-3"]


def summary_rows(outputs: Path) -> list[list[dict[str, str]]]:
    """Each sweep's summary rows, oldest sweep first."""
    found = sorted((outputs / "demo" / "pretrain" / "multirun").glob("*/sweep_summary.csv"))
    return [list(csv.DictReader(path.open())) for path in found]


@pytest.mark.slow
def test_a_rerun_sweep_reuses_completed_jobs_and_resumes_an_interrupted_one(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    launch(*SWEEP, check=True)
    [first] = summary_rows(outputs)
    assert [(r["step.optim.lr"], r["status"]) for r in first] == [
        ("0.01", "completed"),
        ("0.003", "completed"),
    ]
    assert all(float(r["val_loss"]) > 0 for r in first)
    # job 1 looks killed after step 4: its manifest still says running, and only the
    # checkpoint of step 4 is on disk (the one of step 8 and last.ckpt never were)
    killed = Path(first[1]["run_dir"])
    manifest = json.loads((killed / "manifest.json").read_text())
    (killed / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    (killed / "checkpoints" / "last.ckpt").unlink()
    (killed / "checkpoints" / "step_000008.ckpt").unlink()

    import time

    time.sleep(1.1)  # a new sweep directory (its name is the second it started)
    launch(*SWEEP, check=True)
    _, second = summary_rows(outputs)
    assert [r["status"] for r in second] == ["reused", "completed"]
    assert second[0]["run_dir"] == first[0]["run_dir"]  # points at the run that computed it
    resumed_dir = Path(second[1]["run_dir"])
    resumed = json.loads((resumed_dir / "manifest.json").read_text())
    assert resumed["resumed_from"] == str(killed / "checkpoints" / "step_000004.ckpt")
    # it trained steps 5 to 8 (not zero steps from a final checkpoint): its log starts with
    # step 4's validation (step index 3: step 4's checkpoint was saved before it, so the
    # resumed run owes it) and holds the in-training validation after step 8 (step index 7),
    # not only the final one; and it ends at the same weights
    with (resumed_dir / "logs" / "metrics.csv").open() as handle:
        validated = [int(r["step"]) for r in csv.DictReader(handle) if r.get("val/loss")]
    assert validated[0] == 3 and 7 in validated, validated
    assert float(second[1]["val_loss"]) == pytest.approx(float(first[1]["val_loss"]), abs=1e-6)
