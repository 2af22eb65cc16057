"""GRPO's numbers, as TRL's GRPOTrainer defines them (tests/align checks both against TRL 1.16):
group-normalised advantages, and the clipped policy loss with a KL penalty to the reference.

For each prompt, G completions are sampled and rewarded; a completion's advantage is its reward
minus its group's mean, divided by the group's standard deviation (+1e-4). Per completion
token, with the ratio rho = exp(log pi - log pi_old) of the policy now to the policy that
sampled it,

    loss_t = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) + beta * KL_t
    KL_t   = exp(ref - log pi) - (ref - log pi) - 1            (the k3 estimator)

averaged over the tokens of each completion then over completions (loss_type=grpo), summed
over the batch's tokens and divided by completions x max_completion_length (dr_grpo), or by the
tokens of the batch (dapo, TRL's default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GRPO_LOSS_TYPES = ("dapo", "grpo", "dr_grpo")
REWARD_SCALING = ("group", "batch", "none")


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale_rewards: str = "group"
) -> torch.Tensor:
    """Each completion's reward minus its group's mean (rows of `group_size` consecutive
    completions of one prompt), divided by the group's (or the batch's) standard deviation
    unless `scale_rewards` is none."""
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1).repeat_interleave(group_size)
    advantages = rewards - mean
    if scale_rewards == "group":
        std = grouped.std(dim=1).repeat_interleave(group_size)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)
    elif scale_rewards == "none":
        return advantages
    else:
        raise ValueError(f"unknown reward scaling {scale_rewards!r}; allowed: {REWARD_SCALING}")
    return advantages / (std + 1e-4)


@dataclass(frozen=True)
class GRPOLoss:
    """The loss, and what it is made of for the logs: the mean per-token KL to the reference
    (0 without one) and the shares of completion tokens whose ratio was clipped below, above,
    or either."""

    loss: torch.Tensor
    kl: torch.Tensor
    clip_low: torch.Tensor
    clip_high: torch.Tensor
    clip_region: torch.Tensor


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    reference_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    epsilon_low: float,
    epsilon_high: float,
    loss_type: str,
    max_completion_length: int,
    batch_tokens: torch.Tensor | None = None,
) -> GRPOLoss:
    """The loss of a batch of completions: per-token log-probs under the policy (`logps`, with
    gradient), under the policy that sampled them (`old_logps`) and under the reference, each
    (completions, tokens); `mask` is 1 on completion tokens. `batch_tokens`: dapo's divisor
    (the completion tokens over every rank, divided by the ranks), default this batch's."""
    mask = mask.to(logps.dtype)
    advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    kl = torch.zeros_like(per_token)
    if beta != 0.0:
        if reference_logps is None:
            raise ValueError("a KL penalty (beta != 0) needs the reference's log-probs")
        kl = torch.exp(reference_logps - logps) - (reference_logps - logps) - 1
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * max_completion_length)
    elif loss_type == "dapo":
        divisor = mask.sum() if batch_tokens is None else batch_tokens
        loss = (per_token * mask).sum() / divisor.clamp(min=1.0)
    else:
        raise ValueError(f"unknown GRPO loss type {loss_type!r}; allowed: {GRPO_LOSS_TYPES}")
    low = ((ratio < 1 - epsilon_low) & (advantages < 0)).to(mask.dtype)
    high = ((ratio > 1 + epsilon_high) & (advantages > 0)).to(mask.dtype)

    def token_mean(values: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum().detach() / mask.sum().clamp(min=1.0)

    return GRPOLoss(
        loss,
        token_mean(kl),
        token_mean(low),
        token_mean(high),
        token_mean(torch.maximum(low, high)),
    )
