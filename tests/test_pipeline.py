"""Pipelines: stages in order, each in its own run directory; reuse of completed stages; a failed
stage stops the pipeline and a rerun continues from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import LaunchFn, manifests

PIPELINE = """\
name: two_plans
run_subdir: pipeline/${{.name}}
overrides: [step.hardware=H100]
stages:
  - step: plan
    overrides: [model=llama_small]
  - step: plan
    overrides: [model=hf, "model.name_or_path={model_dir}"]
"""


@pytest.fixture
def pipeline_conf(tmp_path: Path, hf_model_dir: Path) -> Path:
    conf = tmp_path / "extra_conf"
    (conf / "pipeline").mkdir(parents=True)
    (conf / "pipeline" / "two_plans.yaml").write_text(PIPELINE.format(model_dir=hf_model_dir))
    return conf


def run_pipeline(launch: LaunchFn, conf: Path, *extra: str):
    return launch("pipeline=two_plans", f"hydra.searchpath=[file://{conf}]", *extra)


def pipeline_records(outputs: Path) -> list[dict]:
    found = sorted((outputs / "demo" / "pipeline" / "two_plans").glob("*/pipeline.json"))
    return [json.loads(p.read_text()) for p in found]


def test_stages_run_in_order_then_are_reused(
    launch: LaunchFn, outputs: Path, pipeline_conf: Path
) -> None:
    first = run_pipeline(launch, pipeline_conf)
    assert first.returncode == 0, first.stderr
    runs = [m for m in manifests(outputs) if m["step"] == "plan"]
    assert [m["status"] for m in runs] == ["completed", "completed"]
    assert (
        runs[0]["metrics"]["params_total"] > runs[1]["metrics"]["params_total"]
    )  # llama_small, then the tiny HF model
    assert runs[1]["inputs"][0]["kind"] == "file"  # the HF config.json, hashed

    second = run_pipeline(launch, pipeline_conf)
    assert second.returncode == 0, second.stderr
    record = pipeline_records(outputs)[-1]
    assert [s["status"] for s in record["stages"]] == ["reused", "reused"]
    assert [s["run_dir"] for s in record["stages"]] == [m["run_dir"] for m in runs]
    assert "reused" in second.stdout
    assert len([m for m in manifests(outputs) if m["step"] == "plan"]) == 2  # nothing recomputed


def test_a_changed_input_or_override_is_recomputed(
    launch: LaunchFn, outputs: Path, pipeline_conf: Path, hf_model_dir: Path
) -> None:
    assert run_pipeline(launch, pipeline_conf).returncode == 0
    config = json.loads((hf_model_dir / "config.json").read_text())
    config["num_hidden_layers"] = 4
    (hf_model_dir / "config.json").write_text(json.dumps(config))
    assert run_pipeline(launch, pipeline_conf).returncode == 0
    assert [s["status"] for s in pipeline_records(outputs)[-1]["stages"]] == ["reused", "completed"]

    # an override on the command line reaches every stage, so nothing matches
    assert run_pipeline(launch, pipeline_conf, "++step.mfu=0.5").returncode == 0
    assert [s["status"] for s in pipeline_records(outputs)[-1]["stages"]] == [
        "completed",
        "completed",
    ]


def test_a_failed_stage_stops_the_pipeline_and_a_rerun_continues(
    launch: LaunchFn, outputs: Path, pipeline_conf: Path, hf_model_dir: Path
) -> None:
    config_file = hf_model_dir / "config.json"
    saved = config_file.read_text()
    config_file.unlink()
    failed = run_pipeline(launch, pipeline_conf)
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: pipeline two_plans, stage 2 (plan): model.name_or_path")
    record = pipeline_records(outputs)[-1]
    assert record["status"] == "failed"
    assert [s["status"] for s in record["stages"]] == ["completed", "failed"]

    config_file.write_text(saved)
    rerun = run_pipeline(launch, pipeline_conf)
    assert rerun.returncode == 0, rerun.stderr
    assert [s["status"] for s in pipeline_records(outputs)[-1]["stages"]] == ["reused", "completed"]


def test_the_shipped_pipeline_runs(launch: LaunchFn, outputs: Path) -> None:
    done = launch("pipeline=capacity", check=True)
    assert "Pipeline capacity" in done.stdout
    plans = [m for m in manifests(outputs) if m["step"] == "plan"]
    assert [m["status"] for m in plans] == ["completed", "completed"]


def test_step_overrides_reach_only_the_stages_whose_step_has_the_key(
    launch: LaunchFn, outputs: Path, pipeline_conf: Path
) -> None:
    # both stages are plan steps: step.mfu reaches both
    assert run_pipeline(launch, pipeline_conf, "++step.mfu=0.5").returncode == 0
    done = run_pipeline(launch, pipeline_conf, "++step.max_steps=5")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: step.max_steps: no stage's step has this key; this pipeline runs plan; "
        "step.* overrides reach the stages whose step has the key"
    )


@pytest.mark.slow
def test_the_demo_pipeline_trains_evaluates_exports_and_serves_then_serves_again(
    launch: LaunchFn, outputs: Path
) -> None:
    # `make demo` (pipeline=demo), with a short pretrain: every stage completes, the server
    # streams a real completion of the prompt, and a rerun reuses every stage but serve.
    short = ["step.max_steps=20", "step.val_every_n_steps=10", "step.checkpoint_every_n_steps=20"]
    done = launch("pipeline=demo", *short, check=True)
    [record] = [
        json.loads(p.read_text())
        for p in (outputs / "demo" / "pipeline" / "demo").glob("*/pipeline.json")
    ]
    steps = ["data", "pretrain", "evaluate", "optimize", "serve"]
    assert [(s["step"], s["status"]) for s in record["stages"]] == [(s, "completed") for s in steps]
    runs = {m["step"]: m for m in manifests(outputs)}
    assert (Path(runs["evaluate"]["run_dir"]) / "report.html").is_file()
    assert runs["evaluate"]["metrics"]["perplexity"] > 1
    assert runs["optimize"]["metrics"]["top1_agreement"] > 0.5
    served = runs["serve"]
    assert served["inputs"][0]["path"] == runs["optimize"]["run_dir"]  # the export is served
    assert served["metrics"]["demo_tokens"] >= 1 and served["metrics"]["requests"] == 1
    printed = done.stdout.split("def main(", 1)
    assert len(printed) == 2 and printed[1].split("\n[")[0].strip()  # the completion itself

    launch("pipeline=demo", *short, check=True)
    rerun = max(
        (
            json.loads(p.read_text())
            for p in (outputs / "demo" / "pipeline" / "demo").glob("*/pipeline.json")
        ),
        key=lambda r: r["started_at"],
    )
    assert [s["status"] for s in rerun["stages"]] == ["reused"] * 4 + ["completed"]
