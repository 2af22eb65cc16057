"""Schema of the `align` group: which method step=align trains with, and its knobs. The
options share one schema; a key only one method reads says so in its comment."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

# each method's loss types, the first its default (TRL's names)
LOSS_TYPES: dict[str, tuple[str, ...]] = {
    "dpo": ("sigmoid", "hinge", "ipo"),
    "reward_model": ("bradley_terry",),
    "grpo": ("dapo", "grpo", "dr_grpo"),
    "safety_classifier": ("cross_entropy",),
}
METHODS = tuple(LOSS_TYPES)
REWARD_SCALING = ("group", "batch", "none")


@dataclass
class AlignSchema:
    # dpo: the model against a frozen reference; reward_model: a scalar head; grpo: online RL;
    # safety_classifier: a label head trained on {text, label} records (the guard's classifier)
    name: str = choice("dpo", METHODS)
    # dpo: sigmoid (DPO), hinge (SLiC), ipo (IPO); grpo: dapo, grpo, dr_grpo (how the
    # per-token loss is averaged); reward_model: bradley_terry
    loss_type: str = "sigmoid"
    # dpo: how far the policy may move from the reference (higher: less far); grpo: the
    # weight of the KL penalty to the reference (0: no reference is loaded)
    beta: float = ranged(0.1, ge=0)
    # dpo: weight of the chosen answers' negative log-likelihood added to the loss (RPO)
    sft_weight: float = ranged(0.0, ge=0)
    # dpo: compute the reference's log-probs before training and free the reference model
    precompute_reference: bool = False
    # reward_model: weight of the mean squared reward added to the loss (0: none)
    center_rewards_coefficient: float = ranged(0.0, ge=0)
    # grpo: arithmetic (exact match with the record's answer), reward_model, or module:function
    reward: str = "arithmetic"
    # grpo with reward=reward_model: an align=reward_model run or a reward model directory;
    # null: the newest align run of the experiment holding a reward model
    reward_model_dir: str | None = None
    # grpo: completions sampled per prompt (the group its advantages are relative to)
    num_generations: int = ranged(8, ge=2)
    temperature: float = ranged(1.0, gt=0)
    top_p: float = ranged(1.0, gt=0, le=1)
    # grpo: the ratio to the sampling policy is clipped to [1 - epsilon, 1 + epsilon_high]
    epsilon: float = ranged(0.2, gt=0, lt=1)
    epsilon_high: float | None = ranged(None, gt=0)
    # grpo: advantages divided by the group's standard deviation, the batch's, or not at all
    scale_rewards: str = choice("group", REWARD_SCALING)
    # safety_classifier: the label of safe texts (every other label is an unsafe category)
    benign_label: str = "benign"
    # safety_classifier: a text is flagged when p(not benign) reaches this (the measures')
    threshold: float = ranged(0.5, gt=0, lt=1)
    # safety_classifier: more {text, label} JSONL files to train on (red-team bypasses)
    extra_train: list[str] = field(default_factory=list)

    def check(self) -> None:
        allowed = LOSS_TYPES[self.name]
        if self.loss_type not in allowed:
            raise ConfigError(
                "align.loss_type",
                f"'{self.loss_type}' is not a loss of align={self.name}",
                f"allowed: {', '.join(allowed)}",
            )
        if self.name == "dpo" and self.beta <= 0:
            raise ConfigError("align.beta", f"{self.beta} is out of range for DPO", "allowed: > 0")
