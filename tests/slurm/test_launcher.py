"""hydra/launcher=slurm on the local one-node cluster: a sweep is one job array whose jobs each
leave a complete run directory; a failed and a cancelled job show as failed; a request the
cluster cannot hold is refused in one line before anything is submitted."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path

import pytest

from ..conftest import LaunchFn
from ..steps.test_pretrain import TRAIN, data_run
from .conftest import SLURM, Background, slurm

__all__ = ["data_run"]  # the fixture, imported for the test below

pytestmark = SLURM

LOCAL = "hydra/launcher=slurm_local"


def sweep_dir(outputs: Path, step: str = "plan") -> Path:
    [found] = (outputs / "demo" / step / "multirun").iterdir()
    return found


def summary(sweep: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep / "sweep_summary.csv").open()))


def test_a_three_job_sweep_is_one_job_array_and_every_job_completes(
    launch: LaunchFn, outputs: Path
) -> None:
    done = launch("-m", LOCAL, "step=plan", "model=llama_tiny,llama_small,llama_124m", check=True)
    sweep = sweep_dir(outputs)
    rows = summary(sweep)
    assert [(r["job"], r["model"], r["status"]) for r in rows] == [
        ("0", "llama_tiny", "completed"),
        ("1", "llama_small", "completed"),
        ("2", "llama_124m", "completed"),
    ]
    assert "completed" in done.stdout and str(sweep) in done.stdout
    job_ids = set()
    for job, model in enumerate(("llama_tiny", "llama_small", "llama_124m")):
        run_dir = sweep / str(job)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["run_dir"] == str(run_dir)
        assert f"model={model}" in manifest["overrides"]
        [output] = manifest["outputs"]
        assert output["path"] == "plan.json"
        assert hashlib.sha256((run_dir / "plan.json").read_bytes()).hexdigest() == output["sha256"]
        assert json.loads((run_dir / "plan.json").read_text())["model"]["name"] == model
        assert (run_dir / ".hydra" / "overrides.yaml").is_file()
        job_ids.add(manifest["host"]["slurm_job_id"])
    # three SLURM jobs, tasks of one array, all COMPLETED in the accounting database
    assert len(job_ids) == 3 and None not in job_ids
    [array] = {p.name.split("_")[0] for p in (sweep / ".submitit").glob("[0-9]*_[0-9]*")}
    expected = [f"{array}_{i}|COMPLETED" for i in range(3)]
    deadline = time.monotonic() + 30  # slurmctld hands records to slurmdbd asynchronously
    while True:
        states = slurm("sacct", "-n", "-X", "-j", array, "-o", "JobID,State", "--parsable2")
        if sorted(states.split()) == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sorted(states.split()) == expected


def test_a_failed_job_and_a_cancelled_job_show_as_failed(
    background: Background, outputs: Path, tmp_path: Path
) -> None:
    # job 2's batch script waits before it starts the step, long enough to be cancelled running
    hold = tmp_path / "hold-job-2.sh"
    hold.write_text('if [ "$SLURM_ARRAY_TASK_ID" = 2 ]; then sleep 600; fi\n')
    submitter = background(
        "-m",
        LOCAL,
        "step=plan",
        "trainer.micro_batch_size=4,0,8",
        f"hydra.launcher.setup=['. {hold}']",
    )
    array = _array_job(state="RUNNING", task=2)
    slurm("scancel", f"{array}_2")
    stdout, stderr = submitter.communicate(timeout=180)

    # job 1's bad value is bad input: one line naming the key, and exit status 2 for the sweep
    sweep = sweep_dir(outputs)
    assert submitter.returncode == 2, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        "error: job 1: trainer.micro_batch_size: 0 is out of range; allowed: >= 1",
        # submitit learns of the cancel from the accounting database (sacct)
        f"error: job 2: SLURM job {array}_2 ended CANCELLED by 0 before its step finished "
        f"(log: {sweep}/.submitit/{array}_2/{array}_2_0_log.out)",
    ], stderr
    rows = summary(sweep)
    assert [(r["trainer.micro_batch_size"], r["status"]) for r in rows] == [
        ("4", "completed"),
        ("0", "failed"),
        ("8", "failed"),
    ]
    assert rows[1]["error"] == "trainer.micro_batch_size: 0 is out of range; allowed: >= 1"
    assert rows[2]["error"].startswith(f"SLURM job {array}_2 ended CANCELLED by 0")
    cancelled = json.loads((sweep / "2" / "manifest.json").read_text())
    assert cancelled["error"]["type"] == "SlurmJobEnded" and cancelled["outputs"] == []
    assert "failed" in stdout


def test_a_job_cancelled_while_it_waits_in_the_queue_does_not_hang_the_sweep(
    background: Background, outputs: Path
) -> None:
    # a pending array task that is cancelled leaves no accounting record: submitit alone would
    # wait for it forever
    submitter = background(
        "-m",
        LOCAL,
        "step=plan",
        "model=llama_tiny,llama_small",
        "+hydra.launcher.additional_parameters.hold=true",
    )
    array = _array_job(state="PENDING")
    slurm("scancel", f"{array}_1")
    slurm("scontrol", "release", f"{array}_0")
    _, stderr = submitter.communicate(timeout=180)
    assert submitter.returncode == 1, stderr
    assert stderr.strip() == (
        f"error: job 1: SLURM job {array}_1 left the queue with no result and no accounting "
        "record (cancelled while it waited?)"
    )
    assert [r["status"] for r in summary(sweep_dir(outputs))] == ["completed", "failed"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8"],
            "error: hydra.launcher.gpus_per_node: 8 GPUs per node (trainer.devices) but the "
            "nodes of partition 'debug' have 0; allowed: <= 0, or another partition "
            "(hydra.launcher.partition)",
        ),
        (
            [LOCAL, "trainer.num_nodes=4"],
            "error: hydra.launcher.nodes: 4 nodes (trainer.num_nodes) but partition 'debug' "
            "has 1; allowed: <= 1, or another partition (hydra.launcher.partition)",
        ),
        (
            [LOCAL, "hydra.launcher.partition=gpu"],
            "error: hydra.launcher.partition: no partition 'gpu' on this cluster; partitions: debug",
        ),
        (
            [LOCAL, "trainer.devices=1,2"],
            "error: trainer: the sweep's jobs need different resources (trainer.devices=1: 1 x "
            "cpu on 1 node(s); trainer.devices=2: 2 x cpu on 1 node(s)), but one SLURM job "
            "array asks for one; launch each layout separately",
        ),
        (
            [LOCAL, "hydra.launcher.constraint=h100"],
            "error: hydra.launcher: sbatch refused the jobs: sbatch: error: Batch job "
            "submission failed: Invalid feature specification; see docs/slurm.md for the "
            "launcher's keys",
        ),
    ],
)
def test_a_request_the_cluster_cannot_hold_is_one_line_and_exit_2(
    launch: LaunchFn, outputs: Path, overrides: list[str], message: str
) -> None:
    before = slurm("squeue", "-h", "-o", "%i")
    done = launch("-m", "step=plan", *overrides)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == message
    assert slurm("squeue", "-h", "-o", "%i") == before
    assert not list(outputs.rglob("manifest.json"))


def _array_job(state: str, task: int | None = None, timeout: float = 60) -> str:
    """The id of the job array once its task `task` (or any task) is in `state`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in slurm("squeue", "-h", "-r", "-o", "%i|%T").splitlines():
            job, found = line.split("|")
            array, _, index = job.partition("_")
            if found == state and (task is None or index == str(task)):
                return array
        time.sleep(0.5)
    raise AssertionError(f"no job array with a {state} task appeared")


def test_a_step_that_fails_on_rank_0_alone_ends_the_job_instead_of_leaving_rank_1_waiting(
    background: Background, outputs: Path, data_run: Path
) -> None:
    # the sweep directory given again after a failed sweep: rank 0 refuses to open a run over
    # the earlier one; rank 1, which only follows rank 0's run, goes on to the rendezvous and
    # would wait there for the process group's timeout (30 min), the job RUNNING
    sweep = outputs / "again"
    (sweep / "0").mkdir(parents=True)
    earlier = {"status": "failed", "step": "pretrain", "experiment": "demo"}
    (sweep / "0" / "manifest.json").write_text(json.dumps(earlier))
    submitter = background(
        "-m",
        LOCAL,
        *TRAIN,
        f"step.data_dir={data_run}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.sweep.dir={sweep}",
    )
    stdout, stderr = submitter.communicate(timeout=240)

    assert submitter.returncode == 2, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        f"error: job 0: {sweep / '0'}: already holds a run; set hydra.run.dir to a new directory "
        "(two launches in the same second share a timestamp)"
    ], stderr
    [job_id] = {p.name for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit()}
    rank_1_log = (sweep / ".submitit" / job_id / f"{job_id}_1_log.err").read_text()
    assert "already holds a run" not in rank_1_log  # rank 1 did not fail: srun ended it
    # srun ended the step because rank 0 exited with status 1 after saving its error
    deadline = time.monotonic() + 30  # slurmctld hands records to slurmdbd asynchronously
    while True:
        state = slurm("sacct", "-n", "-X", "-j", job_id, "-o", "State", "--parsable2").split()
        if state == ["FAILED"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert state == ["FAILED"]
    assert json.loads((sweep / "0" / "manifest.json").read_text()) == earlier
    assert "failed" in stdout
