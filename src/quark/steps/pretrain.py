"""Step 3, pretrain: causal-LM training of a base model on a data run's token shards.

    python launch.py step=data && python launch.py step=pretrain
    python launch.py step=pretrain step.max_steps=1000 trainer.micro_batch_size=16
    python launch.py step=pretrain step.resume=auto

Reads the shards of a data run, trains the configured Llama with Lightning (AdamW with
weight-decay groups, warmup and cosine, gradient clipping and accumulation), validates loss and
perplexity, checkpoints every N steps and at the end (`checkpoints/last.ckpt`), and writes a
Hugging Face model directory (`hf/`), consolidated from that checkpoint whatever the strategy
(one process, DDP, FSDP2, DeepSpeed ZeRO 1/2/3 and offload), that
`AutoModelForCausalLM.from_pretrained` loads with the trained model's validation loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from quark.core.console import print_run_summary
from quark.core.errors import ConfigError
from quark.core.run import Run
from quark.lineage.data import SHARDS_ALLOWED, shard_index
from quark.lineage.finding import find_run, holds_shards, missing
from quark.models.hf import check_seq_len
from quark.models.llama import LlamaShape

DATA_ALLOWED = (
    "prepare one with: python launch.py step=data (or just python launch.py, which runs "
    "pipeline=default: data, then pretrain), or give step.data_dir=<a data run of a corpus>"
)


@dataclass(frozen=True)
class PretrainInputs:
    """What pretraining reads: the data run whose token shards it trains on."""

    data_dir: Path

    def recorded(self) -> dict[str, Path]:
        return {"data": self.data_dir}


def model_shape(cfg: DictConfig) -> LlamaShape:
    """The model's shape (a built-in size, or model=hf's config.json), checked against step.seq_len."""
    shape = LlamaShape.from_model_config(cfg.model)
    check_seq_len(int(cfg.step.seq_len), shape.max_seq_len)
    return shape


def inputs(cfg: DictConfig) -> PretrainInputs:
    """The data run: step.data_dir, else the one a pipeline handed over, else the newest
    completed data run of the experiment with token shards (quark.lineage)."""
    model_shape(cfg)  # a bad model or sequence length fails before anything is read
    data_dir = find_run(
        cfg, ("data",), key="step.data_dir", holds=holds_shards, allowed=SHARDS_ALLOWED
    )
    if data_dir is None:
        raise missing(cfg, "step.data_dir", "data run with token shards", DATA_ALLOWED)
    shard_index(data_dir)  # token shards, whole, each as long as the index says
    return PretrainInputs(data_dir)


def run(cfg: DictConfig, run: Run, inputs: PretrainInputs) -> dict[str, float]:
    import lightning as L
    from hydra.utils import instantiate

    from quark.data.packing import read_index
    from quark.hpo.pruning import trial_callbacks
    from quark.planning.parameters import training_flops_per_token
    from quark.training.datamodule import ShardDataModule
    from quark.training.export import export_checkpoint
    from quark.training.module import CausalLMModule
    from quark.training.strategies import check_layout, holds_whole_model
    from quark.training.trainer import fit, quiet_libraries

    quiet_libraries()
    step, trainer_cfg = cfg.step, cfg.trainer
    check_layout(cfg)
    shape = model_shape(cfg)
    data_dir = inputs.data_dir
    shard_dir = data_dir / "shards"
    index = read_index(shard_dir)
    # a model may have more embedding rows than the tokenizer has tokens (padded vocabularies),
    # never fewer: token ids would index past the embedding
    if int(index["vocab_size"]) > shape.vocab_size:
        raise ConfigError(
            "model.vocab_size",
            f"{shape.vocab_size} is smaller than the data run's tokenizer ({index['vocab_size']} tokens in {data_dir})",
            f"set model.vocab_size={index['vocab_size']} or prepare data with data.tokenizer.vocab_size={shape.vocab_size}",
        )

    # Lightning's tips and info lines would repeat through Hydra's log handler
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = instantiate(OmegaConf.to_container(cfg.model, resolve=True))
    if bool(trainer_cfg.gradient_checkpointing):
        model.gradient_checkpointing_enable()
    module = CausalLMModule(model, step.optim, compile=bool(trainer_cfg.compile))
    datamodule = ShardDataModule(
        shard_dir,
        int(step.seq_len),
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
        tokens_per_sample=int(step.seq_len),
        flops_per_token=training_flops_per_token(shape, int(step.seq_len)),
        callbacks=trial_callbacks(),  # pruning, when this job is a trial of an Optuna study
    )
    trainer, final_val = fitted.trainer, fitted.validation
    if not trainer.is_global_zero:
        return {}  # rank 0 exports and records

    # The export is rebuilt from the checkpoint just written and checked against the trained
    # model: weight for weight where this process holds it whole; under ZeRO-3 and FSDP2, where
    # every rank holds a shard of each weight, by reproducing the validation loss just measured
    whole = holds_whole_model(trainer_cfg)
    exported = export_checkpoint(
        fitted.last_checkpoint,
        model.config,
        run.path("hf", "config.json").parent,
        data_dir / "tokenizer",
        datamodule.val_windows[0][:-1].unsqueeze(0),
        trained_model=model if whole else None,
        val_batches=None if whole else datamodule.val_dataloader(),
        trained_val_loss=float(final_val["val/loss"]),
        precision=str(trainer_cfg.precision),
        device=trainer.strategy.root_device,
    )
    run.add_output("hf")
    run.add_output("checkpoints")
    run.add_output(Path("logs") / "metrics.csv")

    tokens = (
        (int(trainer.global_step) - module.first_step)
        * int(trainer_cfg.micro_batch_size)
        * int(trainer_cfg.accumulate_grad_batches)
        * int(trainer_cfg.devices)
        * int(trainer_cfg.num_nodes)
        * int(step.seq_len)
    )
    metrics = {
        "val_loss": float(final_val["val/loss"]),
        "val_ppl": float(final_val["val/ppl"]),
        "train_loss": fitted.train_loss,
        "steps": float(trainer.global_step),
        "tokens_per_s": tokens / fitted.seconds if fitted.seconds > 0 else 0.0,
        **exported,  # hf_max_logit_diff, and checkpoint_max_weight_diff or hf_val_loss
    }
    print_run_summary(
        f"Pretrain (validated on the first {int(step.val_samples)} windows of "
        f"{int(step.seq_len)} tokens of the val split)",
        metrics,
        {
            "checkpoint": run.dir / "checkpoints" / "last.ckpt",
            "hf export": run.dir / "hf",
            "metrics log": run.dir / "logs" / "metrics.csv",
        },
    )
    return metrics
