"""The preference losses against TRL's own code on the same numbers: DPO's three loss types,
the implicit rewards and metrics it logs, and the reward model's Bradley-Terry loss.

TRL 1.16 computes these inside its trainers' compute-loss methods, so the tests run those
methods on a trainer object holding only what they read, with a model stub that returns the
per-token log-probs (DPO) or rewards (reward model) under test."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from quark.align.losses import bradley_terry_loss, dpo_loss, sequence_logps
from quark.align.modules import DPOObjective, RewardObjective

trl = pytest.importorskip("trl")  # a test-only dependency (the dev extra)

PAIRS, TOKENS = 5, 7


class _Accelerator:
    device = torch.device("cpu")

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    gather_for_metrics = gather


def _numbers(seed: int) -> SimpleNamespace:
    """Per-token log-probs of the policy (chosen rows, then rejected) with answers of
    different lengths, and the reference's summed log-probs."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, TOKENS + 1, (2 * PAIRS,), generator=generator)
    mask = (torch.arange(TOKENS)[None, :] >= TOKENS - lengths[:, None]).long()
    token_logps = -torch.rand(2 * PAIRS, TOKENS, generator=generator, dtype=torch.float64) * 3
    token_logps = token_logps * mask
    reference = token_logps.sum(-1) + torch.randn(2 * PAIRS, generator=generator).double()
    return SimpleNamespace(mask=mask, token_logps=token_logps, reference=reference)


def _trl_dpo(
    numbers: SimpleNamespace, beta: float, loss_type: str, sft_weight: float = 0.0
) -> tuple[float, dict]:
    trainer = trl.DPOTrainer.__new__(trl.DPOTrainer)
    trainer.__dict__.update(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type, *(["sft"] if sft_weight else [])],
        loss_weights=[1.0, *([sft_weight] if sft_weight else [])],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    rows = 2 * PAIRS

    def model(**_: object) -> SimpleNamespace:
        return SimpleNamespace(
            log_probs=numbers.token_logps,
            entropy=torch.zeros(rows, TOKENS),
            mean_logits=torch.zeros(rows, TOKENS),
            is_top1=torch.zeros(rows, TOKENS, dtype=torch.bool),
        )

    # the first column is the prompt's last token: the completion mask is shifted by one
    completion = torch.cat([torch.zeros(rows, 1, dtype=torch.long), numbers.mask], dim=1)
    chosen_ref, rejected_ref = numbers.reference.chunk(2)
    loss = trainer._compute_loss(
        model,
        {
            "input_ids": torch.zeros(rows, TOKENS + 1, dtype=torch.long),
            "attention_mask": torch.ones(rows, TOKENS + 1, dtype=torch.long),
            "completion_mask": completion,
            "ref_chosen_logps": chosen_ref,
            "ref_rejected_logps": rejected_ref,
        },
        return_outputs=False,
    )
    return float(loss), {k: v[-1] for k, v in trainer._metrics["train"].items()}


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("sft_weight", [0.0, 1.0])
def test_dpo_losses_and_rewards_agree_with_trl(
    loss_type: str, beta: float, sft_weight: float
) -> None:
    numbers = _numbers(seed=int(beta * 10) + len(loss_type))
    logps = (numbers.token_logps * numbers.mask).sum(-1)
    tokens = numbers.mask.sum(-1)
    chosen, rejected = logps.chunk(2)
    chosen_tokens, rejected_tokens = tokens.chunk(2)
    reference_chosen, reference_rejected = numbers.reference.chunk(2)
    ours = dpo_loss(
        chosen,
        rejected,
        reference_chosen,
        reference_rejected,
        beta=beta,
        loss_type=loss_type,
        chosen_tokens=chosen_tokens,
        rejected_tokens=rejected_tokens,
        sft_weight=sft_weight,
    )
    theirs, metrics = _trl_dpo(numbers, beta, loss_type, sft_weight)
    assert float(ours.loss) == pytest.approx(theirs, abs=1e-6)
    assert float(ours.loss) > 0
    assert float(ours.chosen_rewards.mean()) == pytest.approx(metrics["rewards/chosen"], abs=1e-6)
    assert float(ours.rejected_rewards.mean()) == pytest.approx(
        metrics["rewards/rejected"], abs=1e-6
    )


def test_dpo_objective_logs_trl_metrics_from_a_model() -> None:
    """DPOObjective on a real (tiny) causal LM: its log-probs, implicit rewards and metric
    names match TRL's on the same precomputed reference log-probs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    ).double()
    ids = torch.randint(3, 50, (2 * PAIRS, TOKENS + 1))
    numbers = _numbers(seed=3)
    labels = ids.masked_fill(
        torch.cat([torch.ones(2 * PAIRS, 1), 1 - numbers.mask], 1).bool(), -100
    )
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "reference_logps": numbers.reference,
    }
    measured = DPOObjective(beta=0.2, loss_type="sigmoid")(model, batch)
    with torch.no_grad():
        logits = model(input_ids=ids[:, :-1]).logits
    token_logps = (
        torch.gather(logits.log_softmax(-1), 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * numbers.mask
    )
    theirs, metrics = _trl_dpo(
        SimpleNamespace(mask=numbers.mask, token_logps=token_logps, reference=numbers.reference),
        0.2,
        "sigmoid",
    )
    assert float(measured["loss"].detach()) == pytest.approx(theirs, abs=1e-6)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert float(measured[name]) == pytest.approx(metrics[name], abs=1e-6), name
    for name in ("logps/chosen", "logps/rejected"):
        assert float(measured[name]) == pytest.approx(metrics[name], abs=1e-6), name


@pytest.mark.parametrize("center", [0.0, 0.01])
def test_bradley_terry_agrees_with_trl_reward_trainer(center: float) -> None:
    generator = torch.Generator().manual_seed(7)
    rewards = torch.randn(2 * PAIRS, 1, generator=generator)
    trainer = trl.RewardTrainer.__new__(trl.RewardTrainer)
    trainer.__dict__.update(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        args=SimpleNamespace(center_rewards_coefficient=center or None),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {"input_ids": torch.zeros(2 * PAIRS, 3), "attention_mask": torch.ones(2 * PAIRS, 3)}
    theirs = trainer.compute_loss(lambda **_: SimpleNamespace(logits=rewards), inputs)
    chosen, rejected = rewards.squeeze(-1).chunk(2)
    assert float(bradley_terry_loss(chosen, rejected, center)) == pytest.approx(
        float(theirs), abs=1e-6
    )
    measured = RewardObjective(center_rewards_coefficient=center)(
        lambda **_: SimpleNamespace(logits=rewards), inputs
    )
    assert float(measured["accuracy"]) == pytest.approx(trainer._metrics["train"]["accuracy"][-1])
    assert float(measured["margin"]) == pytest.approx(trainer._metrics["train"]["margin"][-1])


def test_sequence_logps_sum_only_the_labelled_tokens() -> None:
    logits = torch.zeros(1, 3, 4)  # uniform: every token has log-prob -log 4
    labels = torch.tensor([[-100, 2, 1]])
    logps, tokens = sequence_logps(logits, labels)
    assert tokens.tolist() == [2]
    assert float(logps[0]) == pytest.approx(-2 * torch.log(torch.tensor(4.0)).item())


def test_unknown_loss_type_is_refused() -> None:
    one = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown DPO loss type 'kto'"):
        dpo_loss(
            one, one, one, one, beta=0.1, loss_type="kto", chosen_tokens=one, rejected_tokens=one
        )
