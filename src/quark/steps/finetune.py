"""Step 4, finetune: supervised instruction tuning of a pretrained model, full or LoRA.

    python launch.py step=data data=arithmetic_sft && python launch.py step=finetune
    python launch.py step=finetune step.init_from=outputs/demo/pretrain/2026-11-24_10-00-00 peft=lora
    python launch.py step=finetune step.init_from=path/to/hf_model step.data_dir=my_pairs/
    python launch.py step=finetune step.resume=auto

Reads {prompt, response} pairs (train.jsonl, val.jsonl of a data run or any directory), renders
them with the step's chat template, and trains the model of a pretrain or finetune run (its
hf/ export) or of a Hugging Face model directory with the loss on response tokens only. The
task accuracy (exact match of the greedy answer) on the validation split is measured before
and after training. Writes checkpoints, hf/ (the trained model, or with LoRA the merged one)
whose tokenizer carries the chat template, and with LoRA the PEFT adapter in adapter/.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError
from quark.core.run import Run
from quark.models.hf import run_model_dir

INIT_FROM_ALLOWED = (
    "give a pretrain or finetune run directory, or a Hugging Face model directory "
    "(config.json, weights, tokenizer)"
)


def init_from(cfg: DictConfig) -> Path:
    """The run or model directory to start from: step.init_from, else the pretrain run a
    pipeline handed on, else the newest completed pretrain run of the experiment."""
    if cfg.step.init_from:
        return Path(str(cfg.step.init_from)).expanduser()
    handed = (cfg.get("inputs") or {}).get("pretrain")
    if handed:
        return Path(str(handed))
    from quark.core.runs import latest_completed

    output_dir, experiment = cfg.paths.output_dir, str(cfg.experiment_name)
    record = latest_completed(output_dir, experiment, "pretrain")
    if record is None:
        raise ConfigError(
            "step.init_from",
            f"no completed pretrain run in experiment '{experiment}' under {output_dir}",
            "make one with: python launch.py pipeline=quickstart, or " + INIT_FROM_ALLOWED,
        )
    return record.path


def model_dir(source: Path) -> Path:
    """The Hugging Face model directory of `source`: a run's hf/ export, or `source` itself."""
    return run_model_dir(source, "step.init_from", INIT_FROM_ALLOWED)


def pairs_dir(cfg: DictConfig) -> Path:
    """step.data_dir, else the data run a pipeline handed on, else the newest completed data run
    holding train.jsonl and val.jsonl of prompt/response records."""
    if cfg.step.data_dir:
        return Path(str(cfg.step.data_dir)).expanduser()
    handed = (cfg.get("inputs") or {}).get("data")
    if handed:
        return Path(str(handed))
    from quark.core.runs import find_runs

    output_dir, experiment = cfg.paths.output_dir, str(cfg.experiment_name)
    for record in reversed(find_runs(output_dir, experiment, "data", "completed")):
        if holds_pairs(record.path):
            return record.path
    raise ConfigError(
        "step.data_dir",
        f"no completed data run of prompt/response pairs in experiment '{experiment}' under {output_dir}",
        "make one with: python launch.py step=data data=arithmetic_sft, or give a directory "
        "holding train.jsonl and val.jsonl",
    )


def holds_pairs(directory: Path) -> bool:
    """Whether train.jsonl and val.jsonl are there and the first record has prompt and response."""
    if not (directory / "val.jsonl").is_file() or not (directory / "train.jsonl").is_file():
        return False
    with open(directory / "train.jsonl") as lines:
        first = lines.readline()
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "prompt" in record and "response" in record


def inputs(cfg: DictConfig) -> list[Path]:
    """The starting model (a run is verified against its manifest) and the pairs."""
    strategy = str(cfg.trainer.strategy)
    if cfg.peft.name == "lora" and strategy not in ("single", "ddp"):
        # sharded strategies hold the adapters in shards: nothing merges or saves them yet
        raise ConfigError(
            "trainer.strategy",
            f"'{strategy}' is not built for LoRA fine-tuning",
            "with peft=lora use trainer=cpu, gpu or ddp",
        )
    source = init_from(cfg)
    model_dir(source)
    data_dir = pairs_dir(cfg)
    if not holds_pairs(data_dir):
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} holds no prompt/response splits (train.jsonl, val.jsonl)",
            "give a data run of data=arithmetic_sft, or a directory of jsonl records with "
            "prompt and response fields",
        )
    return [source, data_dir] + ([Path(str(cfg.step.tokenizer))] if cfg.step.tokenizer else [])


def run(cfg: DictConfig, run: Run) -> dict[str, float]:
    import lightning as L
    import torch
    from transformers import AutoModelForCausalLM

    from quark.core.run import process_rank
    from quark.eval.exact_match import greedy_exact_match
    from quark.hpo.pruning import trial_callbacks
    from quark.training.export import export_checkpoint, export_hf
    from quark.training.lora import add_lora, merged_model, save_adapter, trainable_parameters
    from quark.training.module import CausalLMModule
    from quark.training.resume import resume_checkpoint, resume_key
    from quark.training.sft import (
        SFTDataModule,
        check_lengths,
        encode_pairs,
        load_chat_model,
        pack,
        read_pairs,
        render_prompts,
    )
    from quark.training.strategies import check_layout
    from quark.training.trainer import build_trainer, quiet_libraries

    quiet_libraries()
    step, trainer_cfg, lora = cfg.step, cfg.trainer, cfg.peft.name == "lora"
    check_layout(cfg)
    source_dir = model_dir(init_from(cfg))
    data_dir = pairs_dir(cfg)
    device = "cuda" if trainer_cfg.accelerator == "gpu" else "cpu"  # where answers are generated

    # 1. The starting model, and its tokenizer with the chat template.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    tokenizer_dir = Path(str(step.tokenizer)).expanduser() if step.tokenizer else source_dir
    chat = load_chat_model(source_dir, tokenizer_dir, str(step.chat_template), str(step.stop_token))
    model, tokenizer = chat.model, chat.tokenizer

    # 2. The pairs, as token ids with labels on the answers only; never cut.
    system_prompt = str(step.system_prompt) if step.system_prompt else None
    train_pairs = read_pairs(data_dir / "train.jsonl")
    val_pairs = read_pairs(data_dir / "val.jsonl")
    train = encode_pairs(tokenizer, train_pairs, system_prompt)
    val = encode_pairs(tokenizer, val_pairs, system_prompt)
    positions = int(getattr(model.config, "max_position_embeddings", step.seq_len))
    if int(step.seq_len) > positions:
        raise ConfigError(
            "step.seq_len",
            f"{step.seq_len} exceeds the model's {positions} positions",
            f"allowed: <= {positions}",
        )
    check_lengths(train, int(step.seq_len), "train")
    check_lengths(val, int(step.seq_len), "val")
    if bool(step.packing):
        train = pack(train, int(step.seq_len))

    # 3. Accuracy of the starting model, on the validation prompts checked again at the end.
    eval_pairs = val_pairs[: int(step.eval_samples)]
    eval_prompts = render_prompts(tokenizer, eval_pairs, system_prompt)

    def accuracy(of: Any) -> tuple[float, list[str]]:
        found = greedy_exact_match(
            of.to(device),
            tokenizer,
            eval_prompts,
            [p.response for p in eval_pairs],
            stop_token_ids=chat.stop_ids,
            max_new_tokens=int(step.max_new_tokens),
            batch_size=int(step.eval_batch_size),
        )
        return found.accuracy, found.answers

    before, answers_before = accuracy(model) if process_rank() == 0 else (0.0, [])
    model.to("cpu")

    # 4. Train every weight, or LoRA adapters on the frozen model.
    model.train()  # from_pretrained gives eval mode, and Lightning keeps each module's mode
    if lora:
        model = add_lora(model, cfg.peft)
    trainable = trainable_parameters(model)
    module = CausalLMModule(model, step.optim)
    datamodule = SFTDataModule(
        train,
        val,
        chat.pad_id,
        int(trainer_cfg.micro_batch_size),
        int(cfg.seed),
        int(step.val_samples),
    )
    trainer = build_trainer(
        cfg,
        run,
        tokens_per_sample=max(1, round(sum(len(e.input_ids) for e in train) / len(train))),
        callbacks=trial_callbacks(),  # pruning, when this job is a trial of an Optuna study
    )
    resume_from = resume_checkpoint(cfg, run)
    # resume=auto finds an interrupted run of this config by this key
    run.update(resume_key=resume_key(cfg), resumed_from=str(resume_from) if resume_from else None)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    last = run.dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(str(last))
    train_loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    final_val = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    if not trainer.is_global_zero:
        return {}  # rank 0 exports and records

    # 5. Export hf/ (LoRA: the merged model) with the chat tokenizer, and LoRA's adapter/.
    metrics: dict[str, float] = {"trainable_params": float(trainable)}
    hf_dir, sample = run.dir / "hf", torch.tensor([val[0].input_ids])
    final = model
    if lora:
        save_adapter(model, run.path("adapter", "adapter_config.json").parent, tokenizer)
        run.add_output("adapter")
    if lora and bool(cfg.peft.merge):
        final, metrics["merge_max_logit_diff"] = merged_model(model, sample)
        metrics["hf_max_logit_diff"] = export_hf(final, hf_dir, tokenizer, sample)
    elif not lora:
        # rebuilt whole from the checkpoint: under FSDP and ZeRO-3 each rank holds shards
        metrics.update(export_checkpoint(last, model.config, hf_dir, tokenizer, sample))
    if (hf_dir / "config.json").is_file():
        chat.generation_config.save_pretrained(hf_dir)  # generate() stops where answers end
        run.add_output("hf")
        final = AutoModelForCausalLM.from_pretrained(hf_dir)  # the export is what gets checked
    after, answers_after = accuracy(final)
    write_answers(run.path("val_answers.jsonl"), eval_pairs, answers_before, answers_after)
    run.add_output("val_answers.jsonl")
    run.add_output("checkpoints")
    run.add_output(Path("logs") / "metrics.csv")

    metrics = {
        "val_accuracy_before": before,
        "val_accuracy": after,
        "val_loss": float(final_val["val/loss"]),
        "train_loss": train_loss,
        "steps": float(trainer.global_step),
        "train_seconds": seconds,
        **metrics,
    }
    _print_summary(run, metrics)
    return metrics


def write_answers(path: Path, pairs: list, before: list[str], after: list[str]) -> None:
    """What the model answered to each checked prompt, before and after training."""
    with open(path, "w") as out:
        for index, pair in enumerate(pairs):
            record = {
                "prompt": pair.prompt,
                "reference": pair.response,
                "before": before[index] if before else None,
                "after": after[index],
            }
            out.write(json.dumps(record) + "\n")


def _print_summary(run: Run, metrics: dict[str, float]) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    table = Table(title="Finetune", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}")
    for name, label in (
        ("hf", "hf export"),
        ("adapter", "adapter"),
        ("val_answers.jsonl", "answers"),
    ):
        if (run.dir / name).exists():
            table.add_row(label, str(run.dir / name))
    table.add_row("checkpoint", str(run.dir / "checkpoints" / "last.ckpt"))
    wide_console().print(table)
