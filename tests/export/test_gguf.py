"""export=gguf: the file llama.cpp reads. Its tensors read back are the model's (names, rotary
permutation, quantization), and where llama-cpp-python is installed llama.cpp itself tokenizes
like the Hugging Face tokenizer and computes the source model's logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from quark.core.errors import ConfigError
from quark.export.decoding import TorchDecoder
from quark.export.validation import compare_logits

from .conftest import TinyLlama

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def gguf_files(tiny_llama: TinyLlama, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from quark.export.gguf import write_gguf

    directory = tmp_path_factory.mktemp("gguf")
    files = {}
    for precision in ("f32", "q8_0"):
        files[precision] = directory / f"model-{precision}.gguf"
        write_gguf(tiny_llama.model(), tiny_llama.model_dir, files[precision], precision)
    return files


def test_rotary_permutation_is_llama_cpps_interleaving() -> None:
    from quark.export.gguf import permute_rotary, unpermute_rotary

    # one head of 4 rows: Hugging Face pairs row i with row i + 2, llama.cpp with row i + 1
    weight = np.arange(4.0)[:, None]
    assert permute_rotary(weight, heads=1)[:, 0].tolist() == [0.0, 2.0, 1.0, 3.0]
    grouped = np.random.default_rng(0).normal(size=(32, 8))
    assert np.array_equal(unpermute_rotary(permute_rotary(grouped, 2), 2), grouped)


@pytest.mark.parametrize(("precision", "within"), [("f32", 1e-5), ("q8_0", None)])
def test_the_files_tensors_are_the_models(
    gguf_files: dict[str, Path], tiny_llama: TinyLlama, precision: str, within: float | None
) -> None:
    import gguf

    from quark.export.gguf_runtime import GGUFReadBack

    reader = gguf.GGUFReader(str(gguf_files[precision]))
    fields = {
        name: field.contents() for name, field in reader.fields.items() if name.startswith("llama.")
    }
    assert fields["llama.block_count"] == 2 and fields["llama.attention.head_count_kv"] == 2
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_norm.weight"] == "F32"  # norms stay f32
    assert kinds["blk.0.attn_q.weight"] == precision.upper()
    # 384 embeddings, fewer tokens: the rest are padding entries
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == 384 and tokens[-1] == "[PAD383]"

    metrics = compare_logits(
        TorchDecoder(tiny_llama.model()),
        GGUFReadBack(gguf_files[precision], tiny_llama.model()),
        tiny_llama.windows,
        batch_size=4,
    )
    if within is not None:
        assert metrics["max_logit_diff"] < within
    assert metrics["top1_agreement"] >= 0.95 and abs(metrics["ppl_change_pct"]) < 2.0, metrics


@pytest.mark.parametrize(("precision", "within"), [("f32", 1e-3), ("q8_0", None)])
def test_llama_cpp_runs_the_file_like_the_source_model(
    gguf_files: dict[str, Path], tiny_llama: TinyLlama, precision: str, within: float | None
) -> None:
    pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    from quark.export.gguf_runtime import LlamaCppDecoder

    decoder = LlamaCppDecoder(gguf_files[precision], threads=1, context=256, precision=precision)
    try:
        text = "item3 has value 12 and colour green<|user|>  two  spaces<|end|>"
        expected = AutoTokenizer.from_pretrained(tiny_llama.model_dir).encode(text)
        assert decoder.llm.tokenize(text.encode(), add_bos=False, special=True) == expected
        source = TorchDecoder(tiny_llama.model())
        metrics = compare_logits(source, decoder, tiny_llama.windows, batch_size=4)
        if within is not None:
            assert metrics["max_logit_diff"] < within, metrics
        assert metrics["top1_agreement"] >= 0.95 and abs(metrics["ppl_change_pct"]) < 2.0, metrics
        prompt = tiny_llama.windows[2, :10].tolist()
        if precision == "f32":
            assert decoder.generate(prompt, 24) == source.generate(prompt, 24)
    finally:
        decoder.close()


def test_models_llama_cpp_cannot_take_are_refused(tiny_llama: TinyLlama, tmp_path: Path) -> None:
    from quark.export import gguf as gguf_export

    config = json.loads((tiny_llama.model_dir / "config.json").read_text())
    with pytest.raises(ConfigError) as refused:
        gguf_export.check(tmp_path, {**config, "model_type": "gpt2"}, "f32")
    assert str(refused.value) == (
        f"export: gguf needs a Llama-architecture model and {tmp_path} holds a 'gpt2' model; "
        "choose export=hf, onnx, onnx_int8 or torchao"
    )
    with pytest.raises(ConfigError) as refused:  # no tokenizer.json to put in the file
        gguf_export.check(tmp_path, config, "f32")
    assert str(refused.value) == (
        f"export: gguf: {tmp_path / 'tokenizer.json'} is missing or unreadable; gguf needs a "
        "byte-level BPE tokenizer.json (as the data step trains)"
    )


def test_q8_0_leaves_rows_that_are_not_whole_blocks_in_f16(
    tiny_llama: TinyLlama, tmp_path: Path
) -> None:
    """As llama.cpp's own converter does: a 172-wide MLP (llama_tiny's is 688) cannot be cut
    into 32-value blocks, so its down projection stays f16 and the rest is q8_0."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from quark.export.gguf import write_gguf
    from quark.export.gguf_runtime import GGUFReadBack

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=384,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(config).eval()
    shutil.copy(tiny_llama.model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    path = tmp_path / "model.gguf"
    assert write_gguf(model, tmp_path, path, "q8_0") == ["blk.0.ffn_down.weight"]
    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    assert kinds["blk.0.ffn_down.weight"] == "F16" and kinds["blk.0.ffn_up.weight"] == "Q8_0"
    read_back = GGUFReadBack(path, model).logits(tiny_llama.windows[:2, :-1])
    assert np.abs(read_back - TorchDecoder(model).logits(tiny_llama.windows[:2, :-1])).max() < 0.05
