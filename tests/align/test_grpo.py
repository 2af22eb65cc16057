"""GRPO's loss and advantages against TRL's own code on the same numbers: every loss type,
with and without the KL penalty, with ratios away from 1 so that clipping binds; and the
group-normalised advantages against TRL's formula and its nanstd."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from quark.align.grpo import group_advantages, grpo_loss

trl = pytest.importorskip("trl")  # a test-only dependency (the dev extra)

COMPLETIONS, TOKENS, MAX_LENGTH = 8, 5, 6


class _Accelerator:
    device = torch.device("cpu")
    num_processes = 1
    sync_gradients = True

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    gather_for_metrics = gather

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor


def _numbers(seed: int) -> SimpleNamespace:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, TOKENS + 1, (COMPLETIONS,), generator=generator)
    mask = (torch.arange(TOKENS)[None, :] < lengths[:, None]).long()
    logps = -torch.rand(COMPLETIONS, TOKENS, generator=generator, dtype=torch.float64) * 2
    # the sampling policy differs by up to +-0.5 nats a token: ratios from 0.6 to 1.6
    old = logps + (torch.rand(COMPLETIONS, TOKENS, generator=generator).double() - 0.5)
    reference = logps + (torch.rand(COMPLETIONS, TOKENS, generator=generator).double() - 0.5)
    advantages = torch.randn(COMPLETIONS, generator=generator).double()
    return SimpleNamespace(
        mask=mask, logps=logps, old=old, reference=reference, advantages=advantages
    )


def _trl_loss(numbers: SimpleNamespace, loss_type: str, beta: float) -> tuple[float, dict]:
    trainer = trl.GRPOTrainer.__new__(trl.GRPOTrainer)
    entropies = torch.zeros(COMPLETIONS, TOKENS, dtype=torch.float64)
    trainer.__dict__.update(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=0.2,
        epsilon_high=0.28,
        use_vllm=False,
        current_gradient_accumulation_steps=1,
        max_completion_length=MAX_LENGTH,
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _get_per_token_logps_and_entropies=lambda *a, **k: (numbers.logps, entropies, None),
    )
    inputs = {
        "prompt_ids": torch.zeros(COMPLETIONS, 2, dtype=torch.long),
        "prompt_mask": torch.ones(COMPLETIONS, 2, dtype=torch.long),
        "completion_ids": torch.zeros(COMPLETIONS, TOKENS, dtype=torch.long),
        "completion_mask": numbers.mask,
        "advantages": numbers.advantages,
        "old_per_token_logps": numbers.old,
        "ref_per_token_logps": numbers.reference,
        "num_items_in_batch": numbers.mask.sum(),
    }
    loss = trainer._compute_loss(None, inputs)
    return float(loss), {k: v[-1] for k, v in trainer._metrics["train"].items()}


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_agrees_with_trl(loss_type: str, beta: float) -> None:
    numbers = _numbers(seed=len(loss_type) + int(beta * 100))
    ours = grpo_loss(
        numbers.logps,
        numbers.old,
        numbers.reference,
        numbers.advantages,
        numbers.mask,
        beta=beta,
        epsilon_low=0.2,
        epsilon_high=0.28,
        loss_type=loss_type,
        max_completion_length=MAX_LENGTH,
    )
    theirs, metrics = _trl_loss(numbers, loss_type, beta)
    assert float(ours.loss) == pytest.approx(theirs, abs=1e-6)
    assert float(ours.clip_region) > 0  # the ratios are far enough from 1 for clipping to bind
    for name, value in (
        ("clip_ratio/low_mean", ours.clip_low),
        ("clip_ratio/high_mean", ours.clip_high),
        ("clip_ratio/region_mean", ours.clip_region),
    ):
        assert float(value) == pytest.approx(metrics[name], abs=1e-6), name
    if beta:
        assert float(ours.kl) == pytest.approx(metrics["kl"], abs=1e-6)


def test_gradient_flows_only_through_the_policy_log_probs() -> None:
    numbers = _numbers(seed=11)
    logps = numbers.logps.clone().requires_grad_(True)
    found = grpo_loss(
        logps,
        logps.detach(),
        numbers.reference,
        numbers.advantages,
        numbers.mask,
        beta=0.04,
        epsilon_low=0.2,
        epsilon_high=0.2,
        loss_type="grpo",
        max_completion_length=MAX_LENGTH,
    )
    found.loss.backward()
    assert logps.grad is not None
    assert torch.all(logps.grad[numbers.mask == 0] == 0)  # padding carries no gradient
    assert float(found.clip_region) == 0  # ratio 1: nothing clipped on the first step


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_follow_trl(scale: str) -> None:
    from trl.trainer.utils import nanstd

    group = 4
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.0, 0.0])
    mean = rewards.view(-1, group).mean(dim=1).repeat_interleave(group)
    if scale == "group":
        std = nanstd(rewards.view(-1, group), dim=1).repeat_interleave(group)
    else:
        std = nanstd(rewards).expand_as(rewards)
    expected = rewards - mean
    if scale != "none":
        expected = expected / (std + 1e-4)
    ours = group_advantages(rewards, group, scale)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert torch.all(ours[4:8] == 0)  # a group that all got the same reward teaches nothing
