"""Activation memory of one training step of a Hugging Face Llama (transformers 5, sdpa
attention, no padding mask), counted term by term from the tensors autograd saves.

On this path transformers calls the fused attention kernel with `enable_gqa=True`: keys and
values keep only the kv heads, and attention saves an fp32 log-sum-exp of shape (b, heads, s),
nothing of size s x s. The loss upcasts logits to fp32 and keeps the fp32 log-softmax output.
Under bf16 autocast the residual stream and RMSNorm stay fp32 and each Linear casts its input to
bf16 separately (autocast caches casts of weights, not of activations), so bf16-mixed saves only
about a quarter less than fp32. With gradient checkpointing (non-reentrant) each layer keeps its
fp32 input, and backward recomputes one layer at a time.

`saved_activation_bytes` equals the bytes recorded by `torch.autograd.graph.saved_tensors_hooks`
exactly (tests/planning/test_activations.py); `activation_bytes` adds what backward allocates on
top (the logits' gradients, a recomputed layer) and is checked against measured peaks in
bench/plan_activation_memory.py. bf16-true and DeepSpeed's 16-bit engines are planned with the
bf16-mixed terms: an estimate, not yet measured.
"""

from __future__ import annotations

from quark.models.llama import LlamaShape


def _fp32_compute(precision: str) -> bool:
    return precision == "32-true"


def layer_bytes(shape: LlamaShape, b: int, s: int, precision: str) -> int:
    """Bytes one decoder layer saves for backward (T = b*s tokens)."""
    t = b * s
    h = shape.hidden_size
    q = shape.num_heads * shape.attention_head_dim
    kv = shape.num_kv_heads * shape.attention_head_dim
    i = shape.intermediate_size
    lse = 4 * t * shape.num_heads  # attention log-sum-exp, fp32
    rsqrt = 2 * 4 * t  # one fp32 scalar per token in each of the two RMSNorms
    if _fp32_compute(precision):
        # Each RMSNorm: its input, the scaled input and the output (shared by the projections
        # that read it). Attention: q, k, v after rotary and its output (also o_proj's input).
        # MLP: gate, up, SiLU(gate) and their product.
        return 4 * t * (6 * h + 2 * q + 2 * kv) + 16 * t * i + lse + rsqrt
    # bf16 autocast: each RMSNorm keeps its input and scaled input in fp32; every Linear saves
    # its own bf16 cast of the norm output (3 for q/k/v, 2 for gate/up); q, k, v, the attention
    # output and the four MLP tensors are bf16.
    return (
        4 * t * (2 * h) * 2
        + 2 * t * (3 * h + 2 * h)
        + 2 * t * (2 * q + 2 * kv)
        + 8 * t * i
        + lse
        + rsqrt
    )


def head_bytes(shape: LlamaShape, b: int, s: int, precision: str) -> int:
    """Saved outside the layers: token ids, final norm, lm_head input, fp32 log-softmax, labels."""
    t = b * s
    h, v = shape.hidden_size, shape.vocab_size
    lm_input = 4 * t * h if _fp32_compute(precision) else 2 * t * h
    labels = 8 * (s + 1) if b == 1 else 8 * t  # the shifted labels keep (1, s+1) when b == 1
    return 8 * t + 8 * t * h + 4 * t + lm_input + 4 * t * v + labels + 4


def rotary_bytes(shape: LlamaShape, s: int) -> int:
    return 2 * s * shape.attention_head_dim * 4  # cos and sin, shared by every layer


def saved_activation_bytes(
    shape: LlamaShape, b: int, s: int, precision: str, checkpointing: bool
) -> int:
    """Bytes autograd holds for backward at the end of the forward pass (weights excluded)."""
    head = head_bytes(shape, b, s, precision)
    if checkpointing:
        return shape.num_layers * 4 * b * s * shape.hidden_size + head
    return shape.num_layers * layer_bytes(shape, b, s, precision) + head + rotary_bytes(shape, s)


def activation_bytes(
    shape: LlamaShape, b: int, s: int, precision: str, checkpointing: bool
) -> float:
    """Peak activation bytes of a step: what forward saved, plus the most backward adds on top.

    Backward of the loss allocates the gradient of the fp32 log-softmax output and of its input
    (8 bytes per token per vocabulary entry) while everything saved is still alive. With
    checkpointing, each layer is recomputed later in backward, after those gradients are freed:
    whichever is larger counts.
    """
    t = b * s
    extra = 8 * t * shape.vocab_size
    if checkpointing:
        extra = max(extra, layer_bytes(shape, b, s, precision) + rotary_bytes(shape, s))
    return float(saved_activation_bytes(shape, b, s, precision, checkpointing) + extra)
