"""Step 8, optimize: an inference export of a trained model, validated against it.

    python launch.py step=optimize                          # export=onnx_int8 of the newest model
    python launch.py step=optimize export=gguf export.precision=q8_0
    python launch.py step=optimize export=hf export.precision=bf16 step.model_dir=path/to/hf_model
    python launch.py -m step=optimize export=hf,onnx,onnx_int8,torchao,gguf

Loads the model (the hf/ export of a pretrain or finetune run, verified against its manifest,
or a Hugging Face model directory) in fp32, writes the configured export to exports/<format>/
(quark.export.<format>), loads it back from disk in its own runtime (ONNX Runtime, llama.cpp,
torch) and compares it with the source model on a data run's validation windows, teacher
forced: largest logit difference, logit cosine, top-1 agreement, perplexity of both; then times
greedy decoding with the key/value cache, per token, for both. The figures go to
exports/<format>/validation.json and the manifest. An export outside its tolerance
(export.tolerance, null keys: the format's defaults) fails the run, exit 1, with one line naming
the check and by how much; the export and its report stay for inspection.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError, StepFailed
from quark.core.run import MANIFEST, Run, read_manifest
from quark.models.hf import WEIGHT_FILES, run_model_dir

MODEL_DIR_ALLOWED = (
    "give a pretrain or finetune run directory, or a Hugging Face model directory "
    "(config.json and weights)"
)
# runs whose hf/ export can be optimized, preferred first
TRAINING_STEPS = ("finetune", "pretrain")
HEADLINE = ("top1_agreement", "ppl_change_pct", "ms_per_token")


def model_source(cfg: DictConfig, handed_steps: tuple[str, ...] = TRAINING_STEPS) -> Path:
    """step.model_dir; else the run of `handed_steps` a pipeline handed over, first found; else
    the newest completed finetune run of the experiment, else its newest completed pretrain
    run."""
    if cfg.step.model_dir:
        return Path(str(cfg.step.model_dir)).expanduser()
    handed = cfg.get("inputs") or {}
    for step in handed_steps:
        if handed.get(step):
            return Path(str(handed[step]))
    from quark.core.runs import latest_completed

    output_dir, experiment = cfg.paths.output_dir, str(cfg.experiment_name)
    for step in TRAINING_STEPS:
        record = latest_completed(output_dir, experiment, step)
        if record is not None:
            return record.path
    raise ConfigError(
        "step.model_dir",
        f"no completed finetune or pretrain run in experiment '{experiment}' under {output_dir}",
        "train one first (python launch.py step=pretrain), or " + MODEL_DIR_ALLOWED,
    )


def model_dir(source: Path) -> Path:
    """The Hugging Face model directory of `source`: a run's hf/ export, or `source` itself."""
    return run_model_dir(source, "step.model_dir", MODEL_DIR_ALLOWED)


def check_seq_len(cfg: DictConfig, config: dict[str, Any]) -> None:
    """step.seq_len (the validation windows) must fit the model's positions."""
    positions = int(config.get("max_position_embeddings") or cfg.step.seq_len)
    if int(cfg.step.seq_len) > positions:
        raise ConfigError(
            "step.seq_len",
            f"{cfg.step.seq_len} exceeds the model's {positions} positions",
            f"allowed: <= {positions}",
        )


def model_config(directory: Path) -> dict[str, Any]:
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            "step.model_dir",
            f"{directory / 'config.json'} is unreadable ({exc})",
            MODEL_DIR_ALLOWED,
        ) from None
    if not isinstance(config, dict) or "vocab_size" not in config:
        raise ConfigError(
            "step.model_dir",
            f"{directory / 'config.json'} is not a language model's config",
            MODEL_DIR_ALLOWED,
        )
    return config


def data_run_dir(cfg: DictConfig) -> Path:
    """step.data_dir; else the data run a pipeline handed over, if it holds token shards; else
    the data run the model was trained on (its run's manifest, through finetune to pretrain);
    else the newest completed data run of the experiment that holds token shards."""
    if cfg.step.data_dir:
        return Path(str(cfg.step.data_dir)).expanduser()
    handed = (cfg.get("inputs") or {}).get("data")
    if handed and holds_shards(Path(str(handed))):
        return Path(str(handed))
    trained_on = training_data_run(model_source(cfg))
    if trained_on is not None:
        return trained_on
    from quark.core.runs import find_runs

    output_dir, experiment = cfg.paths.output_dir, str(cfg.experiment_name)
    for record in reversed(find_runs(output_dir, experiment, "data", "completed")):
        if holds_shards(record.path):
            return record.path
    raise ConfigError(
        "step.data_dir",
        f"no completed data run with token shards in experiment '{experiment}' under {output_dir}",
        "give the data run the model was trained on, e.g. step.data_dir=outputs/demo/data/<time>",
    )


def holds_shards(directory: Path) -> bool:
    return (directory / "shards" / "index.json").is_file()


def training_data_run(source: Path, depth: int = 4) -> Path | None:
    """The data run with token shards among the inputs of run `source`, or of the run it
    started from (a finetune's pretrain run), or None (a plain model directory)."""
    if depth == 0 or not (source / MANIFEST).is_file():
        return None
    inputs = [Path(item["path"]) for item in read_manifest(source).get("inputs", [])]
    for path in inputs:
        if holds_shards(path):
            return path
    for path in inputs:
        found = training_data_run(path, depth - 1)
        if found is not None:
            return found
    return None


def check_data(data_dir: Path, directory: Path, config: dict[str, Any]) -> None:
    """The data run holds shards whose token ids mean what they mean to the model."""
    from quark.data.packing import read_index

    if not holds_shards(data_dir):
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} holds no token shards",
            "give a completed data run of a corpus (not a task set)",
        )
    data_vocab = int(read_index(data_dir / "shards")["vocab_size"])
    if data_vocab > int(config["vocab_size"]):
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} has token ids up to {data_vocab - 1} and the model in {directory} "
            f"{config['vocab_size']} embeddings",
            "give a data run made with the model's tokenizer",
        )
    ours, theirs = vocabulary(directory), vocabulary(data_dir / "tokenizer")
    if ours and theirs and ours != theirs:
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} was tokenized with another vocabulary than the model's ({directory})",
            "give a data run made with the model's tokenizer",
        )


def vocabulary(directory: Path) -> dict[str, int] | None:
    """token -> id of the tokenizer.json in `directory`, or None without one."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    tokenizer = json.loads(path.read_text())
    ids = dict(tokenizer.get("model", {}).get("vocab") or {})
    ids.update({t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])})
    return ids


def inputs(cfg: DictConfig) -> list[Path]:
    """The model (a run is verified against its manifest) and the data run; a model the
    export cannot take is refused here, before the run starts."""
    from quark.export import format_module

    source = model_source(cfg)
    directory = model_dir(source)
    config = model_config(directory)
    check_seq_len(cfg, config)
    format_module(str(cfg.export.name)).check(directory, config, str(cfg.export.precision))
    data_dir = data_run_dir(cfg)
    check_data(data_dir, directory, config)
    return [source, data_dir]


def run(cfg: DictConfig, run: Run) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM

    from quark.core.files import files_under
    from quark.export import format_module, quiet_exporters
    from quark.export.decoding import TorchDecoder, cpu_threads
    from quark.export.validation import (
        REPORT,
        compare_generation,
        compare_logits,
        failed_checks,
        validation_windows,
        write_report,
    )

    quiet_exporters()
    if cfg.step.threads:
        torch.set_num_threads(int(cfg.step.threads))
    step, name, precision = cfg.step, str(cfg.export.name), str(cfg.export.precision)
    directory = model_dir(model_source(cfg))
    export_format = format_module(name)

    # 1. The source model in fp32: the reference every figure is measured against.
    source_model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    source = TorchDecoder(source_model)
    windows = validation_windows(data_run_dir(cfg), int(step.seq_len), int(step.val_samples))
    prompt = windows[0, : int(step.prompt_tokens)].tolist()

    # 2. The export, written, then loaded back from disk in its own runtime.
    out_dir = run.dir / "exports" / name
    out_dir.mkdir(parents=True)
    started = time.perf_counter()
    exported = export_format.export(source_model, directory, out_dir, precision, cpu_threads())
    export_seconds = time.perf_counter() - started
    run.add_output("exports")

    # 3. Validation: teacher forced on the windows, then free-running greedy decoding, timed.
    try:
        metrics = compare_logits(source, exported, windows, int(step.batch_size))
        metrics.update(
            compare_generation(
                source,
                exported,
                prompt,
                int(step.new_tokens),
                int(step.latency_repeats),
            )
        )
    finally:
        exported.close()
    metrics["bytes"] = float(sum(f.stat().st_size for f in files_under(out_dir)))
    metrics["bytes_source"] = float(
        sum((directory / f).stat().st_size for f in WEIGHT_FILES if (directory / f).is_file())
    )
    metrics["export_s"] = export_seconds
    # `quark runs` shows the first three metrics: put what a user asks first of an export there
    metrics = dict(sorted(metrics.items(), key=lambda item: item[0] not in HEADLINE))

    tolerance = export_format.DEFAULT_TOLERANCE[precision].overridden(cfg.export.tolerance)
    failures = failed_checks(metrics, tolerance)
    write_report(
        out_dir / REPORT,
        {
            "format": name,
            "precision": precision,
            "source": str(directory),
            "runtime": exported.runtime,
            "threads": cpu_threads(),
            "windows": {"count": len(windows), "tokens": int(step.seq_len)},
            "tolerance": vars(tolerance),
            "passed": not failures,
            "failures": failures,
            "metrics": metrics,
        },
    )
    _print_summary(run, name, precision, exported.runtime, metrics, failures)
    if failures:
        run.update(metrics=metrics)  # the failed run still shows what was measured
        raise StepFailed(
            f"export={name} ({precision}) failed validation: {'; '.join(failures)}; "
            f"report: {out_dir / REPORT}"
        )
    return metrics


def _print_summary(
    run: Run,
    name: str,
    precision: str,
    runtime: str,
    metrics: dict[str, float],
    failures: list[str],
) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    table = Table(title=f"Optimize: {name} ({precision})", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}")
    table.add_row("runtime", runtime)
    table.add_row("export", str(run.dir / "exports" / name))
    table.add_row("validation", "passed" if not failures else "FAILED: " + "; ".join(failures))
    wide_console().print(table)
