"""Step 3, pretrain: causal-LM training of a base model on a data run's token shards.

    python launch.py step=data && python launch.py step=pretrain
    python launch.py step=pretrain step.max_steps=1000 trainer.micro_batch_size=16
    python launch.py step=pretrain step.resume=auto

Reads the shards of a data run, trains the configured Llama with Lightning (AdamW with
weight-decay groups, warmup and cosine, gradient clipping and accumulation), validates loss and
perplexity, checkpoints every N steps and at the end (`checkpoints/last.ckpt`), and writes a
Hugging Face model directory (`hf/`) that `AutoModelForCausalLM.from_pretrained` loads with
the same logits. Built so far: one process (trainer=cpu or gpu) and DDP; FSDP and DeepSpeed
come with the training issue.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError, QuarkError
from quark.core.run import Run, config_hash

SUPPORTED_STRATEGIES = ("single", "ddp")


def data_run_dir(cfg: DictConfig) -> Path:
    if cfg.step.data_dir:
        return Path(str(cfg.step.data_dir)).expanduser()
    from quark.core.resolvers import latest_run

    return Path(latest_run("data", _root_=cfg))


def inputs(cfg: DictConfig) -> list[Path]:
    """The data run (verified against its manifest) is the input."""
    data_dir = data_run_dir(cfg)
    if not (data_dir / "shards" / "index.json").is_file():
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} holds no token shards",
            "give a completed data run of a corpus (not a task set)",
        )
    return [data_dir]


def run(cfg: DictConfig, run: Run) -> dict[str, float]:
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from quark.data.packing import read_index
    from quark.training.datamodule import ShardDataModule
    from quark.training.guards import DivergenceGuard
    from quark.training.module import CausalLMModule

    step, trainer_cfg = cfg.step, cfg.trainer
    _check_layout(cfg)
    data_dir = data_run_dir(cfg)
    shard_dir = data_dir / "shards"
    index = read_index(shard_dir)
    # a model may have more embedding rows than the tokenizer has tokens (padded vocabularies),
    # never fewer: token ids would index past the embedding
    if int(index["vocab_size"]) > int(cfg.model.vocab_size):
        raise ConfigError(
            "model.vocab_size",
            f"{cfg.model.vocab_size} is smaller than the data run's tokenizer ({index['vocab_size']} tokens in {data_dir})",
            f"set model.vocab_size={index['vocab_size']} or prepare data with data.tokenizer.vocab_size={cfg.model.vocab_size}",
        )
    if int(step.seq_len) > int(cfg.model.max_seq_len):
        raise ConfigError(
            "step.seq_len",
            f"{step.seq_len} exceeds model.max_seq_len={cfg.model.max_seq_len}",
            f"allowed: <= {cfg.model.max_seq_len}",
        )

    # Lightning's tips and info lines would repeat through Hydra's log handler
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = instantiate(OmegaConf.to_container(cfg.model, resolve=True))
    module = CausalLMModule(model, step.optim)
    datamodule = ShardDataModule(
        shard_dir,
        int(step.seq_len),
        int(trainer_cfg.micro_batch_size),
        int(cfg.seed),
        int(step.val_samples),
    )
    checkpoints = run.path("checkpoints", "last.ckpt").parent
    trainer = L.Trainer(
        accelerator=str(trainer_cfg.accelerator),
        devices=int(trainer_cfg.devices),
        num_nodes=int(trainer_cfg.num_nodes),
        strategy="ddp" if trainer_cfg.strategy == "ddp" else "auto",
        # ShardDataModule shards the sample stream by rank itself, resumably
        use_distributed_sampler=False,
        precision=str(trainer_cfg.precision),  # type: ignore[arg-type]  # a schema choice
        max_steps=int(step.max_steps),
        accumulate_grad_batches=int(trainer_cfg.accumulate_grad_batches),
        gradient_clip_val=float(step.grad_clip) or None,
        val_check_interval=int(step.val_every_n_steps) * int(trainer_cfg.accumulate_grad_batches),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=L.pytorch.loggers.CSVLogger(str(run.dir), name="logs", version=""),
        callbacks=[
            DivergenceGuard(),  # before ModelCheckpoint: a non-finite step never gets saved
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=str(checkpoints),
                filename="step_{step:06d}",  # no "=": the path must work as a Hydra override value
                auto_insert_metric_name=False,
                every_n_train_steps=int(step.checkpoint_every_n_steps),
                save_top_k=-1,
                save_last=True,
            ),
            L.pytorch.callbacks.LearningRateMonitor(logging_interval="step"),
        ],
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=str(run.dir),
    )
    if bool(trainer_cfg.gradient_checkpointing):
        model.gradient_checkpointing_enable()
    resume_from = _resume_checkpoint(cfg, run)
    start_step = 0
    if resume_from is not None:
        start_step = int(
            torch.load(resume_from, map_location="cpu", weights_only=False)["global_step"]
        )
    # runs that differ only in `resume` share this key: resume=auto matches on it
    run.update(
        resume_key=config_hash(_without_resume(cfg)),
        resumed_from=str(resume_from) if resume_from else None,
    )

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    trainer.save_checkpoint(str(checkpoints / "last.ckpt"))
    train_loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    final_val = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    if not trainer.is_global_zero:
        return {}  # rank 0 exports and records

    # Hugging Face export, checked against the trained module.
    hf_dir = run.path("hf", "config.json").parent
    model.save_pretrained(hf_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        source = data_dir / "tokenizer" / name
        if source.is_file():
            shutil.copy2(source, hf_dir / name)
    max_diff = _export_logit_difference(model, hf_dir, datamodule, torch)
    if max_diff > 1e-4:
        raise QuarkError(
            f"{hf_dir}: the exported model's logits differ from the trained model's by {max_diff:.3g}"
        )
    run.add_output("hf")
    run.add_output("checkpoints")
    run.add_output(Path("logs") / "metrics.csv")

    trained_steps = int(trainer.global_step) - start_step
    tokens = (
        trained_steps
        * int(trainer_cfg.micro_batch_size)
        * int(trainer_cfg.accumulate_grad_batches)
        * int(step.seq_len)
    )
    metrics = {
        "val_loss": float(final_val["val/loss"]),
        "val_ppl": float(final_val["val/ppl"]),
        "train_loss": train_loss,
        "steps": float(trainer.global_step),
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "hf_max_logit_diff": max_diff,
    }
    _print_summary(run, metrics)
    return metrics


def _check_layout(cfg: DictConfig) -> None:
    strategy = str(cfg.trainer.strategy)
    if strategy not in SUPPORTED_STRATEGIES:
        raise ConfigError(
            "trainer",
            f"strategy '{strategy}' is not built for training yet",
            "use trainer=cpu, gpu or ddp; FSDP and DeepSpeed come with the training issue",
        )
    if cfg.trainer.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "trainer.accelerator",
                "'gpu' asked but no CUDA device is visible",
                "use trainer=cpu here",
            )
    elif cfg.trainer.precision == "16-mixed":
        raise ConfigError(
            "trainer.precision", "16-mixed needs a GPU", "use 32-true or bf16-mixed on CPU"
        )


def _resume_checkpoint(cfg: DictConfig, run: Run) -> Path | None:
    """The checkpoint to continue from: a path, or (auto) the newest unfinished run's last.ckpt."""
    resume = cfg.step.resume
    if not resume:
        return None
    if str(resume) != "auto":
        path = Path(str(resume)).expanduser()
        if not path.is_file():
            raise ConfigError(
                "step.resume", f"{path} is not a checkpoint file", "give a .ckpt path, or auto"
            )
        return path
    from quark.core.runs import find_runs

    wanted = config_hash(_without_resume(cfg))
    for record in reversed(
        find_runs(cfg.paths.output_dir, experiment=str(cfg.experiment_name), step="pretrain")
    ):
        if record.path == run.dir or record.manifest.get("status") == "completed":
            continue
        last = record.path / "checkpoints" / "last.ckpt"
        if last.is_file() and record.manifest.get("resume_key") == wanted:
            return last
    return None


def _without_resume(cfg: DictConfig) -> DictConfig:
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(copy, DictConfig)
    copy.step.resume = None
    return copy


def _export_logit_difference(model: Any, hf_dir: Path, datamodule: Any, torch: Any) -> float:
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    model.eval()
    sample = datamodule.val_windows[0][:-1].unsqueeze(0)
    with torch.no_grad():
        difference = (
            (model(input_ids=sample).logits.float() - reloaded(input_ids=sample).logits.float())
            .abs()
            .max()
        )
    return float(difference)


def _print_summary(run: Run, metrics: dict[str, float]) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    table = Table(title="Pretrain", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}")
    table.add_row("checkpoint", str(run.dir / "checkpoints" / "last.ckpt"))
    table.add_row("hf export", str(run.dir / "hf"))
    table.add_row("metrics log", str(run.dir / "logs" / "metrics.csv"))
    wide_console().print(table)
