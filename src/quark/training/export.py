"""The Hugging Face model directory every training run leaves, checked against the trained model.

`export_hf` writes a model held whole in this process. `export_checkpoint` writes the model of a
training checkpoint of any strategy (ZeRO-3 and FSDP2 ranks each hold a shard of every weight,
so the live model cannot simply be saved), consolidated on one process, and checks the export
against the trained model's validation loss.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from quark.core.errors import QuarkError, StepFailed
from quark.models.hf import TOKENIZER_FILES, save_model

# fp32 save and reload is exact on CPU; anything above this is a broken export, not rounding
MAX_LOGIT_DIFFERENCE = 1e-4
# How far the export's validation loss (fp32, one process) may be from the trained model's
# (trainer.validate: sharded, in the training precision), in nats. In fp32 only the order of
# sums differs; 16-bit training computes with rounded weights and activations. A wrong or stale
# weight moves the loss by far more than either.
VALIDATION_LOSS_TOLERANCE = {"32-true": 1e-3, "bf16-mixed": 5e-2, "16-mixed": 5e-2}
SIXTEEN_BIT_TOLERANCE = 1e-1  # bf16-true, 16-true: the weights themselves are 16-bit


def export_hf(
    model: Any, hf_dir: Path, tokenizer: Any, sample: Any, *, model_class: Any = None
) -> float:
    """Write `model` and its tokenizer to `hf_dir` (config.json, safetensors, tokenizer files),
    reload it with `model_class.from_pretrained` (default AutoModelForCausalLM), and return the
    largest logit difference from `model` on `sample` (token ids, batch first).

    `tokenizer` is a directory whose tokenizer files are copied, a tokenizer object with
    `save_pretrained`, or None.

    Raises:
        QuarkError: the reloaded model's logits differ by more than MAX_LOGIT_DIFFERENCE.
    """
    hf_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, hf_dir)
    if isinstance(tokenizer, Path):
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file():
                shutil.copy2(tokenizer / name, hf_dir / name)
    elif tokenizer is not None:
        tokenizer.save_pretrained(hf_dir)
    difference = reload_logit_difference(model, hf_dir, sample, model_class)
    if difference > MAX_LOGIT_DIFFERENCE:
        raise QuarkError(
            f"{hf_dir}: the exported model's logits differ from the trained model's by {difference:.3g}"
        )
    return difference


def export_checkpoint(
    checkpoint: Path,
    config: Any,
    hf_dir: Path,
    tokenizer: Any,
    sample: Any,
    *,
    trained_model: Any = None,
    val_batches: Iterable[Any] | None = None,
    trained_val_loss: float | None = None,
    precision: str = "32-true",
    device: Any = "cpu",
    model_class: Any = None,
) -> dict[str, float]:
    """Export the model in `checkpoint` (any strategy's; see quark.training.checkpoints) as a
    Hugging Face directory of `config`'s architecture (`model_class`, by default a causal LM),
    fp32, and return `hf_max_logit_diff` (the reload check of `export_hf`) and the check that the
    checkpoint holds the trained model:
    - given `trained_model` (the trained model, held whole in this process), every weight of the
      checkpoint must equal the trained model's, in the trained model's dtype:
      `checkpoint_max_weight_diff`, 0 or StepFailed;
    - else, given `val_batches` (ZeRO-3 and FSDP2, where no process holds the model whole),
      `hf_val_loss`: the export's loss on them, computed on `device`.

    Raises:
        QuarkError: the checkpoint is unreadable or does not fit `config`.
        StepFailed: a checkpoint weight differs from `trained_model`'s, or `hf_val_loss` is
            further from `trained_val_loss` than `precision` allows.
    """
    from quark.training.checkpoints import model_from_checkpoint

    model = model_from_checkpoint(checkpoint, config, model_class)
    metrics = {
        "hf_max_logit_diff": export_hf(model, hf_dir, tokenizer, sample, model_class=model_class)
    }
    if trained_model is not None:
        difference, name = max_weight_difference(trained_model, model)
        metrics["checkpoint_max_weight_diff"] = difference
        if difference != 0.0:
            raise StepFailed(
                f"{checkpoint}: weight {name} differs from the trained model's by {difference:.3g}; "
                f"the export in {hf_dir} does not hold the trained model"
            )
        return metrics
    if val_batches is None:
        return metrics
    loss = validation_loss(model, val_batches, device)
    metrics["hf_val_loss"] = loss
    if trained_val_loss is not None:
        allowed = VALIDATION_LOSS_TOLERANCE.get(precision, SIXTEEN_BIT_TOLERANCE)
        if not abs(loss - trained_val_loss) <= allowed:
            raise StepFailed(
                f"{hf_dir}: the exported model's validation loss {loss:.6g} differs from the "
                f"trained model's {trained_val_loss:.6g} by more than {allowed:g} ({precision}); "
                f"the checkpoint {checkpoint} is kept"
            )
    return metrics


def max_weight_difference(trained: Any, restored: Any) -> tuple[float, str]:
    """The largest absolute difference between a weight of `restored` and the same weight of
    `trained`, compared in `trained`'s dtype and on the CPU (a bf16 model's fp32 master weights
    rounded as its bf16 weights were), and the name of that weight. Every weight of `restored`
    must be in `trained`: exact equality is what a checkpoint of a model held whole promises."""
    import torch

    theirs = trained.state_dict()
    differences: dict[str, float] = {}
    with torch.no_grad():
        for key, weight in restored.state_dict().items():
            if key not in theirs:
                return float("inf"), key
            live = theirs[key].detach().cpu()
            gap = (weight.to(live.dtype) - live).abs()
            differences[key] = float(gap.max()) if gap.numel() else 0.0
    name = max(differences, key=differences.__getitem__)
    return differences[name], name


def validation_loss(model: Any, batches: Iterable[Any], device: Any = "cpu") -> float:
    """Next-token cross-entropy of `model` over `batches` (token windows, batch first), averaged
    over every target token: what CausalLMModule logs as val/loss."""
    import torch

    total, tokens = 0.0, 0
    model.to(device)
    with torch.no_grad():
        for batch in batches:
            windows = batch.to(device)
            logits = model(input_ids=windows[:, :-1]).logits.float()
            targets = windows[:, 1:].reshape(-1)
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), targets, reduction="sum"
                )
            )
            tokens += targets.numel()
    model.to("cpu")
    return total / tokens


def reload_logit_difference(
    model: Any, hf_dir: Path, sample: Any, model_class: Any = None
) -> float:
    """Largest absolute logit difference between `model` and the model reloaded from `hf_dir`
    by `model_class` (default AutoModelForCausalLM)."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = (model_class or AutoModelForCausalLM).from_pretrained(hf_dir).eval()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ours = model(input_ids=sample).logits.float()
        theirs = reloaded(input_ids=sample).logits.float()
    model.train(was_training)
    return float((ours - theirs).abs().max())


def convert_to_hf(source: Path, out: Path, config_file: Path | None = None) -> dict[str, Any]:
    """Export the checkpoint at `source` (a run directory means its checkpoints/last.ckpt) as a
    Hugging Face directory `out`, with the run's tokenizer when one is found; return what was
    done (checkpoint, format, tokenizer, parameters, hf_max_logit_diff).

    The model's shape comes from the run's config.yaml (`config_file` overrides where to look).

    Raises:
        QuarkError: no such run or checkpoint, no config, an unreadable checkpoint, `out` in use.
    """
    import torch
    from omegaconf import OmegaConf

    from quark.training.checkpoints import FORMAT_NAMES, checkpoint_format, model_from_checkpoint

    checkpoint, run_dir = _checkpoint_and_run(source)
    kind = checkpoint_format(checkpoint)
    config_file = config_file or run_dir / "config.yaml"
    if not config_file.is_file():
        raise QuarkError(
            f"{checkpoint}: cannot find the config.yaml of the run that wrote it ({config_file}); "
            "pass --config RUN_DIR/config.yaml"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QuarkError(f"{out}: already exists and is not an empty directory; choose a new --out")
    cfg = OmegaConf.load(config_file)
    if "model" not in cfg:
        raise QuarkError(f"{config_file}: has no model group; give a training run's config.yaml")
    try:
        config = hf_model_config(cfg.model)
    except QuarkError:
        raise
    except Exception as exc:  # OmegaConf or transformers on a model group they cannot read
        raise QuarkError(
            f"{config_file}: its model group describes no model "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    model = model_from_checkpoint(checkpoint, config)
    tokenizer = _tokenizer_of(run_dir, cfg)
    sample = torch.randint(
        model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0)
    )
    difference = export_hf(model, out, tokenizer, sample)
    return {
        "checkpoint": checkpoint,
        "format": FORMAT_NAMES[kind],
        "tokenizer": tokenizer,
        "parameters": sum(p.numel() for p in model.parameters()),
        "hf_max_logit_diff": difference,
    }


def hf_model_config(model: Any) -> Any:
    """The transformers config a `model` group describes (built-in Llama size or model=hf)."""
    if model.get("name_or_path"):
        from transformers import AutoConfig

        from quark.models.hf import hub_offline

        return AutoConfig.from_pretrained(
            str(model.name_or_path),
            trust_remote_code=bool(model.get("trust_remote_code", False)),
            local_files_only=hub_offline(),
        )
    from quark.models.llama import LlamaShape

    return LlamaShape.from_model_config(model).to_hf_config()


def _checkpoint_and_run(source: Path) -> tuple[Path, Path]:
    """The checkpoint `source` names, and the run directory it belongs to."""
    if not source.exists():
        raise QuarkError(f"{source}: no such run directory or checkpoint")
    if (source / "config.yaml").is_file():  # a run directory
        last = source / "checkpoints" / "last.ckpt"
        if not last.exists():
            raise QuarkError(
                f"{source}: the run has no checkpoints/last.ckpt; give one of its checkpoints"
            )
        return last, source
    # checkpoints live in RUN_DIR/checkpoints/
    return source, source.resolve().parent.parent


def _tokenizer_of(run_dir: Path, cfg: Any) -> Path | None:
    """The tokenizer directory of the data run a run trained on, or the run's own export."""
    import json

    candidates = []
    manifest = run_dir / "manifest.json"
    if manifest.is_file():
        for item in json.loads(manifest.read_text()).get("inputs", []):
            candidates.append(Path(item["path"]) / "tokenizer")
    data_dir = cfg.get("step", {}).get("data_dir")
    if data_dir:
        candidates.append(Path(str(data_dir)) / "tokenizer")
    candidates.append(run_dir / "hf")
    for directory in candidates:
        if (directory / "tokenizer.json").is_file():
            return directory
    return None
