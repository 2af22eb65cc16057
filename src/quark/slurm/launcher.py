"""`hydra/launcher=slurm`: Hydra's submitit launcher, with Quark's checks and bookkeeping.

The submitting process (`launch`):
- checks the request before anything is submitted: one task per device (tasks_per_node is
  trainer.devices, nodes is trainer.num_nodes, which Lightning's SLURMEnvironment insists on),
  one layout per job array, and a partition that can hold it (quark.slurm.request); a request
  sbatch refuses all the same is one line too;
- waits for every job and reports each outcome as a local sweep does: a job's error is one line
  on stderr and sets the exit status; a job SLURM ended without a result (cancelled, out of time
  or memory, node failure) gets a `failed` manifest that says so, so the sweep summary shows it.

Each job (`__call__`, in every srun task of it):
- ranks other than 0 join rank 0's job directory without rewriting its .hydra/ files or its log;
- a requeued job continues its run from the newest checkpoint in its job directory
  (quark.slurm.requeue saved one there before requeueing);
- a job's error travels back as a `JobError` line (exceptions do not all pickle) and goes to
  the job's log; a task whose step failed then exits with status 1, so that srun ends the job's
  other tasks instead of leaving them waiting for it.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)
from omegaconf import DictConfig, OmegaConf, open_dict

from quark.core import errors
from quark.core.errors import (
    ConfigError,
    QuarkError,
    StepFailed,
    bad_input_message,
    debug_enabled,
    one_line,
)
from quark.core.files import write_json_atomic
from quark.core.run import (
    MANIFEST,
    UNFINISHED,
    continued_by_this_job,
    now_iso,
    process_rank,
    read_manifest,
    record_failure,
)

log = logging.getLogger("quark.slurm")


@dataclass(frozen=True)
class JobError:
    """A job's error, as the submitting process reports it."""

    message: str
    bad_input: bool

    @classmethod
    def of(cls, exc: BaseException) -> JobError:
        message = bad_input_message(exc)
        if message is not None:
            return cls(message, bad_input=True)
        cursor: BaseException | None = exc
        while cursor is not None and not isinstance(cursor, StepFailed):
            cursor = cursor.__cause__ or cursor.__context__
        if cursor is not None:
            return cls(one_line(str(cursor)), bad_input=False)
        return cls(f"{type(exc).__name__}: {one_line(str(exc))}", bad_input=False)


class SlurmJobEnded(Exception):
    """SLURM ended a job before its step finished (cancelled, time limit, memory, node failure)."""


class SlurmLauncher(SubmititSlurmLauncher):
    # ----- in the submitting process ---------------------------------------------------------

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit

        from quark.slurm.request import (
            check_layout,
            check_one_layout,
            check_request,
            query_partitions,
        )

        assert self.config is not None and self.hydra_context is not None
        check_layout(self.config, self.params)
        check_one_layout(self.hydra_context, self.config, job_overrides)
        params = dict(self.params)
        if str(OmegaConf.select(self.config, "trainer.accelerator", default="")) == "cpu":
            params["gpus_per_node"] = None  # slurm.yaml asks for trainer.devices GPUs
        check_request(params, query_partitions())

        # as hydra-submitit-launcher builds its executor: the base keys bare, the rest slurm_*
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=params.pop("submitit_folder"),
            slurm_max_num_timeout=params.pop("max_num_timeout"),
        )
        base_keys = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base_keys else f"{self._EXECUTOR}_{k}": v for k, v in params.items()},
            # a rank that dies takes the others with it, instead of leaving them waiting for it
            slurm_srun_args=["--kill-on-bad-exit=1"],
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))
        log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append(
                (
                    list(overrides),
                    "hydra.sweep.dir",
                    idx,
                    f"job_id_for_{idx}",
                    Singleton.get_state(),
                )
            )
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's error
                jobs = executor.map_array(self, *zip(*job_params, strict=True))
        except submitit.core.utils.FailedJobError as exc:
            lines = [line for line in str(exc).splitlines() if "error" in line.lower()]
            raise ConfigError(
                "hydra.launcher",
                f"sbatch refused the jobs: {one_line(lines[-1] if lines else str(exc))}",
                "see docs/slurm.md for the launcher's keys",
            ) from None
        return [
            self._outcome(job, idx, list(overrides))
            for idx, (job, overrides) in enumerate(
                zip(jobs, job_overrides, strict=True), start=initial_job_idx
            )
        ]

    def _outcome(self, job: Any, idx: int, overrides: list[str]) -> JobReturn:
        """Wait for `job`; return what Hydra expects, and queue its error for `exit_cleanly`."""
        from submitit.core.utils import UncompletedJobError

        try:
            if not _wait(job):
                raise UncompletedJobError("forgotten")
            # rank 0's: it records and reports; the others end with it (srun --kill-on-bad-exit)
            result: JobReturn = job.task(0).result()
        except UncompletedJobError as exc:
            ended = SlurmJobEnded(self._ended_early(job, exc))
            self._record_ended(idx, overrides, ended)
            errors._task_failures.append(StepFailed(f"job {idx}: {ended}"))
            return JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
        if result.status == JobStatus.COMPLETED and isinstance(result.return_value, JobError):
            error: JobError = result.return_value
            kind = QuarkError if error.bad_input else StepFailed
            errors._task_failures.append(kind(f"job {idx}: {error.message}"))
            result.return_value = None  # as a local sweep's failed job returns
        return result

    @staticmethod
    def _ended_early(job: Any, exc: Exception) -> str:
        from submitit.core.utils import FailedJobError

        if str(exc) == "forgotten":
            return (
                f"SLURM job {job.job_id} left the queue with no result and no accounting "
                "record (cancelled while it waited?)"
            )
        if isinstance(exc, FailedJobError):  # it raised outside the step: the trace's last line
            parts = str(exc).split("-" * 22)
            trace = (parts[1] if len(parts) > 2 else str(exc)).strip().splitlines() or ["?"]
            return f"SLURM job {job.job_id} failed: {trace[-1].strip()} (log: {job.paths.stderr})"
        state = job.get_info(mode="force").get("State") or "in an unknown state"
        return (
            f"SLURM job {job.job_id} ended {state} before its step finished "
            f"(log: {job.paths.stdout})"
        )

    def _record_ended(self, idx: int, overrides: list[str], ended: SlurmJobEnded) -> None:
        """Leave a `failed` manifest that says what SLURM did in the directory of a job SLURM
        ended: over the one the job left unfinished, or a new one when it never started."""
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        if not (job_dir / MANIFEST).is_file():
            record_failure(job_dir, cfg, overrides, ended)
            return
        manifest = read_manifest(job_dir)
        if manifest.get("status") in UNFINISHED:  # left running, or failed of the kill
            error = {"type": type(ended).__name__, "message": str(ended)}
            if manifest.get("error"):
                error["step_error"] = manifest["error"]["message"]
            write_json_atomic(
                job_dir / MANIFEST,
                {**manifest, "status": "failed", "error": error, "ended_at": now_iso()},
            )

    # ----- in the job, in each of its srun tasks --------------------------------------------

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        import submitit

        assert self.hydra_context is not None
        assert self.config is not None
        assert self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = submitit.JobEnvironment().job_id
            cfg.hydra.job.num = job_num
            rank = process_rank()
            if rank != 0:
                # as quark.training.relaunch does for ranks Lightning starts itself
                cfg.hydra.job.name = f"{cfg.hydra.job.name}_rank_{rank}"
                cfg.hydra.output_subdir = None
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        if rank != 0 and _reused_by_rank_0(cfg):
            return JobReturn(overrides=sweep_overrides, status=JobStatus.COMPLETED)
        # launch.py's task hands its errors to exit_cleanly, which does not run in a job: run
        # the step's task itself and send its error back as a line
        step = cast(
            Callable[[DictConfig], Any],
            getattr(self.task_function, "__wrapped__", self.task_function),
        )
        failures: list[JobError] = []
        notes = []  # logged once Hydra has set up the job's logging
        earlier = _this_jobs_run(job_dir)
        if earlier is not None and earlier.get("status") == "completed":
            notes.append(f"{job_dir} completed before SLURM requeued the job; not run again")
            metrics = dict(earlier.get("metrics", {}))
            step = lambda _: metrics  # noqa: E731
        elif earlier is not None:
            checkpoint = _resume_from_newest_checkpoint(cfg, job_dir)
            notes.append(
                f"SLURM requeued the job: the run continues from {checkpoint}"
                if checkpoint
                else f"SLURM requeued the job: the step starts again in {job_dir}"
            )

        def task(cfg: DictConfig) -> Any:
            for note in notes:
                log.info(note)
            try:
                return step(cfg)
            except Exception as exc:
                if debug_enabled():
                    traceback.print_exc()
                failures.append(JobError.of(exc))
                return None

        terminated = _SigtermNoted()
        result = run_job(
            hydra_context=self.hydra_context,
            task_function=task,
            config=cfg,
            job_dir_key=job_dir_key,
            job_subdir_key="hydra.sweep.subdir",
        )
        if failures:
            print(f"error: {failures[0].message}", file=sys.stderr)  # the job's log says why
            if _ending_by_slurm(terminated):
                # SLURM is ending the job (requeue, cancel, time limit) and the step failed of
                # it (a rank gone, a closed connection): no result, or the submitting process
                # would take it for the job's; it learns the end from SLURM, or the requeued
                # job reports
                raise SystemExit(1)
            result.return_value = failures[0]
            if _task_count() > 1:
                atexit.register(_end_the_other_tasks, rank)
        return result


# How long a failed rank other than 0 waits for rank 0 to end as well before it ends the job's
# other tasks itself. Bad input fails every rank within seconds of each other, and rank 0's
# result is the job's: it must be saved before srun kills anything. A rank 0 still running after
# this waits for the failed rank (at the rendezvous, in a collective).
RANK_0_GRACE_S = 30.0


def _end_the_other_tasks(rank: int, grace_s: float = RANK_0_GRACE_S) -> None:
    """Exit with status 1 once submitit has saved this task's result (an exit handler), so that
    srun (--kill-on-bad-exit) ends the job's other tasks. A step that failed on one rank leaves
    the others waiting for it at the rendezvous or in a collective until the process group's
    timeout (30 minutes), with the job RUNNING; the submitting process would wait with it.

    A rank other than 0 first waits up to `grace_s` for rank 0's result, and exits normally if
    it comes: rank 0 ended by itself, with the result the submitting process reports."""
    if rank != 0:
        import submitit
        from submitit.core.utils import JobPaths

        job_id = submitit.JobEnvironment().job_id
        rank_0_result = JobPaths(os.environ["SUBMITIT_FOLDER"], job_id, task_id=0).result_pickle
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if rank_0_result.exists():
                return
            time.sleep(0.5)
    for handler in logging.getLogger().handlers:  # the job's log: os._exit flushes nothing
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


# How long a failed rank of a multi-task job waits for SLURM's SIGTERM before taking its failure
# for the job's result. `scontrol requeue` or a node failure signals every task, but a peer can
# exit and close its connections before this rank's signal arrives: its "Connection closed by
# peer" is then part of the ending. SLURM signals all tasks of a step at once; seconds suffice.
PEER_FAILURE_GRACE_S = 10.0


def _ending_by_slurm(terminated: _SigtermNoted, grace_s: float | None = None) -> bool:
    """Whether SLURM is ending this job (a SIGTERM seen, or a requeue begun here); in a job of
    several tasks, a failure waits up to `grace_s` for the SIGTERM that may be on its way."""
    if terminated.seen or _requeue_started():
        return True
    if _task_count() < 2:
        return False
    deadline = time.monotonic() + (PEER_FAILURE_GRACE_S if grace_s is None else grace_s)
    while time.monotonic() < deadline:
        time.sleep(0.1)  # a signal's Python handler runs between these sleeps
        if terminated.seen or _requeue_started():
            return True
    return False


def _task_count() -> int:
    """The number of tasks srun started for this job step (1 outside SLURM)."""
    try:
        return int(os.environ.get("SLURM_NTASKS") or os.environ.get("SLURM_STEP_NUM_TASKS") or 1)
    except ValueError:
        return 1


def _requeue_started() -> bool:
    """Whether this process has begun ending for a requeue (quark.slurm.requeue.STARTED; that
    module is imported only by a training step)."""
    requeue = sys.modules.get("quark.slurm.requeue")
    return bool(requeue is not None and requeue.STARTED.is_set())


class _SigtermNoted:
    """Notes a SIGTERM and hands it on to the handler in place (submitit's; Lightning composes
    its own with this one while it trains)."""

    def __init__(self) -> None:
        self.seen = False
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        self.seen = True
        if callable(self._previous):
            self._previous(signum, frame)


def _wait(job: Any, check_every_s: float = 5) -> bool:
    """Wait until `job` is done, as submitit's `job.wait()` does; False for a job SLURM has
    forgotten: an array task cancelled while it was pending leaves no accounting record, and
    submitit would wait for it forever."""
    checked, strikes = time.monotonic(), 0
    while not job.done():
        time.sleep(1)
        if time.monotonic() - checked >= check_every_s:
            checked = time.monotonic()
            strikes = strikes + 1 if _forgotten(job.job_id) else 0
            if strikes == 2:
                return False
    return True


def _forgotten(job_id: str) -> bool:
    """Neither queued (squeue keeps ended jobs for MinJobAge) nor recorded (sacct, which fails
    where the cluster keeps no accounting). An unreachable controller decides nothing."""
    import subprocess

    def ask(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    queued = ask("squeue", "--noheader", f"--jobs={job_id}", "--format=%i")
    if queued.stdout.strip() or (queued.returncode != 0 and "Invalid job id" not in queued.stderr):
        return False
    recorded = ask("sacct", "--noheader", "--allocations", f"--jobs={job_id}", "--format=State")
    return recorded.returncode != 0 or not recorded.stdout.strip()


def _this_jobs_run(job_dir: Path) -> dict[str, Any] | None:
    """The manifest this SLURM job left in `job_dir` before it was requeued, if any."""
    if not (job_dir / MANIFEST).is_file():
        return None
    manifest = read_manifest(job_dir)
    return manifest if continued_by_this_job(manifest) else None


def _resume_from_newest_checkpoint(cfg: DictConfig, job_dir: Path) -> Path | None:
    """Point step.resume at the newest checkpoint in `job_dir`, if it has one and the step
    resumes; return it."""
    from quark.training.resume import newest_checkpoint

    checkpoint = newest_checkpoint(job_dir / "checkpoints")
    if checkpoint is None or OmegaConf.select(cfg, "step.resume", default="absent") == "absent":
        return None
    with open_dict(cfg):
        cfg.step.resume = str(checkpoint)
    return checkpoint


def _reused_by_rank_0(cfg: DictConfig) -> bool:
    """Whether rank 0 will take a completed run instead of training (quark.launch does in a
    sweep): the other ranks must not start a run that rank 0 never joins."""
    from quark.core.run import config_hash
    from quark.core.runs import find_runs, reusable_run
    from quark.launch import resolve_inputs

    cfg = cfg.copy()  # as Hydra hands it to the task: without its own node
    with open_dict(cfg):
        del cfg["hydra"]
    wanted = config_hash(cfg)
    completed = find_runs(
        cfg.paths.output_dir,
        experiment=str(cfg.experiment_name),
        step=str(cfg.step.name),
        status="completed",
    )
    if not any(record.manifest.get("config_hash") == wanted for record in completed):
        return False  # the usual case, decided without hashing the inputs again
    try:
        return reusable_run(cfg, resolve_inputs(cfg)[1]) is not None
    except Exception:
        return False  # rank 0 meets the same error and reports it
