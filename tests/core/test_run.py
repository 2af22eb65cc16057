"""Run directories and manifests: contents, hashes, atomic writes, and honest failure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from quark.core.errors import QuarkError
from quark.core.files import sha256_file, write_json_atomic
from quark.core.run import Run, config_hash, describe_input, verify_run


def tiny_cfg(**overrides: object) -> object:
    cfg = {
        "step": {"name": "plan"},
        "experiment_name": "unit",
        "seed": 7,
        "paths": {"output_dir": "x"},
        "model": {"hidden_size": 64},
    }
    cfg.update(overrides)
    return OmegaConf.create(cfg)


def test_manifest_records_what_a_run_was(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "run", tiny_cfg(), inputs=[], overrides=["seed=7"])
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["ended_at"] is None
    assert manifest["step"] == "plan" and manifest["experiment"] == "unit" and manifest["seed"] == 7
    assert set(manifest["versions"]) >= {
        "python",
        "torch",
        "lightning",
        "transformers",
        "deepspeed",
        "quark",
    }
    assert manifest["versions"]["quark"] is not None
    assert {"commit", "dirty"} <= set(manifest["git"])
    assert manifest["host"]["hostname"] and manifest["host"]["pid"] == os.getpid()
    assert (run.dir / "config.yaml").read_text().startswith("step:")

    run.path("sub", "a.txt").write_text("hello")
    run.add_output("sub")
    run.complete({"loss": 1.5})
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["metrics"] == {"loss": 1.5}
    assert manifest["outputs"] == [
        {"path": "sub/a.txt", "sha256": sha256_file(run.dir / "sub" / "a.txt"), "bytes": 5}
    ]
    assert manifest["duration_s"] >= 0 and manifest["ended_at"] >= manifest["started_at"]


def test_config_hash_ignores_where_outputs_go_but_not_what_is_computed() -> None:
    base = config_hash(tiny_cfg())
    assert config_hash(tiny_cfg(paths={"output_dir": "elsewhere"}, experiment_name="other")) == base
    assert config_hash(tiny_cfg(model={"hidden_size": 65})) != base


def test_a_missing_declared_output_is_never_marked_completed(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "run", tiny_cfg(), inputs=[], overrides=[])
    run.add_output("weights.safetensors")
    with pytest.raises(RuntimeError, match="never written"):
        run.complete({})
    assert json.loads((run.dir / "manifest.json").read_text())["status"] == "running"


def test_failure_is_recorded_with_the_error(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "run", tiny_cfg(), inputs=[], overrides=[])
    run.fail(ValueError("loss is nan\nat step 3"))
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"] == {"type": "ValueError", "message": "loss is nan at step 3"}


def test_a_directory_holding_a_run_is_not_reused(tmp_path: Path) -> None:
    Run.open(tmp_path / "run", tiny_cfg(), inputs=[], overrides=[])
    with pytest.raises(QuarkError, match="already holds a run"):
        Run.open(tmp_path / "run", tiny_cfg(), inputs=[], overrides=[])


def test_atomic_write_leaves_the_old_file_whole_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    write_json_atomic(target, {"status": "running"})

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(target, {"status": "completed", "big": "x" * 100_000})
    assert json.loads(target.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left behind


def completed_run(directory: Path) -> Run:
    run = Run.open(directory, tiny_cfg(), inputs=[], overrides=[])
    run.path("tokenizer.json").write_text('{"vocab": {}}')
    run.add_output("tokenizer.json")
    run.complete({})
    return run


def test_inputs_are_verified_against_their_recorded_sha256(tmp_path: Path) -> None:
    run = completed_run(tmp_path / "data_run")
    described = describe_input(run.dir)
    assert described["kind"] == "run" and described["sha256"] == run.manifest["outputs_digest"]

    (run.dir / "tokenizer.json").write_text('{"vocab": {"tampered": 1}}')
    with pytest.raises(QuarkError, match="sha256 does not match"):
        verify_run(run.dir)
    (run.dir / "tokenizer.json").unlink()
    with pytest.raises(QuarkError, match="missing"):
        describe_input(run.dir)


def test_only_completed_runs_are_inputs(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", tiny_cfg(), inputs=[], overrides=[])
    with pytest.raises(QuarkError, match="'running', not completed"):
        verify_run(run.dir)
    run.fail(RuntimeError("x"))
    with pytest.raises(QuarkError, match="'failed', not completed"):
        verify_run(run.dir)


def test_file_inputs_are_hashed(tmp_path: Path) -> None:
    file = tmp_path / "config.json"
    file.write_text("{}")
    assert describe_input(file) == {
        "path": str(file),
        "kind": "file",
        "sha256": sha256_file(file),
        "bytes": 2,
    }
    with pytest.raises(QuarkError, match="not found"):
        describe_input(tmp_path / "nope.json")
