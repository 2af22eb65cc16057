"""export=hf: the model as Hugging Face safetensors in fp32, bf16 or fp16.

    exports/hf/  config.json, model.safetensors, tokenizer files

`AutoModelForCausalLM.from_pretrained` loads it in the precision it was written in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quark.export import copy_model_files
from quark.export.decoding import TorchDecoder
from quark.export.validation import Tolerance
from quark.models.hf import save_model

DEFAULT_TOLERANCE = {
    # a save and reload in fp32 is exact; any difference is a broken export
    "fp32": Tolerance(max_logit_diff=1e-4, min_top1_agreement=0.999, max_ppl_change_pct=0.01),
    # Weights and activations in 16 bits. bf16 keeps 8 significant bits: logits move by a few
    # hundredths, and where the model hesitates between near-equal tokens (a small model on
    # hard positions: measured 12 % of them) the top choice flips while the perplexity does not
    # move; the perplexity is the check that matters, top-1 only catches gross breakage.
    "bf16": Tolerance(min_logit_cosine=0.999, min_top1_agreement=0.85, max_ppl_change_pct=2.0),
    "fp16": Tolerance(min_logit_cosine=0.9999, min_top1_agreement=0.95, max_ppl_change_pct=0.5),
}


def check(model_dir: Path, config: dict[str, Any], precision: str) -> None:
    """Any transformers causal LM can be written in any of the three precisions."""


def export(
    model: Any, model_dir: Path, out_dir: Path, precision: str, threads: int
) -> TorchDecoder:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    # loaded again rather than cast: the source model stays fp32 for the comparison
    save_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype), out_dir)
    copy_model_files(model_dir, out_dir, with_config=False)
    return TorchDecoder(AutoModelForCausalLM.from_pretrained(out_dir, dtype=dtype))
