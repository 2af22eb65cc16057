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

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.console import print_run_summary
from quark.core.errors import ConfigError
from quark.core.run import Run
from quark.data.records import check_records, holds_records
from quark.lineage.finding import find_run, missing
from quark.lineage.model_files import check_tokenizer, check_weights
from quark.lineage.models import ModelLocation, locate_model
from quark.models.hf import check_seq_len

INIT_FROM_ALLOWED = (
    "give a pretrain or finetune run directory, or a Hugging Face model directory "
    "(config.json, weights, tokenizer)"
)
TOKENIZER_ALLOWED = "give a Hugging Face tokenizer directory, or a model directory saved with one"

PAIRS_ALLOWED = (
    "make one with: python launch.py step=data data=arithmetic_sft, or give a directory "
    "holding train.jsonl and val.jsonl of prompt/response records"
)
# when a split inputs() found is gone by the time run() reads it
SPLITS_ALLOWED = (
    "give a data run of data=arithmetic_sft, or a directory holding train.jsonl and "
    "val.jsonl with prompt and response fields"
)


@dataclass(frozen=True)
class FinetuneInputs:
    """What fine-tuning reads: the starting model, the prompt/response pairs, and optionally a
    tokenizer directory that replaces the model's."""

    model: ModelLocation
    pairs_dir: Path
    tokenizer_dir: Path | None

    def recorded(self) -> dict[str, Path]:
        found = {"model": self.model.source, "data": self.pairs_dir}
        return found | ({"tokenizer": self.tokenizer_dir} if self.tokenizer_dir else {})


def holds_pairs(directory: Path) -> bool:
    """Whether train.jsonl and val.jsonl are there and the first record has prompt and response."""
    return holds_records(directory, ("prompt", "response"))


def inputs(cfg: DictConfig) -> FinetuneInputs:
    """The starting model (step.init_from, else the pretrain run a pipeline handed over, else
    the newest completed pretrain run) and the pairs (step.data_dir, else the data run handed
    over, else the newest completed data run of pairs): quark.lineage finds both."""
    strategy = str(cfg.trainer.strategy)
    if cfg.peft.name == "lora" and strategy not in ("single", "ddp"):
        # sharded strategies hold the adapters in shards: nothing merges or saves them yet
        raise ConfigError(
            "trainer.strategy",
            f"'{strategy}' is not built for LoRA fine-tuning",
            "with peft=lora use trainer=cpu, gpu or ddp",
        )
    source = find_run(cfg, ("pretrain",), key="step.init_from", allowed=INIT_FROM_ALLOWED)
    if source is None:
        raise missing(
            cfg,
            "step.init_from",
            "pretrain run",
            "make one with: python launch.py pipeline=quickstart, or " + INIT_FROM_ALLOWED,
        )
    tokenizer_dir = Path(str(cfg.step.tokenizer)).expanduser() if cfg.step.tokenizer else None
    model = locate_model(
        source, "step.init_from", INIT_FROM_ALLOWED, needs_tokenizer=tokenizer_dir is None
    )
    check_weights(model.directory, "step.init_from", INIT_FROM_ALLOWED)
    if tokenizer_dir is not None:
        check_tokenizer(tokenizer_dir, "step.tokenizer", TOKENIZER_ALLOWED)
    check_seq_len(int(cfg.step.seq_len), model.positions or int(cfg.step.seq_len))
    data_dir = find_run(
        cfg, ("data",), key="step.data_dir", holds=holds_pairs, allowed=SPLITS_ALLOWED
    )
    if data_dir is None:
        raise missing(cfg, "step.data_dir", "data run of prompt/response pairs", PAIRS_ALLOWED)
    if not holds_pairs(data_dir):
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} holds no prompt/response splits (train.jsonl, val.jsonl)",
            "give a data run of data=arithmetic_sft, or a directory of jsonl records with "
            "prompt and response fields",
        )
    check_records(data_dir, ("train.jsonl", "val.jsonl"), "step.data_dir", SPLITS_ALLOWED)
    return FinetuneInputs(model, data_dir, tokenizer_dir)


def run(cfg: DictConfig, run: Run, inputs: FinetuneInputs) -> dict[str, float]:
    import lightning as L
    import torch
    from transformers import AutoModelForCausalLM

    from quark.core.run import process_rank
    from quark.data.pairs import read_pairs, render_prompts, write_answers
    from quark.eval.exact_match import greedy_exact_match
    from quark.hpo.pruning import trial_callbacks
    from quark.training.export import export_checkpoint, export_hf
    from quark.training.lora import add_lora, merged_model, save_adapter, trainable_parameters
    from quark.training.module import CausalLMModule
    from quark.training.sft import (
        SampleDataModule,
        check_lengths,
        collate,
        encode_pairs,
        load_chat_model,
        pack,
    )
    from quark.training.strategies import check_layout
    from quark.training.trainer import fit, quiet_libraries

    quiet_libraries()
    step, trainer_cfg, lora = cfg.step, cfg.trainer, cfg.peft.name == "lora"
    check_layout(cfg)
    source_dir, data_dir = inputs.model.directory, inputs.pairs_dir
    device = "cuda" if trainer_cfg.accelerator == "gpu" else "cpu"  # where answers are generated

    # 1. The starting model, and its tokenizer with the chat template.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    tokenizer_dir = inputs.tokenizer_dir or source_dir
    chat = load_chat_model(source_dir, tokenizer_dir, str(step.chat_template), str(step.stop_token))
    model, tokenizer = chat.model, chat.tokenizer

    # 2. The pairs, as token ids with labels on the answers only; never cut.
    system_prompt = str(step.system_prompt) if step.system_prompt else None
    train_pairs, val_pairs = (
        read_pairs(
            data_dir / f"{split}.jsonl",
            key="step.data_dir",
            allowed=SPLITS_ALLOWED,
            purpose="supervised fine-tuning",
        )
        for split in ("train", "val")
    )
    train = encode_pairs(tokenizer, train_pairs, system_prompt)
    val = encode_pairs(tokenizer, val_pairs, system_prompt)
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
    module = CausalLMModule(model, step.optim, compile=bool(trainer_cfg.compile))
    datamodule = SampleDataModule(
        train,
        val,
        collate(chat.pad_id),
        int(trainer_cfg.micro_batch_size),
        int(cfg.seed),
        int(step.val_samples),
    )
    # from step.resume, if set; ends with checkpoints/last.ckpt and a final validation
    fitted = fit(
        cfg,
        run,
        module,
        datamodule,
        tokens_per_sample=max(1, round(sum(len(e.input_ids) for e in train) / len(train))),
        callbacks=trial_callbacks(),  # pruning, when this job is a trial of an Optuna study
    )
    if not fitted.trainer.is_global_zero:
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
        metrics.update(
            export_checkpoint(fitted.last_checkpoint, model.config, hf_dir, tokenizer, sample)
        )
    if (hf_dir / "config.json").is_file():
        chat.generation_config.save_pretrained(hf_dir)  # generate() stops where answers end
        run.add_output("hf")
        final = AutoModelForCausalLM.from_pretrained(hf_dir)  # the export is what gets checked
    after, answers_after = accuracy(final)
    write_answers(
        run.path("val_answers.jsonl"),
        eval_pairs,
        before=answers_before or [None] * len(eval_pairs),  # answered on rank 0 only
        after=answers_after,
    )
    run.add_output("val_answers.jsonl")
    run.add_output("checkpoints")
    run.add_output(Path("logs") / "metrics.csv")

    metrics = {
        "val_accuracy_before": before,
        "val_accuracy": after,
        "val_loss": float(fitted.validation["val/loss"]),
        "train_loss": fitted.train_loss,
        "steps": float(fitted.trainer.global_step),
        "train_seconds": fitted.seconds,
        **metrics,
    }
    print_run_summary(
        "Finetune",
        metrics,
        {
            "hf export": run.dir / "hf",
            "adapter": run.dir / "adapter",
            "answers": run.dir / "val_answers.jsonl",
            "checkpoint": run.dir / "checkpoints" / "last.ckpt",
        },
    )
    return metrics
