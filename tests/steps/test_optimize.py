"""step=optimize from the command line: every export format is written, validated against the
trained model and recorded; a missed tolerance fails the run; bad input is one line, exit 2."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import ITEM_DATA, launcher, manifests, write_item_corpus

# Every weight row a multiple of 32 values (gguf q8_0); 256 positions (llama.cpp's smallest
# context, so it does not warn about a context longer than the model's).
TINY_MODEL = [
    "model.vocab_size=600",
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.intermediate_size=192",
    "model.max_seq_len=256",
]
# Short windows, one thread (latency figures from two threads on a busy two-core machine are
# noise), few repeats: the figures are checked for presence here, not for speed.
QUICK = [
    "step=optimize",
    "step.seq_len=64",
    "step.val_samples=8",
    "step.new_tokens=8",
    "step.latency_repeats=1",
    "step.threads=1",
]
FIGURES = {
    "max_logit_diff",
    "logit_cosine",
    "top1_agreement",
    "ppl_source",
    "ppl_export",
    "ppl_change_pct",
    "greedy_agreement",
    "bytes",
    "bytes_source",
    "export_s",
}
TIMED = {"ms_per_token", "ms_per_token_source", "speedup"}

Launch = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optimize") / "outputs"


@pytest.fixture(scope="module")
def launch(outputs: Path) -> Launch:
    """`python launch.py ARGS` as a user runs it, on one thread."""
    return launcher(outputs, {"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def trained(launch: Launch, outputs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A data run and a pretrain run on it, trained enough for confident next-token choices:
    the manifests of both."""
    corpus = write_item_corpus(tmp_path_factory.mktemp("corpus"))
    launch(*ITEM_DATA, f"data.sources.0.paths=[{corpus}/*.txt]", check=True)
    launch(
        "step=pretrain",
        *TINY_MODEL,
        "step.seq_len=64",
        "step.max_steps=60",
        "step.val_every_n_steps=60",
        "step.val_samples=4",
        "step.checkpoint_every_n_steps=60",
        "step.optim.warmup_steps=5",
        "step.optim.lr=1e-2",
        "trainer.micro_batch_size=8",
        check=True,
    )
    [data, pretrain] = manifests(outputs)
    return {"data": data, "pretrain": pretrain}


def optimize_runs(outputs: Path) -> list[dict]:
    return [m for m in manifests(outputs) if m["step"] == "optimize"]


@pytest.mark.slow
def test_every_export_format_is_written_validated_and_recorded(
    launch: Launch, outputs: Path, trained: dict
) -> None:
    formats = ["hf", "onnx", "onnx_int8", "torchao", "gguf"]
    # one sweep, one process: no model directory given, so the newest pretrain run. int8's
    # default top-1 tolerance (0.95) is for real models; this tiny fixture's near-tied logits
    # gave 0.908 to 0.99 between CI checkouts, so the sweep allows 0.8: this test is about
    # every format being written, validated and recorded (the fp32 exports are still held
    # exact by their logit tolerance, max_logit_diff; tests/export measure int8's fidelity)
    launch("-m", *QUICK, f"export={','.join(formats)}",
           "export.tolerance.min_top1_agreement=0.8", check=True)  # fmt: skip
    runs = {}
    for manifest in optimize_runs(outputs):
        report_path = next(Path(manifest["run_dir"]).glob("exports/*/validation.json"))
        runs[report_path.parent.name] = (manifest, json.loads(report_path.read_text()))
    assert sorted(runs) == sorted(formats)
    files = {
        "hf": "model.safetensors",
        "onnx": "model.onnx",
        "onnx_int8": "model.onnx",
        "torchao": "model.safetensors",
        "gguf": "model.gguf",
    }
    for name, (manifest, report) in runs.items():
        assert manifest["status"] == "completed", (name, manifest["error"])
        assert report["passed"] and report["metrics"] == manifest["metrics"], name
        assert set(manifest["metrics"]) >= FIGURES, name
        if report["runtime"].startswith("the GGUF's tensors read back"):
            assert not TIMED & set(manifest["metrics"])  # torch's speed is not llama.cpp's
        else:
            assert all(manifest["metrics"][key] > 0 for key in TIMED), name
        assert manifest["metrics"]["top1_agreement"] >= 0.8, (name, manifest["metrics"])
        if name in ("hf", "onnx"):
            assert manifest["metrics"]["max_logit_diff"] < 1e-3, name
        recorded = {o["path"] for o in manifest["outputs"]}
        assert f"exports/{name}/{files[name]}" in recorded
        assert f"exports/{name}/validation.json" in recorded
        assert f"exports/{name}/tokenizer.json" in recorded  # each export stands alone
        # the inputs: the newest pretrain run and the data run, both verified run directories
        model_input, data_input = manifest["inputs"]
        assert model_input["path"] == trained["pretrain"]["run_dir"]
        assert model_input["kind"] == "run" and model_input["step"] == "pretrain"
        assert data_input["path"] == trained["data"]["run_dir"]
    assert runs["hf"][0]["metrics"]["max_logit_diff"] == 0.0  # fp32 save and load is exact
    assert runs["onnx"][0]["metrics"]["max_logit_diff"] < 1e-3
    assert runs["onnx_int8"][0]["metrics"]["bytes"] < 0.5 * runs["onnx"][0]["metrics"]["bytes"]
    quantization = json.loads(
        Path(runs["torchao"][0]["run_dir"], "exports/torchao/config.json").read_text()
    )["quantization_config"]
    assert quantization["quant_type"]["default"]["_type"] == "Int8WeightOnlyConfig"


@pytest.mark.slow
def test_a_missed_tolerance_fails_the_run_with_one_line(
    launch: Launch, outputs: Path, trained: dict
) -> None:
    hf_dir = Path(trained["pretrain"]["run_dir"]) / "hf"  # a plain model directory this time
    done = launch(
        *QUICK,
        f"step.model_dir={hf_dir}",
        "export=hf",
        "export.precision=bf16",
        "export.tolerance.max_logit_diff=1e-6",  # bf16 cannot: logits move by ~1e-2
    )
    assert done.returncode == 1, done.stderr
    [manifest] = [
        m
        for m in optimize_runs(outputs)
        if m["inputs"][:1] and m["inputs"][0]["path"] == str(hf_dir)
    ]
    report = Path(manifest["run_dir"]) / "exports" / "hf" / "validation.json"
    assert re.fullmatch(
        r"error: export=hf \(bf16\) failed validation: max_logit_diff \S+ is \S+ above the "
        rf"tolerance 1e-06 \(export.tolerance.max_logit_diff\); report: {re.escape(str(report))}",
        done.stderr.strip().splitlines()[-1],
    ), done.stderr
    assert manifest["status"] == "failed" and manifest["inputs"][0]["kind"] == "directory"
    assert manifest["metrics"]["max_logit_diff"] > 1e-6  # what was measured stays on record
    assert json.loads(report.read_text())["passed"] is False

    from safetensors import safe_open

    with safe_open(str(report.parent / "model.safetensors"), "pt") as weights:
        dtypes = {str(weights.get_tensor(name).dtype) for name in weights.keys()}  # noqa: SIM118
    assert dtypes == {"torch.bfloat16"}


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(
    launch: Launch, outputs: Path, trained: dict, tmp_path: Path
) -> None:
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 600}))
    (gpt2 / "model.safetensors").write_bytes(b"")
    (gpt2 / "tokenizer_config.json").write_text("{}")
    allowed = (
        "give a pretrain, finetune or align run directory, or a Hugging Face model directory "
        "(config.json and weights)"
    )
    cases = [
        (
            [f"step.model_dir={not_a_model}"],
            f"error: step.model_dir: {not_a_model} is not a model (no config.json and weights); {allowed}",
        ),
        (
            [f"step.model_dir={gpt2}", "export=gguf"],
            f"error: export: gguf needs a Llama-architecture model and {gpt2} holds a 'gpt2' "
            "model; choose export=hf, onnx, onnx_int8 or torchao",
        ),
        (
            ["export=hf", "export.precision=int8"],
            "error: export.precision: 'int8' is not a precision of export=hf; allowed: fp32, bf16, fp16",
        ),
        (
            ["export=hf", f"step.data_dir={not_a_model}"],
            f"error: step.data_dir: {not_a_model} holds no token shards; give a completed data "
            "run of a corpus (not a task set)",
        ),
        (
            ["export=hf", "experiment_name=untrained"],
            f"error: step.model_dir: no completed align, finetune or pretrain run in experiment "
            f"'untrained' under {outputs}; train one first (python launch.py step=pretrain), "
            f"or {allowed}",
        ),
    ]
    import torch

    if not torch.cuda.is_available():
        cases.append(
            (
                ["export=torchao", "export.precision=int4_weight_only"],
                "error: export.precision: int4_weight_only runs on CUDA only and no GPU is "
                "available; on CPU choose int8_weight_only or int8_dynamic",
            )
        )
    for overrides, line in cases:
        done = launch(*QUICK, *overrides)
        assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (2, line), done.stderr
