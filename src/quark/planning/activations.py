"""Activation memory of one training step of a Hugging Face Llama (sdpa attention).

Counted from the tensors autograd saves for backward, term by term (see `activation_bytes`),
and checked against measured peaks in bench/plan_activation_memory.py.
"""

from __future__ import annotations

from quark.models.llama import LlamaShape


def activation_bytes(
    shape: LlamaShape, micro_batch: int, seq_len: int, precision: str, checkpointing: bool
) -> float:
    """Peak bytes of activations for one forward and backward pass of one micro-batch."""
    b, s, h = micro_batch, seq_len, shape.hidden_size
    q_width = shape.num_heads * shape.attention_head_dim
    kv_width = shape.num_kv_heads * shape.attention_head_dim
    i, v = shape.intermediate_size, shape.vocab_size
    full = 4.0  # fp32: the residual stream and RMSNorm always run in fp32
    half = 2.0 if precision in ("bf16-mixed", "16-mixed", "bf16-true") else 4.0
    tokens = b * s
    # Per layer: two RMSNorms (input and normalised output), q/k/v after rotary, attention
    # output and its reshaped copy for o_proj, attention log-sum-exp, MLP gate, SiLU, up, product.
    norms = 2 * 2 * h * full
    attention = (2 * q_width + 2 * kv_width) * half + q_width * half + shape.num_heads * 4.0
    mlp = 4 * i * half
    per_layer = tokens * (norms + attention + mlp)
    # Head: final norm, logits, and the fp32 log-softmax the loss keeps.
    head = tokens * (2 * h * full + v * half + v * 4.0)
    if checkpointing:
        # Only each layer's input is kept; one layer is recomputed at a time during backward.
        return shape.num_layers * tokens * h * full + per_layer + head
    return shape.num_layers * per_layer + head
