"""launch.py as a user meets it: bad input is one line on stderr, exit 2, no traceback, and the
run directory records the failure."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from .conftest import LaunchFn, manifests

BAD_INPUT = [
    # (overrides, words the one line must contain)
    (["step=nope"], ["step=nope", "no such step", "available", "plan", "pretrain"]),
    (["model=nope"], ["model=nope", "llama_tiny"]),
    (["model.hiden_size=3"], ["model.hiden_size", "no such key", "hidden_size"]),
    (["+model.extra=1"], ["model.extra", "no such key"]),
    (["+colour=red"], ["colour", "no such key"]),
    (["trainer.devices=two"], ["trainer.devices", "'two'", "int"]),
    (["trainer.devices=0"], ["trainer.devices", "out of range", ">= 1"]),
    # OmegaConf alone would read 2 as true and 'no' as false
    (
        ["step=plan", "trainer.compile=2"],
        ["trainer.compile", "2 is not a boolean", "true or false"],
    ),
    (
        ["step=orchestrate", "step.memory.enabled=no"],
        ["step.memory.enabled", "'no' is not a boolean"],
    ),
    (
        ["step=plan", "paths.output_dir=/etc/hostname"],
        ["paths.output_dir", "cannot be made", "Not a directory"],
    ),
    (["step=plan", "step.mfu=1.5"], ["step.mfu", "out of range", "<= 1"]),
    (["trainer.precision=fp8"], ["trainer.precision", "'fp8'", "bf16-mixed"]),
    (["model=llama_custom"], ["model.", "no value given"]),
    (["model=hf"], ["model.name_or_path", "no value given"]),
    (["model=hf", "model.name_or_path=/no/such/model"], ["model.name_or_path", "/no/such/model"]),
    (["model.num_kv_heads=3"], ["model.num_kv_heads", "does not divide"]),
    (["trainer=cpu", "trainer.devices=2"], ["trainer.strategy", "single"]),
    (["trainer=ddp", "trainer.offload_params=true"], ["trainer.offload_params", "deepspeed_zero3"]),
    (["step=plan", "step.seq_len=100000"], ["step.seq_len", "exceeds"]),
    (["experiment_name=a/b"], ["experiment_name", "'a/b'"]),
    (["pipeline=nope"], ["pipeline=nope", "capacity"]),
    (["model.hidden_size=["], ["overrides look like"]),
    (
        ["model=hf", "model.name_or_path=${quark.latest:pretrain}"],
        ["quark.latest:pretrain", "no completed 'pretrain' run"],
    ),
]


@pytest.mark.parametrize(("overrides", "words"), BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(
    launch: LaunchFn, overrides: list[str], words: list[str]
) -> None:
    done = launch(*overrides)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], f"{word!r} missing from: {lines[0]}"
    assert "Traceback" not in done.stderr + done.stdout


def test_a_config_file_that_is_not_yaml_is_named_with_its_line(
    launch: LaunchFn, tmp_path: Path
) -> None:
    (tmp_path / "experiment").mkdir()
    bad = tmp_path / "experiment" / "mine.yaml"
    bad.write_text("# @package _global_\npipeline_stage: [step.tasks=[red_team], safety=rules]\n")
    done = launch("--config-dir", str(tmp_path), "experiment=mine", "step=plan")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}: line 2, column 29: not valid YAML (expected ',' or ']', but got '['); "
        "fix the file (a value holding brackets, braces or ': ' needs quotes, e.g. "
        "- 'step.tasks=[red_team]')"
    ]


def test_quark_debug_adds_the_traceback(launch: LaunchFn) -> None:
    done = launch("step=pretrain", "trainer.devices=0", env={"QUARK_DEBUG": "1"})
    assert done.returncode == 2
    assert "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: trainer.devices")


def test_a_config_error_is_recorded_as_a_failed_run(launch: LaunchFn, outputs: Path) -> None:
    assert launch("step=pretrain", "trainer.devices=0").returncode == 2
    [manifest] = manifests(outputs)
    assert manifest["status"] == "failed"
    assert "trainer.devices" in manifest["error"]["message"]
    assert manifest["overrides"] == ["step=pretrain", "trainer.devices=0"]


def test_a_config_error_in_the_default_pipeline_names_the_stage_and_runs_nothing(
    launch: LaunchFn, outputs: Path
) -> None:
    done = launch("trainer.devices=0")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: pipeline default, stage 1 (data): trainer.devices: 0 is out of range; allowed: >= 1"
    )
    assert manifests(outputs) == []
    [record] = (outputs / "demo" / "pipeline" / "default").glob("*/pipeline.json")
    assert json.loads(record.read_text())["status"] == "failed"


def test_the_embedded_default_prepares_data_then_pretrains(
    launch: LaunchFn, outputs: Path, tmp_path: Path
) -> None:
    # No step chosen: pipeline=default (conf/pipeline/default.yaml), data then pretrain. A
    # small corpus and model keep it short; `make demo` runs the real one.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"{i}.txt").write_text(" ".join(f"word{j % 11} and {i}" for j in range(200)))
    small = [
        "data=text_files",
        f"data.sources.0.paths=[{corpus}/*.txt]",
        "data.tokenizer.vocab_size=400",
        "data.dedup.near=false",
        "data.pack.val_fraction=0.2",
        "model.vocab_size=400",
        "model.hidden_size=32",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.num_kv_heads=1",
        "model.intermediate_size=64",
        "step.seq_len=16",
        "step.max_steps=3",
        "step.val_samples=4",
    ]
    done = launch(*small, check=True)
    data, pretrain = manifests(outputs)
    assert (data["step"], data["status"]) == ("data", "completed")
    assert (pretrain["step"], pretrain["status"]) == ("pretrain", "completed")
    assert pretrain["inputs"][0]["path"] == data["run_dir"]
    assert "Pipeline default" in done.stdout
    assert "hf export" in done.stdout
    # a second launch reuses the data run; a new pretrain config trains on it
    again = launch(*small, "step.max_steps=4", check=True)
    assert "stage 1 (data): reused" in again.stderr + again.stdout
    runs = manifests(outputs)
    assert [m["step"] for m in runs] == ["data", "pretrain", "pretrain"]
    assert runs[2]["inputs"][0]["path"] == data["run_dir"]
    assert runs[2]["inputs"][0]["role"] == "data"


def test_pretrain_without_a_data_run_says_how_to_make_one_and_prepares_nothing(
    launch: LaunchFn, outputs: Path
) -> None:
    done = launch("step=pretrain")
    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: step.data_dir: no completed data run with token shards in experiment 'demo'"
    )
    assert "python launch.py step=data" in done.stderr
    assert [m["status"] for m in manifests(outputs)] == ["failed"]
    assert not (outputs / "demo" / "data").exists()


def test_two_launches_in_one_second_get_their_own_run_directories(
    launch: LaunchFn, outputs: Path
) -> None:
    for _ in range(3):
        launch("step=plan", check=True)
    runs = manifests(outputs)
    assert len({m["run_dir"] for m in runs}) == 3
    assert all(m["status"] == "completed" for m in runs)


def test_cfg_job_prints_the_config_and_runs_nothing(launch: LaunchFn, outputs: Path) -> None:
    done = launch("--cfg", "job", "model=llama_small", check=True)
    assert "name: llama_small" in done.stdout
    assert manifests(outputs) == []


def test_help_lists_groups_and_examples(launch: LaunchFn) -> None:
    done = launch("--help", check=True)
    for text in (
        "Quark",
        "model: hf, llama_124m, llama_1b",
        "step: align, data, ",
        "trainer: cpu",
        "Examples",
    ):
        assert text in done.stdout


def test_experiment_sets_its_own_experiment_name(launch: LaunchFn, outputs: Path) -> None:
    launch("experiment=plan_llama_1b_h100x8", check=True)
    [manifest] = manifests(outputs)
    assert manifest["experiment"] == "llama_1b_h100x8"
    assert Path(manifest["run_dir"]).is_relative_to(outputs / "llama_1b_h100x8" / "plan")


def test_shell_completion_completes_group_options(launch: LaunchFn) -> None:
    script = launch("--shell-completion", "install=bash", check=True)
    assert "complete -o nospace -o default -F hydra_bash_completion" in script.stdout
    done = launch("-sc", "query=bash", env={"COMP_LINE": "python launch.py model=llama_"})
    assert done.returncode == 0, done.stderr
    assert "model=llama_tiny" in done.stdout.split()
    assert "model=llama_1b" in done.stdout.split()


def test_a_sweep_gives_each_job_its_run_directory_and_a_bad_job_does_not_stop_the_others(
    launch: LaunchFn, outputs: Path
) -> None:
    done = launch("-m", "step=plan", "trainer.devices=0,1", "model=llama_tiny,llama_small")
    assert done.returncode == 2  # the worst job's status
    assert done.stderr.count("error: trainer.devices: 0 is out of range") == 2
    runs = manifests(outputs)
    assert sorted(m["status"] for m in runs) == ["completed", "completed", "failed", "failed"]
    sweep = {Path(m["run_dir"]).parent for m in runs}
    assert len(sweep) == 1 and next(iter(sweep)).parent == outputs / "demo" / "plan" / "multirun"
    assert sorted(Path(m["run_dir"]).name for m in runs) == ["0", "1", "2", "3"]
    # the summary names the swept values, how each job ended and why the bad ones failed
    [summary] = list((outputs / "demo" / "plan" / "multirun").glob("*/sweep_summary.csv"))
    rows = list(csv.DictReader(summary.open()))
    assert [(r["trainer.devices"], r["model"], r["status"]) for r in rows] == [
        ("0", "llama_tiny", "failed"),
        ("0", "llama_small", "failed"),
        ("1", "llama_tiny", "completed"),
        ("1", "llama_small", "completed"),
    ]
    assert rows[0]["error"].startswith("trainer.devices: 0 is out of range")
    assert float(rows[2]["metric.params_total"]) < float(rows[3]["metric.params_total"])
    assert "sweep_summary.csv" in done.stdout


@pytest.mark.parametrize("step", ["pretrain", "finetune", "align"])
def test_a_resume_path_that_is_not_a_checkpoint_is_refused_before_any_work(
    launch: LaunchFn, outputs: Path, tmp_path: Path, step: str
) -> None:
    import zipfile

    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    archive = tmp_path / "whole.ckpt"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("data.pkl", b"x" * 4096)
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(archive.read_bytes()[:2048])
    for path in (text, truncated):
        done = launch(f"step={step}", f"step.resume={path}")
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            f"error: step.resume: {path} is not a checkpoint (not a torch.save archive: "
            "truncated, or another kind of file); give a checkpoint a training run wrote "
            "(checkpoints/*.ckpt), or auto"
        )
    # refused at validation: no data prepared, each attempt a failed manifest of its own
    found = manifests(outputs)
    assert [(m["step"], m["status"]) for m in found] == [(step, "failed")] * 2
