"""export=onnx and onnx_int8: the ONNX graph with a key/value cache reproduces torch's logits
from an empty cache and step by step over a growing one, decodes incrementally, and its int8
quantization keeps the trained model's next-token choices and perplexity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from quark.export.decoding import TorchDecoder, cache_argument
from quark.export.validation import compare_logits

from .conftest import TinyLlama

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def onnx_export(tiny_llama: TinyLlama, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from quark.export import onnx

    out_dir = tmp_path_factory.mktemp("onnx")
    onnx.export(tiny_llama.model(), tiny_llama.model_dir, out_dir, "fp32", threads=1)
    return out_dir / "model.onnx"


def test_teacher_forced_logits_match_torch_for_any_batch(
    onnx_export: Path, tiny_llama: TinyLlama
) -> None:
    from quark.export.onnx import OnnxDecoder

    decoder = OnnxDecoder(onnx_export, threads=1)
    model = tiny_llama.model()
    for batch in (tiny_llama.windows[:1, :-1], tiny_llama.windows[:5, :-1]):  # dynamic batch
        with torch.no_grad():
            expected = model(input_ids=torch.from_numpy(batch)).logits.numpy()
        assert np.abs(decoder.logits(batch) - expected).max() < 1e-4


def test_the_cache_carries_each_step_to_the_next(onnx_export: Path, tiny_llama: TinyLlama) -> None:
    """Feed a prompt, then one token at a time with the returned cache: at every step the
    logits are torch's with its own DynamicCache."""
    import onnxruntime as ort
    from transformers import DynamicCache

    session = ort.InferenceSession(str(onnx_export), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names[3:] == [
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
        "past_key_values.1.value",
    ]
    model = tiny_llama.model()
    tokens = tiny_llama.windows[0]
    cache = DynamicCache()
    feeds = {n: np.zeros((1, 2, 0, 16), np.float32) for n in names[3:]}  # an empty past
    position, chunk = 0, 8  # the prompt, then single tokens
    while position < 20:
        ids = tokens[None, position : position + chunk]
        feeds |= {
            "input_ids": ids,
            "attention_mask": np.ones((1, position + chunk), np.int64),
            "position_ids": np.arange(position, position + chunk)[None],
        }
        position += chunk
        logits, *present = session.run(None, feeds)
        with torch.no_grad():
            expected = model(
                input_ids=torch.from_numpy(ids), use_cache=True, **{cache_argument(model): cache}
            ).logits
        assert np.abs(logits - expected.numpy()).max() < 1e-4, position
        assert present[0].shape == (1, 2, position, 16)
        feeds = {n: p for n, p in zip(names[3:], present, strict=True)}
        chunk = 1


def test_a_left_padded_batch_decodes_each_row_as_if_alone(
    onnx_export: Path, tiny_llama: TinyLlama
) -> None:
    """Two prompts of 10 and 6 tokens in one batch, the shorter padded on the left: the mask
    hides the padding and the positions count from each row's first real token."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_export), providers=["CPUExecutionProvider"])
    past_names = [i.name for i in session.get_inputs()][3:]
    long, short = tiny_llama.windows[3, :10], tiny_llama.windows[4, :6]

    def step(ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list) -> list:
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        return session.run(None, feeds | dict(zip(past_names, past, strict=True)))

    def alone(tokens: np.ndarray) -> np.ndarray:
        empty = [np.zeros((1, 2, 0, 16), np.float32)] * len(past_names)
        logits, *past = step(
            tokens[None], np.ones((1, len(tokens)), np.int64), np.arange(len(tokens))[None], empty
        )
        token = logits[:, -1:].argmax(-1)
        n = len(tokens)
        return step(token, np.ones((1, n + 1), np.int64), np.array([[n]]), past)[0][0, -1]

    mask = np.array([[1] * 10, [0] * 4 + [1] * 6], np.int64)
    positions = np.array([list(range(10)), [1] * 4 + list(range(6))])
    ids = np.stack([long, np.concatenate([[2] * 4, short])])
    empty = [np.zeros((2, 2, 0, 16), np.float32)] * len(past_names)
    logits, *past = step(ids, mask, positions, empty)
    tokens = logits[:, -1:].argmax(-1)
    mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
    logits = step(tokens, mask, np.array([[10], [6]]), past)[0]
    assert np.abs(logits[0, -1] - alone(long)).max() < 1e-4
    assert np.abs(logits[1, -1] - alone(short)).max() < 1e-4


def test_greedy_incremental_decoding_matches_torch(
    onnx_export: Path, tiny_llama: TinyLlama
) -> None:
    from quark.export.onnx import OnnxDecoder

    prompt = tiny_llama.windows[1, :12].tolist()
    expected = TorchDecoder(tiny_llama.model()).generate(prompt, 32)
    assert OnnxDecoder(onnx_export, threads=1).generate(prompt, 32) == expected


@pytest.mark.parametrize(
    ("precision", "operator"), [("int8", b"MatMulInteger"), ("int8_block32", b"MatMulNBits")]
)
def test_int8_keeps_the_trained_models_choices(
    onnx_export: Path, tiny_llama: TinyLlama, tmp_path: Path, precision: str, operator: bytes
) -> None:
    from quark.export.onnx import OnnxDecoder
    from quark.export.onnx_int8 import quantize_onnx

    quantize_onnx(onnx_export, tmp_path / "model.onnx", precision)
    quantized = OnnxDecoder(tmp_path / "model.onnx", threads=1)
    source = TorchDecoder(tiny_llama.model())
    metrics = compare_logits(source, quantized, tiny_llama.windows, batch_size=4)
    assert metrics["top1_agreement"] >= 0.95, metrics
    assert abs(metrics["ppl_change_pct"]) < 2.0, metrics
    assert metrics["max_logit_diff"] > 1e-3  # it is quantized: not the fp32 graph
    assert operator in (tmp_path / "model.onnx").read_bytes()
    # int8 weights: well under half the fp32 file (block32 keeps the embedding table in fp32)
    assert (tmp_path / "model.onnx").stat().st_size < 0.45 * onnx_export.stat().st_size


def test_each_layer_is_one_attention_node_over_the_cache_and_four_matmuls(
    onnx_export: Path, tiny_llama: TinyLlama
) -> None:
    """The graph a decoding step runs (quark.export.onnx_graph): Attention takes q, k, v as
    the projections make them and the past, and returns the present itself; q, k, v and
    gate, up are one MatMul each; the mask is a few nodes. Fewer nodes is time saved per
    token (bench/RESULTS.md)."""
    import onnx

    config = tiny_llama.model().config
    layers = config.num_hidden_layers
    graph = onnx.load(str(onnx_export), load_external_data=False).graph
    ops = [node.op_type for node in graph.node]
    attention = [node for node in graph.node if node.op_type == "Attention"]
    assert len(attention) == layers
    for index, node in enumerate(attention):
        assert node.input[4:] == [f"past_key_values.{index}.key", f"past_key_values.{index}.value"]
        assert node.output[1:] == [f"present.{index}.key", f"present.{index}.value"]
        heads = {a.name: a.i for a in node.attribute if a.name.endswith("num_heads")}
        assert heads == {
            "q_num_heads": config.num_attention_heads,
            "kv_num_heads": config.num_key_value_heads,
        }
    # grouped-query SDPA: no repeat_kv Expand; no per-layer head reshuffling or cache Concat
    assert ops.count("Expand") == 0
    assert ops.count("Transpose") == 0
    assert ops.count("Concat") < layers
    # q|k|v, o, gate|up, down per layer, and the head
    assert ops.count("MatMul") == 4 * layers + 1
    assert ops.count("Split") == 2 * layers
    # the causal and padding mask from two Ranges, not transformers' general mask functions
    assert "GatherND" not in ops
    assert ops.count("Range") == 2


def test_a_model_over_one_gigabyte_keeps_its_weights_beside_the_graph(
    tiny_llama: TinyLlama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """protobuf cannot hold 2 GiB: large models' weights go to model.onnx.data, and the
    graph rewrite reads and writes them there."""
    from quark.export import onnx
    from quark.export.onnx import OnnxDecoder

    monkeypatch.setattr(onnx, "EXTERNAL_DATA_BYTES", 0)
    onnx.write_onnx(tiny_llama.model(), tmp_path / "model.onnx")
    data = tmp_path / "model.onnx.data"
    assert data.stat().st_size > (tmp_path / "model.onnx").stat().st_size
    batch = tiny_llama.windows[:2, :-1]
    with torch.no_grad():
        expected = tiny_llama.model()(input_ids=torch.from_numpy(batch)).logits.numpy()
    assert np.abs(OnnxDecoder(tmp_path / "model.onnx", 1).logits(batch) - expected).max() < 1e-4


def test_a_sliding_window_model_keeps_transformers_mask() -> None:
    from types import SimpleNamespace

    from quark.export.onnx import full_causal_attention

    assert full_causal_attention(SimpleNamespace())
    assert full_causal_attention(SimpleNamespace(sliding_window=None, layer_types=None))
    assert not full_causal_attention(SimpleNamespace(sliding_window=4096))
    assert not full_causal_attention(
        SimpleNamespace(layer_types=["full_attention", "sliding_attention"])
    )


OTHER_DECODERS = {
    # q and k normed per head before the rotary: the attention rewrite does not match
    "qwen3": {"head_dim": 16},
    # a sliding window: transformers' own mask, the attention rewrite applies
    "mistral": {"sliding_window": 8},
    # learned positions, no rotary, biases
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128},
}


@pytest.mark.parametrize("model_type", sorted(OTHER_DECODERS))
def test_other_decoders_export_and_decode_as_torch_does(model_type: str, tmp_path: Path) -> None:
    """The graph rewrites match Llama's layout or leave a layer as it is: other architectures
    export with the same inputs and outputs and compute what torch computes, past a sliding
    window too (20 tokens, window 8)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from quark.export.onnx import OnnxDecoder, write_onnx

    shape = {
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    }
    if model_type == "gpt2":
        shape = {"vocab_size": 300}
    config = AutoConfig.for_model(model_type, **shape, **OTHER_DECODERS[model_type])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    write_onnx(model, tmp_path / "model.onnx")
    decoder = OnnxDecoder(tmp_path / "model.onnx", threads=1)

    tokens = np.random.default_rng(0).integers(0, 300, (2, 20))
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(tokens)).logits.numpy()
    assert np.abs(decoder.logits(tokens) - expected).max() < 1e-4
    prompt = tokens[0, :12].tolist()
    assert decoder.generate(prompt, 16) == TorchDecoder(model).generate(prompt, 16)
