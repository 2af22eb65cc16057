"""export=torchao: int8 weight-only and int8 dynamic-activation exports load back quantized
through from_pretrained and keep the trained model's choices; int4 is refused on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from quark.core.errors import ConfigError
from quark.export.decoding import TorchDecoder
from quark.export.validation import compare_logits

from .conftest import TinyLlama

pytest.importorskip("torchao")


@pytest.mark.parametrize("precision", ["int8_weight_only", "int8_dynamic"])
def test_int8_modes_run_and_keep_the_models_choices(
    tiny_llama: TinyLlama, tmp_path: Path, precision: str
) -> None:
    from quark.export import torchao

    torchao.check(tiny_llama.model_dir, {}, precision)
    exported = torchao.export(tiny_llama.model(), tiny_llama.model_dir, tmp_path, precision, 1)
    weight = exported.model.model.layers[0].mlp.up_proj.weight
    assert type(weight).__name__ == "Int8Tensor"  # quantized as loaded from disk
    assert (tmp_path / "tokenizer.json").is_file()
    metrics = compare_logits(TorchDecoder(tiny_llama.model()), exported, tiny_llama.windows, 4)
    assert metrics["top1_agreement"] >= 0.95 and abs(metrics["ppl_change_pct"]) < 2.0, metrics
    prompt = tiny_llama.windows[0, :8].tolist()
    assert len(exported.generate(prompt, 4)) == 4  # decodes with its cache


def test_int4_needs_a_gpu(tiny_llama: TinyLlama) -> None:
    import torch

    from quark.export import torchao

    if torch.cuda.is_available():
        pytest.skip("int4_weight_only is allowed where CUDA is; this checks its refusal on CPU")
    with pytest.raises(ConfigError) as refused:
        torchao.check(tiny_llama.model_dir, {}, "int4_weight_only")
    assert str(refused.value) == (
        "export.precision: int4_weight_only runs on CUDA only and no GPU is available; "
        "on CPU choose int8_weight_only or int8_dynamic"
    )
