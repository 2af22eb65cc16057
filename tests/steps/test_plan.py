"""step=plan from the command line: plan.json, manifest metrics, HF configs as hashed inputs."""

from __future__ import annotations

import json
from pathlib import Path

from quark.core.files import sha256_file

from ..conftest import MISTRAL_7B_SIZES, LaunchFn, manifests


def test_plan_writes_plan_json_and_headline_metrics(launch: LaunchFn, outputs: Path) -> None:
    done = launch(
        "step=plan",
        "model=llama_1b",
        "trainer=deepspeed_zero3",
        "trainer.devices=8",
        "step.hardware=H100",
        "step.tokens=1000000000",
        check=True,
    )
    [manifest] = manifests(outputs)
    plan = json.loads((Path(manifest["run_dir"]) / "plan.json").read_text())
    assert manifest["outputs"][0]["path"] == "plan.json"
    assert manifest["outputs"][0]["sha256"] == sha256_file(Path(manifest["run_dir"]) / "plan.json")

    assert plan["compute"]["tokens"] == 1_000_000_000
    assert plan["compute"]["compute_optimal_tokens"] == int(20 * plan["parameters"]["total"])
    assert plan["memory"]["chosen"]["strategy"] == "zero3"
    labels = [row["strategy"] for row in plan["memory"]["strategies"]]
    assert {"ddp", "fsdp", "zero1", "zero2", "zero3", "zero3+offload-opt+params"} <= set(labels)
    # 8 H100s at 40 % MFU: tokens/s = 8 * 989e12 * 0.4 / flops_per_token
    expected = 8 * 989e12 * 0.4 / plan["compute"]["flops_per_token"]
    assert abs(plan["time"]["tokens_per_second"] - expected) / expected < 1e-9
    assert abs(plan["time"]["seconds"] - 1e9 / expected) < 1e-6

    assert manifest["metrics"]["params_total"] == plan["parameters"]["total"]
    assert manifest["metrics"]["fits"] == 1.0
    assert "Memory per device" in done.stdout and "zero3 (chosen)" in done.stdout


def test_what_does_not_fit_says_so(launch: LaunchFn, outputs: Path) -> None:
    launch(
        "step=plan",
        "model=llama_1b",
        "trainer=gpu",
        "trainer.micro_batch_size=64",
        "step.hardware=A100_40GB",
        check=True,
    )
    [manifest] = manifests(outputs)
    plan = json.loads((Path(manifest["run_dir"]) / "plan.json").read_text())
    assert manifest["metrics"]["fits"] == 0.0
    assert plan["memory"]["chosen"]["fits"] is False
    assert plan["memory"]["chosen"]["max_micro_batch"] < 64


def test_device_memory_override_changes_what_fits(launch: LaunchFn, outputs: Path) -> None:
    launch("step=plan", "model=llama_124m", "trainer=gpu", "step.device_memory_gb=8", check=True)
    launch("step=plan", "model=llama_124m", "trainer=gpu", "step.device_memory_gb=80", check=True)
    small, big = (
        json.loads((Path(m["run_dir"]) / "plan.json").read_text()) for m in manifests(outputs)
    )
    assert small["memory"]["chosen"]["max_micro_batch"] < big["memory"]["chosen"]["max_micro_batch"]


def test_an_hf_model_directory_is_planned_and_its_config_recorded(
    launch: LaunchFn, outputs: Path, hf_model_dir: Path
) -> None:
    launch("step=plan", "model=hf", f"model.name_or_path={hf_model_dir}", check=True)
    [manifest] = manifests(outputs)
    config = hf_model_dir / "config.json"
    assert manifest["inputs"] == [
        {
            "role": "model",
            "path": str(config),
            "kind": "file",
            "sha256": sha256_file(config),
            "bytes": config.stat().st_size,
        }
    ]
    plan = json.loads((Path(manifest["run_dir"]) / "plan.json").read_text())
    assert plan["model"]["num_layers"] == 3 and plan["model"]["num_kv_heads"] == 2


def test_explicit_sizes_plan_any_llama(launch: LaunchFn, outputs: Path) -> None:
    sizes = MISTRAL_7B_SIZES
    launch(
        "step=plan",
        "model=llama_custom",
        *sizes,
        "trainer=fsdp",
        "trainer.devices=8",
        "step.seq_len=4096",
        check=True,
    )
    [manifest] = manifests(outputs)
    assert 7.0e9 < manifest["metrics"]["params_total"] < 7.3e9  # Mistral-7B's shape
