"""Parameter counts and training FLOPs of a Llama model, computed from its shape alone."""

from __future__ import annotations

from dataclasses import dataclass

from quark.models.llama import LlamaShape


@dataclass(frozen=True)
class ParameterCount:
    total: int
    # Vocabulary matrices: the input embedding, plus the output projection when untied.
    embedding: int
    non_embedding: int
    per_layer: int
    # Largest single module's parameters (ZeRO-3 gathers one at a time).
    largest_layer: int


def count_parameters(shape: LlamaShape) -> ParameterCount:
    """Exact parameter count of `LlamaForCausalLM` (no biases) with this shape."""
    h, d = shape.hidden_size, shape.attention_head_dim
    attention = h * shape.num_heads * d * 2 + h * shape.num_kv_heads * d * 2  # q, o and k, v
    mlp = 3 * h * shape.intermediate_size  # gate, up, down
    norms = 2 * h
    per_layer = attention + mlp + norms
    vocab = shape.vocab_size * h
    embedding = vocab if shape.tie_embeddings else 2 * vocab
    total = embedding + shape.num_layers * per_layer + h  # + final norm
    largest = max(vocab, shape.intermediate_size * h, h * shape.num_heads * d)
    return ParameterCount(total, embedding, total - embedding, per_layer, largest)


def training_flops_per_token(shape: LlamaShape, seq_len: int) -> float:
    """Forward + backward FLOPs per token: 6N for the matmul weights plus attention.

    N counts every matrix a token is multiplied by (all but the input embedding lookup, the
    output projection included even when tied). Attention adds 12 * layers * seq_len * (heads *
    head_dim), as in PaLM's MFU accounting (appendix B), which counts the full (non-causal) score
    matrix like nanoGPT and Megatron do.
    """
    counts = count_parameters(shape)
    vocab = shape.vocab_size * shape.hidden_size
    matmul_params = counts.non_embedding + vocab
    attention = 12 * shape.num_layers * seq_len * shape.num_heads * shape.attention_head_dim
    return 6.0 * matmul_params + attention
