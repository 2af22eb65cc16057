"""`quark runs`: what ran, where, how it ended, its key metrics; filters and --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, LaunchFn


def quark(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quark.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "QUARK_OUTPUT_DIR"},
    )


def test_runs_lists_completed_and_failed_runs(launch: LaunchFn, outputs: Path) -> None:
    launch("step=plan", "model=llama_small", check=True)
    launch("step=plan", "experiment_name=other", check=True)
    assert launch("step=plan", "trainer.devices=0").returncode == 2

    rows = json.loads(quark("runs", "--outputs", str(outputs), "--json").stdout)
    assert [(r["experiment"], r["status"]) for r in rows] == [
        ("demo", "completed"),
        ("other", "completed"),
        ("demo", "failed"),
    ]
    assert rows[0]["metrics"]["params_total"] > 0
    assert "trainer.devices" in rows[2]["error"]

    only_other = json.loads(
        quark("runs", "--outputs", str(outputs), "--json", "-e", "other").stdout
    )
    assert [r["experiment"] for r in only_other] == ["other"]
    failed = json.loads(
        quark("runs", "--outputs", str(outputs), "--json", "--status", "failed").stdout
    )
    assert [r["status"] for r in failed] == ["failed"]
    assert (
        json.loads(quark("runs", "--outputs", str(outputs), "--json", "--step", "pretrain").stdout)
        == []
    )

    table = quark("runs", "--outputs", str(outputs))
    assert table.returncode == 0
    for text in ("Quark runs", "demo", "other", "plan", "completed", "failed", "params_total="):
        assert text in table.stdout


def test_runs_marks_a_run_whose_process_died_as_interrupted(outputs: Path) -> None:
    run_dir = outputs / "demo" / "plan" / "2026-01-01_00-00-00"
    run_dir.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    import socket

    manifest = {
        "step": "plan",
        "experiment": "demo",
        "status": "running",
        "started_at": "2026-01-01T00:00:00",
        "host": {"hostname": socket.gethostname(), "pid": int(dead.stdout)},
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    rows = json.loads(quark("runs", "--outputs", str(outputs), "--json").stdout)
    assert rows[0]["status"] == "interrupted"


def test_runs_without_an_output_directory_is_a_clear_error(tmp_path: Path) -> None:
    done = quark("runs", "--outputs", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"error: {tmp_path / 'nowhere'}: no such output directory; pass --outputs DIR or run a step first"
    )
