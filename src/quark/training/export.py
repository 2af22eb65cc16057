"""The Hugging Face model directory every training run leaves, checked against the trained model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from quark.core.errors import QuarkError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# fp32 save and reload is exact on CPU; anything above this is a broken export, not rounding
MAX_LOGIT_DIFFERENCE = 1e-4


def export_hf(model: Any, hf_dir: Path, tokenizer: Any, sample: Any) -> float:
    """Write `model` and its tokenizer to `hf_dir` (config.json, safetensors, tokenizer files),
    reload it with `AutoModelForCausalLM.from_pretrained`, and return the largest logit
    difference from `model` on `sample` (token ids, batch first).

    `tokenizer` is a directory whose tokenizer files are copied, or a tokenizer object with
    `save_pretrained`.

    Raises:
        QuarkError: the reloaded model's logits differ by more than MAX_LOGIT_DIFFERENCE.
    """
    hf_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(hf_dir)
    if isinstance(tokenizer, Path):
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file():
                shutil.copy2(tokenizer / name, hf_dir / name)
    else:
        tokenizer.save_pretrained(hf_dir)
    difference = reload_logit_difference(model, hf_dir, sample)
    if difference > MAX_LOGIT_DIFFERENCE:
        raise QuarkError(
            f"{hf_dir}: the exported model's logits differ from the trained model's by {difference:.3g}"
        )
    return difference


def reload_logit_difference(model: Any, hf_dir: Path, sample: Any) -> float:
    """Largest absolute logit difference between `model` and the model reloaded from `hf_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ours = model(input_ids=sample).logits.float()
        theirs = reloaded(input_ids=sample).logits.float()
    model.train(was_training)
    return float((ours - theirs).abs().max())
