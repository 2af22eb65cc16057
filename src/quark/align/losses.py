"""The preference losses, on per-sequence numbers, as TRL defines them (tests/align checks each
against TRL 1.16 on the same inputs).

DPO (Rafailov et al. 2023) and its variants compare how much more the policy than the frozen
reference prefers the chosen answer: with the log-ratios c = log pi(chosen) - log ref(chosen)
and r = log pi(rejected) - log ref(rejected), summed over the answer's tokens,

    sigmoid (DPO)   -log sigmoid(beta * (c - r))
    hinge (SLiC)    max(0, 1 - beta * (c - r))
    ipo (IPO)       (c / |chosen| - r / |rejected| - 1 / (2 beta))^2   per-token averages

and the implicit rewards beta * c and beta * r. The reward model's loss is Bradley-Terry's:
-log sigmoid(reward(chosen) - reward(rejected)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "hinge", "ipo")


@dataclass(frozen=True)
class PreferenceLoss:
    """The mean loss over a batch of pairs, and each pair's implicit rewards (no gradient)."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
    loss_type: str,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    sft_weight: float = 0.0,
) -> PreferenceLoss:
    """The DPO-family loss of a batch: each argument holds one number per pair (log-probs summed
    over the answer's tokens; `*_tokens` count them, for IPO's per-token averages).
    `sft_weight` adds that many times the chosen answers' mean per-token negative
    log-likelihood (RPO, Pang et al. 2024; TRL's loss_type "sft" with loss_weights): it keeps
    the chosen answers likely while the margin grows."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * delta)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif loss_type == "ipo":
        average = chosen_ratio / chosen_tokens.clamp(
            min=1
        ) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (average - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss type {loss_type!r}; allowed: {', '.join(LOSS_TYPES)}")
    loss = losses.mean()
    if sft_weight:
        loss = loss - sft_weight * policy_chosen.sum() / chosen_tokens.sum().clamp(min=1)
    return PreferenceLoss(loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    center_rewards_coefficient: float = 0.0,
) -> torch.Tensor:
    """The reward model's loss on a batch of pairs' scalar rewards; a positive
    `center_rewards_coefficient` also pulls the rewards towards zero mean (Eisenstein et al.
    2023), as TRL's RewardConfig does."""
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * torch.mean(
            (chosen_rewards + rejected_rewards) ** 2
        )
    return loss


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's log-probability of its labelled tokens, and how many there are: `logits`
    predict position t + 1 from position t (a causal LM's output for input_ids[:, :-1]),
    `labels` are input_ids[:, 1:] with `ignore_index` where no answer token is."""
    mask = labels != ignore_index
    targets = labels.masked_fill(~mask, 0)
    token_logps = torch.gather(logits.float().log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)
