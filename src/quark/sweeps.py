"""The end of a multirun: one table and one CSV of every job, its swept values, how it ended,
its objective and, for a failed job, why.

Installed as a Hydra callback (conf/launch.yaml, `hydra.callbacks.sweep_summary`); the objective
is a metric name from the jobs' manifests (`hydra.callbacks.sweep_summary.objective=val_loss`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SUMMARY_FILE = "sweep_summary.csv"


class SweepSummary(Callback):
    def __init__(self, objective: str = "val_loss") -> None:
        self.objective = objective

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = summarise(sweep_dir, self.objective)
        if rows:
            write_summary(sweep_dir / SUMMARY_FILE, rows)
            print_summary(rows, sweep_dir, self.objective)


def summarise(sweep_dir: Path, objective: str) -> list[dict[str, Any]]:
    """One row per job directory (0, 1, ...): job, swept overrides, status, objective, error,
    and every metric the job recorded."""
    jobs = sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    manifests = {}
    for job in jobs:
        manifest_path = job / "manifest.json"
        manifests[job.name] = (
            json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        )
    swept = _swept_keys([m.get("overrides", []) for m in manifests.values()])
    rows = []
    for name, manifest in manifests.items():
        overrides = dict(o.split("=", 1) for o in manifest.get("overrides", []) if "=" in o)
        metrics = manifest.get("metrics", {})
        error = (manifest.get("error") or {}).get("message", "")
        rows.append(
            {
                "job": name,
                **{key: overrides.get(key, "") for key in swept},
                "status": manifest.get("status", "not started"),
                objective: metrics.get(objective, ""),
                "error": error,
                **{f"metric.{k}": v for k, v in sorted(metrics.items()) if k != objective},
                "run_dir": manifest.get("reused_run") or str(sweep_dir / name),
            }
        )
    return rows


def _swept_keys(override_lists: list[list[str]]) -> list[str]:
    """The override keys whose value differs between jobs, in command-line order."""
    values: dict[str, set[str]] = {}
    for overrides in override_lists:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1]


def write_summary(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def print_summary(rows: list[dict[str, Any]], sweep_dir: Path, objective: str) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    shown = [k for k in rows[0] if not k.startswith("metric.") and k != "run_dir"]
    table = Table(title=f"Sweep {sweep_dir}", title_justify="left")
    for column in shown:
        table.add_column(column)
    for row in rows:
        cells = []
        for column in shown:
            value = row.get(column, "")
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        table.add_row(*cells)
    console = wide_console()
    console.print(table)
    console.print(f"summary: {sweep_dir / SUMMARY_FILE}")
