"""export=gguf: a Llama-architecture model as one GGUF file for llama.cpp, tokenizer inside.

    exports/gguf/  model.gguf, config.json, tokenizer files

Written with the `gguf` package the way llama.cpp's convert_hf_to_gguf.py writes a Llama:
tensor names from `gguf.get_tensor_name_map`, the q and k projections' rows permuted from
Hugging Face's rotary layout (two halves of each head) to llama.cpp's (interleaved pairs),
norms in f32, and the byte-level BPE tokenizer as `tokenizer.ggml.model=gpt2` with the GPT-2
pre-tokenizer. It is validated in llama.cpp itself (llama-cpp-python) when that is installed;
otherwise its tensors are read back into a transformers model (quark.export.gguf_runtime).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from quark.core.errors import ConfigError
from quark.export import copy_model_files, require
from quark.export.validation import Tolerance

log = logging.getLogger("quark.optimize")

DEFAULT_TOLERANCE = {
    # fp32 weights and key/value cache: only kernel arithmetic differs. Logits may differ by
    # up to max_logit_diff, so a token whose two best logits are that close can flip: one
    # flip in 500 positions (0.998) happened on a CI fixture with every logit within 1e-3
    "f32": Tolerance(
        max_logit_diff=1e-3,
        min_logit_cosine=0.99999,
        min_top1_agreement=0.995,
        max_ppl_change_pct=0.1,
    ),
    "f16": Tolerance(min_logit_cosine=0.9999, min_top1_agreement=0.98, max_ppl_change_pct=0.5),
    "q8_0": Tolerance(min_logit_cosine=0.99, min_top1_agreement=0.95, max_ppl_change_pct=2.0),
}
# q8_0 stores each row in blocks of 32 values; a weight whose rows are not whole blocks
# (llama_tiny's 688-wide MLP: its down projection) is written in f16, as llama.cpp's own
# convert_hf_to_gguf.py does
Q8_0_BLOCK = 32
OTHER_FORMATS = "choose export=hf, onnx, onnx_int8 or torchao"


def check(model_dir: Path, config: dict[str, Any], precision: str) -> None:
    """A Llama without biases or RoPE scaling, and a GPT-2-style byte-level BPE tokenizer."""
    require("gguf", "gguf")
    kind = config.get("model_type")
    if kind != "llama":
        raise ConfigError(
            "export",
            f"gguf needs a Llama-architecture model and {model_dir} holds a '{kind}' model",
            OTHER_FORMATS,
        )
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ConfigError(
            "export",
            f"gguf: {model_dir} has biases, which Quark's GGUF writer does not map",
            OTHER_FORMATS,
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(
            "export",
            f"gguf: {model_dir} uses '{rope['rope_type']}' RoPE scaling, which Quark's GGUF writer does not write",
            OTHER_FORMATS,
        )
    tokenizer_vocabulary(model_dir, int(config["vocab_size"]))


def export(model: Any, model_dir: Path, out_dir: Path, precision: str, threads: int) -> Any:
    from quark.export.gguf_runtime import gguf_decoder

    path = out_dir / "model.gguf"
    in_f16 = write_gguf(model, model_dir, path, precision)
    if in_f16:
        log.warning(
            "gguf q8_0: %d tensors with rows that are not whole %d-value blocks written in "
            "f16 (as llama.cpp's convert_hf_to_gguf.py does): %s",
            len(in_f16),
            Q8_0_BLOCK,
            ", ".join(in_f16),
        )
    copy_model_files(model_dir, out_dir)
    return gguf_decoder(path, model, precision, threads)


def permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a q or k projection from Hugging Face's rotary layout to llama.cpp's."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def unpermute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of `permute_rotary`."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(weight.shape)


def tensor_names(model: Any) -> dict[str, str]:
    """Hugging Face parameter name -> GGUF tensor name, for every tensor the file holds."""
    import gguf

    config = model.config
    mapping = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    names = {}
    for name in model.state_dict():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp falls back to token_embd for a missing output.weight
        mapped = mapping.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ConfigError(
                "export", f"gguf: the model's tensor {name} has no Llama GGUF name", OTHER_FORMATS
            )
        names[name] = mapped
    return names


def write_gguf(model: Any, model_dir: Path, path: Path, precision: str) -> list[str]:
    """Write `model` to `path`; return the tensors that q8_0 had to leave in f16."""
    import gguf

    config = model.config
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[precision]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(model_dir.parent.name if model_dir.name == "hf" else model_dir.name)
    writer.add_file_type(file_type)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 1e4))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    write_tokenizer(writer, model_dir, config.vocab_size)

    state, in_f16 = model.state_dict(), []
    for name, gguf_name in tensor_names(model).items():
        weight = state[name].detach().float().cpu().numpy()
        if name.endswith("q_proj.weight"):
            weight = permute_rotary(weight, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            weight = permute_rotary(weight, config.num_key_value_heads)
        if weight.ndim == 1 or precision == "f32":  # llama.cpp keeps norms in f32 always
            writer.add_tensor(gguf_name, weight.astype(np.float32))
        elif precision == "f16" or weight.shape[-1] % Q8_0_BLOCK:
            writer.add_tensor(gguf_name, weight.astype(np.float16))
            in_f16 += [gguf_name] if precision == "q8_0" else []
        else:
            kind = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(gguf_name, gguf.quants.quantize(weight, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return in_f16


def tokenizer_vocabulary(model_dir: Path, vocab_size: int) -> dict[str, Any]:
    """The parts of `model_dir`'s tokenizer.json llama.cpp needs, checked to be a byte-level BPE
    that splits text like GPT-2 (what llama.cpp's `gpt-2` pre-tokenizer does)."""
    path = model_dir / "tokenizer.json"
    allowed = "gguf needs a byte-level BPE tokenizer.json (as the data step trains)"
    try:
        tokenizer = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError("export", f"gguf: {path} is missing or unreadable", allowed) from None
    pre = tokenizer.get("pre_tokenizer") or {}
    if (
        tokenizer.get("model", {}).get("type") != "BPE"
        or pre.get("type") != "ByteLevel"
        or not pre.get("use_regex", True)
    ):
        raise ConfigError(
            "export", f"gguf: {path} is not a GPT-2-style byte-level BPE tokenizer", allowed
        )
    ids = dict(tokenizer["model"]["vocab"])
    added = {token["content"]: token for token in tokenizer.get("added_tokens", [])}
    ids.update({content: token["id"] for content, token in added.items()})
    if max(ids.values()) >= vocab_size:
        raise ConfigError(
            "export",
            f"gguf: {path} has token ids up to {max(ids.values())} and the model {vocab_size} embeddings",
            allowed,
        )
    config_path = model_dir / "tokenizer_config.json"
    special = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return {"ids": ids, "added": added, "merges": tokenizer["model"]["merges"], "config": special}


def write_tokenizer(writer: Any, model_dir: Path, vocab_size: int) -> None:
    import gguf

    vocabulary = tokenizer_vocabulary(model_dir, vocab_size)
    by_id = {index: token for token, index in vocabulary["ids"].items()}
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:  # embedding rows past the tokenizer (a padded vocabulary)
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in vocabulary["added"]:
            special = vocabulary["added"][token].get("special", False)
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(
        [" ".join(merge) if isinstance(merge, list) else merge for merge in vocabulary["merges"]]
    )
    config = vocabulary["config"]
    for role, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        name = config.get(f"{role}_token")
        if isinstance(name, str) and name in vocabulary["ids"]:
            add(vocabulary["ids"][name])
    # Quark's tokenizers add no BOS: the GGUF must not make llama.cpp add one either
    writer.add_add_bos_token(bool(config.get("add_bos_token", False)))
    template = config.get("chat_template")
    if not template and (model_dir / "chat_template.jinja").is_file():
        template = (model_dir / "chat_template.jinja").read_text()
    if template:
        writer.add_chat_template(template)
