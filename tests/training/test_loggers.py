"""Training metrics reach every logger a user can pick, alongside logs/metrics.csv, with
throughput and MFU logged while training."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ..conftest import LaunchFn
from ..steps.test_pretrain import TRAIN, data_run, pretrain_runs

__all__ = ["data_run"]  # the fixture, imported for the tests below

SHORT = [*TRAIN, "step.max_steps=6", "trainer.log_every_n_steps=2"]


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "logs" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def logged(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.mark.slow
def test_metrics_csv_has_loss_throughput_and_mfu(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    launch(*SHORT, check=True)
    [run] = pretrain_runs(outputs)
    rows = metric_rows(Path(run["run_dir"]))
    assert len(logged(rows, "train/loss")) == 3  # every 2 of 6 steps
    speeds = logged(rows, "perf/tokens_per_s")
    assert speeds and all(s > 0 for s in speeds)
    # this CPU's peak is known (the planner's estimate), so MFU is a fraction, not 0 or > 1
    mfu = logged(rows, "perf/mfu")
    assert mfu and all(0 < m < 1 for m in mfu)


@pytest.mark.slow
def test_tensorboard_mlflow_and_offline_wandb_receive_the_training_loss(
    launch: LaunchFn, outputs: Path, data_run: Path
) -> None:
    for logger in ("tensorboard", "mlflow", "wandb"):
        launch(*SHORT, f"logger={logger}", check=True)
    tensorboard, mlflow, wandb = (Path(r["run_dir"]) for r in pretrain_runs(outputs))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard / "logs" / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("train/loss")) == 3

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == "demo"]
    [found] = client.search_runs([experiment.experiment_id])
    assert found.data.tags["quark.run_dir"] == str(mlflow)
    assert len(client.get_metric_history(found.info.run_id, "train/loss")) == 3

    [offline] = list((wandb / "wandb").glob("offline-run-*"))
    assert list(offline.glob("run-*.wandb")), "no offline wandb run file"

    for directory in (tensorboard, mlflow, wandb):  # the CSV is always written
        assert len(logged(metric_rows(directory), "train/loss")) == 3
