"""A run directory and its manifest: what a step read, wrote, measured, and how it ended.

    outputs/<experiment>/<step>/<timestamp>/
        .hydra/           as Hydra writes it
        config.yaml       the resolved, validated config the step ran with
        manifest.json     status, times, config hash, inputs, outputs (sha256), metrics, versions

The manifest is rewritten atomically at every change of state, and `completed` is written only
after every declared output exists and has been hashed.

A SLURM job that is requeued (preempted, or at its time limit: quark.slurm.requeue) starts again
in the same run directory; `Run.open` reopens the run it left `running` there, and the run ends
once, as completed or failed, in the attempt that finishes it.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from quark.core.environment import git_state, host_facts, library_versions
from quark.core.errors import ConfigError, QuarkError, one_line
from quark.core.files import (
    files_under,
    sha256_file,
    sha256_json,
    write_json_atomic,
    write_text_atomic,
)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# Keys that say where things go, not what is computed: left out of the config hash.
UNHASHED_KEYS = ("hydra", "paths", "inputs", "experiment_name")
# steps whose result the `governance` group changes (the gate's decision); for every other step
# the group is left out of the hash, so choosing a policy never invalidates a trained run
GOVERNED_STEPS = ("improve",)


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config, without the keys that only place outputs, and without
    `step.resume`: resuming is exact, so a resumed run computes what the run it continues
    would have."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    hashed = {k: v for k, v in data.items() if k not in UNHASHED_KEYS}
    if isinstance(hashed.get("step"), dict) and "resume" in hashed["step"]:
        hashed["step"] = {k: v for k, v in hashed["step"].items() if k != "resume"}
    step = hashed.get("step")
    if not (isinstance(step, dict) and step.get("name") in GOVERNED_STEPS):
        # the gate decides nothing a training or data run computes
        hashed.pop("governance", None)
    return sha256_json(hashed)


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")


def read_manifest(
    run_dir: Path, key: str | None = None, allowed: str | None = None
) -> dict[str, Any]:
    """The manifest of `run_dir`. Raises QuarkError naming the file; with `key`, a ConfigError
    on that key (the config value that named the run), with `allowed`."""
    import json

    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise _bad_run(key, f"{run_dir}: not a Quark run directory (no {MANIFEST})", allowed)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _bad_run(key, f"{path}: unreadable manifest ({exc})", allowed) from None
    if not isinstance(data, dict):
        raise _bad_run(key, f"{path}: unreadable manifest (not a JSON object)", allowed)
    return data


def _bad_run(key: str | None, problem: str, allowed: str | None) -> QuarkError:
    """A run that cannot be read as an input: on `key` when a config value named it."""
    if key is None:
        return QuarkError(problem + (f"; {allowed}" if allowed else ""))
    return ConfigError(key, problem, allowed)


def describe_input(path: Path) -> dict[str, Any]:
    """Record of one input: a run directory (by its outputs' digest) or a file (by its sha256).

    A run directory is verified first: it must have completed, and every output must still
    match the sha256 its manifest recorded.
    """
    path = Path(path).resolve()
    if not path.exists():
        raise QuarkError(f"{path}: input not found")
    if (path / MANIFEST).is_file():
        manifest = verify_run(path)
        return {
            "path": str(path),
            "kind": "run",
            "step": manifest.get("step"),
            "sha256": manifest["outputs_digest"],
        }
    files = files_under(path)
    digest = (
        sha256_file(path)
        if path.is_file()
        else sha256_json([(str(f.relative_to(path)), sha256_file(f)) for f in files])
    )
    return {
        "path": str(path),
        "kind": "file" if path.is_file() else "directory",
        "sha256": digest,
        "bytes": sum(f.stat().st_size for f in files),
    }


def verify_run(run_dir: Path, key: str | None = None, allowed: str | None = None) -> dict[str, Any]:
    """The manifest of a completed run whose outputs still match their recorded sha256.

    Raises:
        QuarkError: naming the run or file and what is wrong; with `key`, a ConfigError on
            that key (the config value that named the run).
    """
    manifest = read_manifest(run_dir, key, allowed)
    status = manifest.get("status")
    if status != "completed":
        raise _bad_run(
            key,
            f"{run_dir}: run is '{status}', not completed",
            allowed or "only completed runs can be used as inputs",
        )
    for output in manifest.get("outputs", []):
        file = Path(run_dir) / output["path"]
        if not file.is_file():
            raise _bad_run(key, f"{file}: output recorded in the manifest is missing", allowed)
        if _file_digest(file) != output["sha256"]:
            raise _bad_run(
                key,
                f"{file}: sha256 does not match the manifest (changed after the run completed)",
                "rerun the step that made it",
            )
    return manifest


# A step verifies the run it reads before loading it and again when recording it as an input;
# a model's weights are gigabytes, so each file is hashed once per process while its size and
# mtime stay the same.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(file: Path) -> str:
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(file)
    return _DIGESTS[key]


class RunRequeued(SystemExit):
    """Ends a process whose SLURM job was requeued: the job starts again and continues the run in
    the same directory, so the run is neither completed nor failed (`Run.fail` leaves it
    `running`). A SystemExit, so that neither Hydra nor submitit records the job as finished."""


# What a requeued job finds when its last attempt was stopped: `running` after a requeue or a
# kill, `failed` when a SIGTERM (preemption without a warning signal) ended the step.
UNFINISHED = ("running", "failed")


def continued_by_this_job(manifest: dict[str, Any]) -> bool:
    """Whether this process is the SLURM job that wrote `manifest`, started again by a requeue
    (SLURM keeps the job id and sets SLURM_RESTART_COUNT)."""
    job = os.environ.get("SLURM_JOB_ID")
    return (
        bool(job)
        and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
        and (manifest.get("host") or {}).get("slurm_job_id") == job
    )


class Run:
    """One step's run directory. Steps write through `path()` and declare with `add_output()`."""

    def __init__(self, directory: Path, manifest: dict[str, Any], writes: bool = True) -> None:
        self.dir = Path(directory)
        self.manifest = manifest
        # False in the extra processes of a distributed run: rank 0 alone keeps the manifest
        self.writes = writes
        self._declared: list[Path] = []
        self._started = time.monotonic()

    @classmethod
    def follower(cls, directory: Path, cfg: DictConfig) -> Run:
        """The run as seen by a non-zero rank: same directory, never writes the manifest."""
        return cls(
            Path(directory).resolve(),
            {"step": str(cfg.step.name), "status": "running"},
            writes=False,
        )

    @classmethod
    def open(
        cls, directory: Path, cfg: DictConfig, inputs: list[dict[str, Any]], overrides: list[str]
    ) -> Run:
        """Create the manifest as `running`, with the verified inputs already recorded; or reopen
        the run this requeued SLURM job left unfinished in `directory`."""
        directory = Path(directory).resolve()
        existing = directory / MANIFEST
        if existing.exists():
            earlier = read_manifest(directory)
            if not (continued_by_this_job(earlier) and earlier.get("status") in UNFINISHED):
                raise QuarkError(
                    f"{directory}: already holds a run; set hydra.run.dir to a new directory "
                    "(two launches in the same second share a timestamp)"
                )
            return cls._reopen(directory, earlier, cfg, inputs)
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "step": str(cfg.step.name),
            "experiment": str(cfg.experiment_name),
            "status": "running",
            "error": None,
            "started_at": now_iso(),
            "ended_at": None,
            "duration_s": None,
            "run_dir": str(directory),
            "config_hash": config_hash(cfg),
            "overrides": list(overrides),
            "seed": int(cfg.seed),
            "inputs": inputs,
            "outputs": [],
            "outputs_digest": None,
            "metrics": {},
            "versions": library_versions(),
            "git": git_state(Path(__file__).parent),
            "host": host_facts(),
        }
        run = cls(directory, manifest)
        run._write()
        return run

    @classmethod
    def _reopen(
        cls, directory: Path, earlier: dict[str, Any], cfg: DictConfig, inputs: list[dict[str, Any]]
    ) -> Run:
        """The run `earlier` describes, `running` again in this (requeued) process."""
        if earlier.get("config_hash") != config_hash(cfg):
            raise QuarkError(
                f"{directory}: the requeued job's config differs from the run it left there; "
                "start it as a new run"
            )
        manifest = {
            **earlier,
            "status": "running",
            "error": None,
            "ended_at": None,
            "duration_s": None,
            "inputs": inputs,
            "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "host": host_facts(),
        }
        run = cls(directory, manifest)
        # duration_s counts from the first attempt's start, queueing between attempts included
        started = datetime.fromisoformat(str(earlier["started_at"]))
        run._started -= (datetime.now(timezone.utc) - started).total_seconds()
        run._write()
        return run

    def path(self, *parts: str) -> Path:
        """A path inside the run directory; its parent directories exist."""
        target = self.dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def add_output(self, path: Path | str) -> Path:
        """Declare a file or directory (inside the run directory) as an output of this run."""
        target = Path(path) if Path(path).is_absolute() else self.dir / path
        self._declared.append(target)
        return target

    def update(self, **fields: Any) -> None:
        """Record step-specific facts in the manifest now (atomically), e.g. what it resumed from."""
        self.manifest.update(fields)
        self._write()

    def complete(self, metrics: dict[str, float]) -> None:
        """Hash every declared output, then mark the run completed (atomically)."""
        if not self.writes:
            return
        outputs = []
        for declared in self._declared:
            if not declared.exists():
                raise RuntimeError(f"{declared}: declared as an output but never written")
            for file in files_under(declared):
                outputs.append(
                    {
                        "path": str(file.relative_to(self.dir)),
                        "sha256": sha256_file(file),
                        "bytes": file.stat().st_size,
                    }
                )
        self.manifest["outputs"] = outputs
        self.manifest["outputs_digest"] = sha256_json([(o["path"], o["sha256"]) for o in outputs])
        self.manifest["metrics"] = {k: float(v) for k, v in metrics.items()}
        self._end("completed")

    def fail(self, error: BaseException) -> None:
        """Mark the run failed with `error`; a requeue is no failure: the run stays `running`."""
        if isinstance(error, RunRequeued):
            return
        message = " ".join(str(error).split()) or type(error).__name__
        self.manifest["error"] = {"type": type(error).__name__, "message": message}
        self._end("failed")

    def stop(self, reason: BaseException) -> None:
        """End as `pruned`: stopped on purpose before the end (no outputs are declared)."""
        self.manifest["error"] = {"type": type(reason).__name__, "message": one_line(str(reason))}
        self._end("pruned")

    def _end(self, status: str) -> None:
        self.manifest["status"] = status
        self.manifest["ended_at"] = now_iso()
        self.manifest["duration_s"] = round(time.monotonic() - self._started, 3)
        self._write()

    def _write(self) -> None:
        if self.writes:
            write_json_atomic(self.dir / MANIFEST, self.manifest)


def record_failure(
    directory: Path, cfg: DictConfig, overrides: list[str], error: BaseException
) -> None:
    """Leave a `failed` manifest in a run directory whose step never started (bad config)."""
    directory = Path(directory)
    if (directory / MANIFEST).exists() or process_rank() != 0:
        return
    step = OmegaConf.select(cfg, "step.name", default=None, throw_on_resolution_failure=False)
    experiment = OmegaConf.select(
        cfg, "experiment_name", default=None, throw_on_resolution_failure=False
    )
    stamp = now_iso()
    write_json_atomic(
        directory / MANIFEST,
        {
            "manifest_version": MANIFEST_VERSION,
            "step": step,
            "experiment": experiment,
            "status": "failed",
            "error": {"type": type(error).__name__, "message": " ".join(str(error).split())},
            "started_at": stamp,
            "ended_at": stamp,
            "duration_s": 0.0,
            "run_dir": str(directory.resolve()),
            "overrides": list(overrides),
            "inputs": [],
            "outputs": [],
            "metrics": {},
            "versions": library_versions(),
            "host": host_facts(),
        },
    )


def record_reuse(
    directory: Path, cfg: DictConfig, overrides: list[str], earlier: Path
) -> dict[str, float]:
    """Mark `directory` as `reused`: the completed run `earlier` already computed this config
    from the same inputs. Returns that run's metrics."""
    earlier_manifest = read_manifest(earlier)
    stamp = now_iso()
    metrics = dict(earlier_manifest.get("metrics", {}))
    write_json_atomic(
        Path(directory) / MANIFEST,
        {
            "manifest_version": MANIFEST_VERSION,
            "step": str(cfg.step.name),
            "experiment": str(cfg.experiment_name),
            "status": "reused",
            "reused_run": str(Path(earlier).resolve()),
            "error": None,
            "started_at": stamp,
            "ended_at": stamp,
            "duration_s": 0.0,
            "run_dir": str(Path(directory).resolve()),
            "config_hash": config_hash(cfg),
            "overrides": list(overrides),
            "inputs": earlier_manifest.get("inputs", []),
            "outputs": [],
            "metrics": metrics,
            "host": host_facts(),
        },
    )
    return metrics


def process_rank() -> int:
    """This process's global rank in a distributed run (0 when not distributed).

    Lightning sets LOCAL_RANK in the processes it launches; torchrun sets RANK; srun, which
    starts every rank of a job on SLURM (one task per device), sets SLURM_PROCID.
    """
    for variable in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        value = os.environ.get(variable)
        if value and value.isdigit():
            return int(value)
    return 0
