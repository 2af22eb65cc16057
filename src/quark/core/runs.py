"""Finds run directories under an output directory by reading their manifests."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.run import MANIFEST

# outputs/<experiment>/<step>/<timestamp>, multirun jobs and pipeline runs.
PATTERNS = (
    f"*/*/*/{MANIFEST}",
    f"*/*/multirun/*/*/{MANIFEST}",
    f"*/pipeline/*/*/{MANIFEST}",
)


@dataclass
class RunRecord:
    path: Path
    manifest: dict[str, Any]

    @property
    def status(self) -> str:
        status = str(self.manifest.get("status", "unknown"))
        if status == "running" and self._process_gone():
            return "interrupted"
        return status

    @property
    def started_at(self) -> str:
        return str(self.manifest.get("started_at") or "")

    def _process_gone(self) -> bool:
        # A run left `running` by a process that no longer exists on this host was killed.
        host = self.manifest.get("host", {})
        if host.get("hostname") != socket.gethostname() or not host.get("pid"):
            return False
        try:
            os.kill(int(host["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False


def find_runs(
    output_dir: Path | str,
    experiment: str | None = None,
    step: str | None = None,
    status: str | None = None,
) -> list[RunRecord]:
    """Runs under `output_dir`, oldest first, filtered by experiment, step and status."""
    root = Path(output_dir)
    seen: set[Path] = set()
    records = []
    for pattern in PATTERNS:
        for manifest_path in root.glob(pattern):
            run_dir = manifest_path.parent
            if run_dir in seen:
                continue
            seen.add(run_dir)
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                manifest = {"status": "unreadable", "step": None, "experiment": None}
            records.append(RunRecord(run_dir, manifest))
    selected = [
        r
        for r in records
        if (experiment is None or r.manifest.get("experiment") == experiment)
        and (step is None or r.manifest.get("step") == step)
        and (status is None or r.status == status)
    ]
    return sorted(selected, key=lambda r: (r.started_at, str(r.path)))


def latest_completed(output_dir: Path | str, experiment: str, step: str) -> RunRecord | None:
    runs = find_runs(output_dir, experiment=experiment, step=step, status="completed")
    return runs[-1] if runs else None


def reusable_run(cfg: Any, inputs: list[dict[str, Any]]) -> Path | None:
    """The newest completed run of this step and experiment with the same config hash and
    input hashes: what a pipeline stage or a rerun sweep job can take instead of recomputing."""
    from quark.core.run import config_hash
    from quark.core.step_registry import BY_NAME

    if not BY_NAME[str(cfg.step.name)].reusable_for(cfg):
        return None
    wanted_hash = config_hash(cfg)
    wanted_inputs = sorted(i["sha256"] for i in inputs)
    runs = find_runs(
        cfg.paths.output_dir,
        experiment=str(cfg.experiment_name),
        step=str(cfg.step.name),
        status="completed",
    )
    for record in reversed(runs):
        manifest = record.manifest
        if (
            manifest.get("config_hash") == wanted_hash
            and sorted(i["sha256"] for i in manifest.get("inputs", [])) == wanted_inputs
        ):
            return record.path
    return None
