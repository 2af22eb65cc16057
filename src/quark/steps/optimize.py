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

import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from quark.core.errors import StepFailed
from quark.core.run import Run
from quark.lineage.data import validation_data
from quark.lineage.model_files import check_weights
from quark.lineage.models import ModelLocation, find_model
from quark.models.hf import WEIGHT_FILES, check_seq_len

MODEL_DIR_ALLOWED = (
    "give a pretrain, finetune or align run directory, or a Hugging Face model directory "
    "(config.json and weights)"
)
HEADLINE = ("top1_agreement", "ppl_change_pct", "ms_per_token")


@dataclass(frozen=True)
class OptimizeInputs:
    """What an export reads: the model to export and the data run it is validated on."""

    model: ModelLocation
    data_dir: Path

    def recorded(self) -> dict[str, Path]:
        return {"model": self.model.source, "data": self.data_dir}


def inputs(cfg: DictConfig) -> OptimizeInputs:
    """The model (quark.lineage: step.model_dir, else the run handed over, else the newest
    align, finetune or pretrain run) and the data run; a model the export cannot take is refused
    here, before the run starts."""
    from quark.export import format_module

    model = find_model(cfg, "step.model_dir", MODEL_DIR_ALLOWED)
    check_seq_len(int(cfg.step.seq_len), model.positions or int(cfg.step.seq_len))
    format_module(str(cfg.export.name)).check(
        model.directory, model.config, str(cfg.export.precision)
    )
    check_weights(model.directory, "step.model_dir", MODEL_DIR_ALLOWED)
    return OptimizeInputs(model, validation_data(cfg, model))


def run(cfg: DictConfig, run: Run, inputs: OptimizeInputs) -> dict[str, float]:
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
    directory = inputs.model.directory
    export_format = format_module(name)

    # 1. The source model in fp32: the reference every figure is measured against.
    source_model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    source = TorchDecoder(source_model)
    windows = validation_windows(inputs.data_dir, int(step.seq_len), int(step.val_samples))
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
