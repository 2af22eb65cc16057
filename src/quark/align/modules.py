"""The LightningModules of step=align: DPO on a causal LM against a frozen reference and a
reward model (a scalar head), both on preference batches (quark.align.batches); and GRPO,
online RL on prompts with a reward.

All hold the trained Hugging Face model as `self.model`, as CausalLMModule does, so the
checkpoints, resume, the strategies' sharding and the hf/ export are the training core's.
Metric names follow TRL's (rewards/chosen, rewards/margins, ...) under train/ and val/.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import lightning as L
import torch
import torchmetrics
from omegaconf import DictConfig

from quark.align.grpo import group_advantages, grpo_loss
from quark.align.losses import bradley_terry_loss, dpo_loss, sequence_logps
from quark.align.rewards import Reward
from quark.align.rollout import Completions, completion_logps, sample_completions
from quark.core.errors import StepFailed
from quark.data.prompts import PromptRecord
from quark.training.module import adamw_with_schedule, shard_blocks

# logged each step and averaged over the validation pairs
DPO_METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
REWARD_METRICS = ("loss", "accuracy", "margin", "rewards/chosen", "rewards/rejected")


class Objective(Protocol):
    """What a preference module optimizes: the loss and other metrics of a batch of pairs."""

    metric_names: tuple[str, ...]

    def __call__(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]: ...

    def to(self, device: torch.device) -> None: ...


class PreferenceModule(L.LightningModule):
    """`model` trained on preference batches towards `objective` (DPOObjective,
    RewardObjective): the optimizer, FSDP sharding, the non-finite stop, and the objective's
    metrics logged per step and averaged (over pairs, across ranks) per validation."""

    def __init__(self, model: torch.nn.Module, optim: DictConfig, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.objective = objective
        self.val_metrics = torch.nn.ModuleDict(
            {_key(name): torchmetrics.MeanMetric() for name in objective.metric_names}
        )

    def _metric(self, name: str) -> torchmetrics.MeanMetric:
        return cast(torchmetrics.MeanMetric, self.val_metrics[_key(name)])

    def configure_model(self) -> None:
        shard_blocks(self.model, self.device_mesh)

    def configure_optimizers(self) -> Any:
        return adamw_with_schedule(self.model, self.optim, int(self.trainer.max_steps))

    def on_fit_start(self) -> None:
        self.objective.to(self.device)

    def on_validation_start(self) -> None:
        self.objective.to(self.device)  # trainer.validate after fit, and on its own

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        measured = self.objective(self.model, batch)
        loss = measured["loss"]
        if not torch.isfinite(loss):
            # the last checkpoint on disk is the last good one: stop before stepping on it
            raise StepFailed(
                f"training loss is not finite ({loss.item()}) at step {self.global_step}; "
                "the last good checkpoint is kept"
            )
        for name, value in measured.items():
            self.log(f"train/{name}", value.detach().float(), prog_bar=name == "loss")
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # a batch holds two rows (chosen, rejected) per pair; a classifier's, one per text
        samples = batch["input_ids"].size(0) // getattr(self.objective, "rows_per_sample", 2)
        for name, value in self.objective(self.model, batch).items():
            self._metric(name).update(value.detach().float(), weight=samples)

    def on_validation_epoch_end(self) -> None:
        for name in self.objective.metric_names:
            metric = self._metric(name)
            if int(metric.update_count) == 0:
                return
            self.log(f"val/{name}", metric.compute(), prog_bar=name == "loss")
            metric.reset()


class DPOObjective:
    """DPO and its variants (quark.align.losses.dpo_loss) on a causal LM. The reference's
    log-probs come with the batch (`reference_logps`, computed before training) or from
    `reference`, a frozen model kept out of the module, so out of the checkpoints and of DDP
    (it is the starting model, loaded again on resume)."""

    metric_names: tuple[str, ...] = DPO_METRICS

    def __init__(
        self,
        *,
        beta: float,
        loss_type: str,
        reference: torch.nn.Module | None = None,
        sft_weight: float = 0.0,
    ) -> None:
        self.beta = beta
        self.loss_type = loss_type
        self.sft_weight = sft_weight
        self.reference = reference.eval().requires_grad_(False) if reference is not None else None

    def to(self, device: torch.device) -> None:
        if self.reference is not None:
            self.reference.to(device)

    def __call__(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        inputs, mask = batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1]
        labels = batch["labels"][:, 1:]
        logps, tokens = sequence_logps(model(input_ids=inputs, attention_mask=mask).logits, labels)
        if "reference_logps" in batch:
            reference_logps = batch["reference_logps"]
        else:
            assert self.reference is not None, "no reference model and no reference_logps"
            with torch.no_grad():
                logits = self.reference(input_ids=inputs, attention_mask=mask).logits
                reference_logps, _ = sequence_logps(logits, labels)
        chosen, rejected = logps.chunk(2)
        reference_chosen, reference_rejected = reference_logps.chunk(2)
        chosen_tokens, rejected_tokens = tokens.chunk(2)
        found = dpo_loss(
            chosen,
            rejected,
            reference_chosen,
            reference_rejected,
            beta=self.beta,
            loss_type=self.loss_type,
            chosen_tokens=chosen_tokens,
            rejected_tokens=rejected_tokens,
            sft_weight=self.sft_weight,
        )
        margins = found.chosen_rewards - found.rejected_rewards
        return {
            "loss": found.loss,
            "rewards/chosen": found.chosen_rewards.mean(),
            "rewards/rejected": found.rejected_rewards.mean(),
            "rewards/margins": margins.mean(),
            "rewards/accuracies": (margins > 0).float().mean(),
            "logps/chosen": chosen.detach().mean(),
            "logps/rejected": rejected.detach().mean(),
        }


class RewardObjective:
    """A reward model's: the model maps a whole conversation to one number (a sequence
    classifier with one label, read at the last token), trained so that chosen answers score
    above rejected ones (Bradley-Terry). `accuracy` is the pairwise accuracy."""

    metric_names: tuple[str, ...] = REWARD_METRICS

    def __init__(self, *, center_rewards_coefficient: float) -> None:
        self.center_rewards_coefficient = center_rewards_coefficient

    def to(self, device: torch.device) -> None:
        pass  # nothing besides the model

    def __call__(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        rewards = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits.squeeze(-1)
        chosen, rejected = rewards.float().chunk(2)
        margins = (chosen - rejected).detach()
        return {
            "loss": bradley_terry_loss(chosen, rejected, self.center_rewards_coefficient),
            "accuracy": (margins > 0).float().mean(),
            "margin": margins.mean(),
            "rewards/chosen": chosen.detach().mean(),
            "rewards/rejected": rejected.detach().mean(),
        }


def measure(
    model: torch.nn.Module,
    objective: Objective,
    samples: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    batch_size: int,
) -> dict[str, float]:
    """The objective's metrics over `samples` averaged per pair, without gradients, on the CPU
    (a model before training, or its export after)."""
    totals: dict[str, float] = {}
    pairs = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            chunk = list(samples[start : start + batch_size])
            for name, value in objective(model, collate(chunk)).items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(chunk)
            pairs += len(chunk)
    model.train(was_training)
    return {name: total / pairs for name, total in totals.items()}


def _key(name: str) -> str:
    return name.replace("/", "_")  # ModuleDict keys cannot hold dots or slashes


@dataclass(frozen=True)
class PromptSample:
    """One prompt to sample for: its record (the fields the reward reads) and its token ids,
    rendered with the chat template up to the assistant's turn."""

    record: PromptRecord
    prompt_ids: list[int]


@dataclass(frozen=True)
class GRPOSettings:
    """align=grpo's knobs (conf/align/grpo.yaml), and the seed the sampling derives from."""

    num_generations: int
    max_new_tokens: int
    temperature: float
    top_p: float
    beta: float
    epsilon_low: float
    epsilon_high: float
    loss_type: str
    scale_rewards: str
    seed: int


GRPO_METRICS = ("reward", "accuracy", "completions/mean_length", "completions/finished")


class GRPOModule(L.LightningModule):
    """Online RL with group-relative advantages (quark.align.grpo) on a causal LM: each
    training step samples `num_generations` completions per prompt of its batch from the
    policy, rewards them, and takes one step on the clipped loss with a KL penalty to the
    frozen `reference` (not a submodule: it is the starting model, loaded again on resume).
    The sampling is seeded by (seed, step, rank), so a resumed run samples as the
    interrupted one would have. Validation answers each prompt greedily and logs the mean
    reward (val/reward) and the share of completions with reward 1 (val/accuracy)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optim: DictConfig,
        *,
        settings: GRPOSettings,
        reward: Reward,
        reference: torch.nn.Module | None,
        tokenizer: Any,
        stop_ids: list[int],
        pad_id: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.settings = settings
        self.reward = reward
        # in a tuple, not an attribute: a submodule would be saved in every checkpoint
        self.frozen: tuple[torch.nn.Module, ...] = (
            (reference.eval().requires_grad_(False),) if reference is not None else ()
        )
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.pad_id = pad_id
        self.val_metrics = torch.nn.ModuleDict(
            {_key(name): torchmetrics.MeanMetric() for name in GRPO_METRICS}
        )

    def configure_model(self) -> None:
        shard_blocks(self.model, self.device_mesh)

    def configure_optimizers(self) -> Any:
        return adamw_with_schedule(self.model, self.optim, int(self.trainer.max_steps))

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        return batch  # prompts: the completions sampled from them go to the device

    def on_fit_start(self) -> None:
        self._to_device()

    def on_validation_start(self) -> None:
        self._to_device()

    def _to_device(self) -> None:
        for reference in self.frozen:
            reference.to(self.device)
        self.reward.to(self.device)

    def _complete(self, samples: list[PromptSample], sample: bool, seed: int = 0) -> Completions:
        return sample_completions(
            self.model,
            self.tokenizer,
            [s.prompt_ids for s in samples],
            max_new_tokens=self.settings.max_new_tokens,
            stop_ids=self.stop_ids,
            pad_id=self.pad_id,
            sample=sample,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            seed=seed,
            synced=self.trainer.world_size > 1,
        )

    def training_step(self, batch: list[PromptSample], batch_idx: int) -> torch.Tensor:
        group = self.settings.num_generations
        expanded = [s for s in batch for _ in range(group)]  # a prompt's group is consecutive
        seed = (self.settings.seed * 1_000_003 + self.global_step) * 1009 + self.global_rank
        completions = self._complete(expanded, sample=True, seed=seed)
        rewards = self.reward([s.record for s in expanded], completions.texts).to(self.device)
        advantages = group_advantages(rewards, group, self.settings.scale_rewards)
        mask = completions.completion_mask.to(self.device)
        temperature = self.settings.temperature
        logps = completion_logps(self.model, completions, temperature)
        reference_logps = None
        if self.settings.beta != 0.0:
            with torch.no_grad():
                reference_logps = completion_logps(self.frozen[0], completions, temperature)
        # dapo divides by the completion tokens of the whole step, over every rank
        gathered = cast(torch.Tensor, self.all_gather(mask.sum()))
        batch_tokens = gathered.sum() / self.trainer.world_size
        found = grpo_loss(
            logps,
            logps.detach(),  # one step per sampling: the sampling policy is this one
            reference_logps,
            advantages,
            mask,
            beta=self.settings.beta,
            epsilon_low=self.settings.epsilon_low,
            epsilon_high=self.settings.epsilon_high,
            loss_type=self.settings.loss_type,
            max_completion_length=self.settings.max_new_tokens,
            batch_tokens=batch_tokens,
        )
        if not torch.isfinite(found.loss):
            raise StepFailed(
                f"training loss is not finite ({found.loss.item()}) at step {self.global_step}; "
                "the last good checkpoint is kept"
            )
        logged = {
            "loss": found.loss.detach(),
            "reward": rewards.mean(),
            "reward_std": rewards.view(-1, group).std(dim=1).mean(),
            "accuracy": (rewards == 1).float().mean(),
            "kl": found.kl,
            "completions/mean_length": completions.lengths.float().mean(),
            "completions/finished": torch.tensor(completions.finished).float().mean(),
            "clip_ratio/low_mean": found.clip_low,
            "clip_ratio/high_mean": found.clip_high,
            "clip_ratio/region_mean": found.clip_region,
        }
        for name, value in logged.items():
            self.log(f"train/{name}", value.float(), prog_bar=name in ("loss", "reward"))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return found.loss

    def validation_step(self, batch: list[PromptSample], batch_idx: int) -> None:
        completions = self._complete(batch, sample=False)
        rewards = self.reward([s.record for s in batch], completions.texts)
        measured = {
            "reward": rewards.mean(),
            "accuracy": (rewards == 1).float().mean(),
            "completions/mean_length": completions.lengths.float().mean(),
            "completions/finished": torch.tensor(completions.finished).float().mean(),
        }
        for name, value in measured.items():
            metric = cast(torchmetrics.MeanMetric, self.val_metrics[_key(name)])
            metric.update(value.to(self.device), weight=len(batch))

    def on_validation_epoch_end(self) -> None:
        for name in GRPO_METRICS:
            metric = cast(torchmetrics.MeanMetric, self.val_metrics[_key(name)])
            if int(metric.update_count) == 0:
                return
            self.log(f"val/{name}", metric.compute(), prog_bar=name == "reward")
            metric.reset()
