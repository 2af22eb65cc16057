"""Step 5, align: preference tuning of a fine-tuned model, on the training core.

    python launch.py step=data data=arithmetic_prefs && python launch.py step=align        # DPO
    python launch.py step=align align=dpo align.loss_type=ipo align.beta=0.5
    python launch.py step=align align=reward_model
    python launch.py step=align step.init_from=path/to/hf_model step.data_dir=my_prefs/
    python launch.py pipeline=align                       # from nothing to an aligned model
    python launch.py step=align align=safety_classifier   # the safety guard's classifier

Reads preference pairs ({prompt, chosen, rejected}: train.jsonl, val.jsonl of a data run or
any directory) and the starting model (a finetune run's hf/ by default, or any Hugging Face
model directory), and trains with the `align` group's method:

    dpo            the model itself, against a frozen reference (the starting model, or
                   step.reference), with DPO's sigmoid loss, IPO or hinge; hf/ is the
                   aligned causal LM, checked by the exact match of its greedy answers
                   against the chosen ones before and after
    reward_model   a scalar head on the model, Bradley-Terry on chosen vs rejected; the
                   reward model goes to reward_model/ (AutoModelForSequenceClassification),
                   checked by its pairwise accuracy before and after
    grpo           the model samples answers to prompts, rewarded (a verifier, a reward
                   model, a Python function); hf/ is the trained causal LM
    safety_classifier  a label head on the model, cross-entropy on {text, label} records
                   (data=safety_requests); classifier/ is what safety=classifier loads,
                   checked by accuracy, unsafe recall and false positives on held-out
                   templates before and after

All use the trainer layouts, loggers, checkpoints, exact resume and divergence stop of
pretrain and finetune (quark.training.trainer.fit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.console import print_run_summary
from quark.core.errors import ConfigError
from quark.core.run import Run
from quark.data.labelled import holds_labelled
from quark.data.preferences import holds_preferences
from quark.data.prompts import holds_prompts
from quark.data.records import check_records
from quark.lineage.finding import find_run, missing
from quark.lineage.model_files import check_classifier, check_weights
from quark.lineage.models import ModelLocation, chat_template_of, locate_model
from quark.models.hf import check_seq_len

INIT_FROM_ALLOWED = (
    "give a finetune or align run directory, or a Hugging Face model directory "
    "(config.json, weights, tokenizer)"
)
REFERENCE_ALLOWED = (
    "give a finetune or align run directory or a Hugging Face model directory trained with the "
    "same tokenizer (null: the starting model)"
)
PREFERENCES_ALLOWED = (
    "make one with: python launch.py step=data data=arithmetic_prefs, or give a directory "
    "holding train.jsonl and val.jsonl of prompt/chosen/rejected records"
)
PROMPTS_ALLOWED = (
    "make one with: python launch.py step=data data=arithmetic_sft, or give a directory "
    "holding train.jsonl and val.jsonl of records with a prompt and the fields the reward reads"
)
LABELLED_ALLOWED = (
    "make one with: python launch.py step=data data=safety_requests, or give a directory "
    "holding train.jsonl and val.jsonl of text/label records"
)
EXTRA_TRAIN_ALLOWED = (
    "give JSONL files of {text, label} records, e.g. an evaluate run's red_team/bypasses.jsonl"
)
# the splits every method trains and validates on
SPLITS = ("train.jsonl", "val.jsonl")
REWARD_MODEL_ALLOWED = (
    "train one with: python launch.py step=align align=reward_model, or give its run directory "
    "or a directory AutoModelForSequenceClassification loads"
)
# strategies whose ranks hold shards of the policy: a whole reference beside it would not fit
# where they are needed, so its log-probs are computed before training
SHARDED = ("fsdp", "deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3")


@dataclass(frozen=True)
class AlignInputs:
    """What alignment reads: the starting model, DPO's reference model, the preference pairs,
    and the chat template the conversations are rendered with."""

    model: ModelLocation
    reference: ModelLocation
    data_dir: Path
    chat_template: str
    reward_model_dir: Path | None = None
    extra: tuple[Path, ...] = ()  # safety_classifier: more labelled training files

    def recorded(self) -> dict[str, Path]:
        found = {"model": self.model.source, "data": self.data_dir}
        if self.reference.directory != self.model.directory:
            found["reference"] = self.reference.source
        if self.reward_model_dir is not None:
            found["reward_model"] = self.reward_model_dir
        found |= {f"extra_train_{i}": path for i, path in enumerate(self.extra)}
        return found


def inputs(cfg: DictConfig) -> AlignInputs:
    """The starting model (step.init_from, else the finetune run a pipeline handed over, else
    the newest completed finetune run), the reference (step.reference, else the starting
    model) and the pairs (step.data_dir, else the data run handed over, else the newest
    completed data run of preference pairs)."""
    step = cfg.step
    # a classifier needs no chat: a pretrained model is a start as good
    classifier = cfg.align.name == "safety_classifier"
    source = find_run(
        cfg, ("finetune", "pretrain") if classifier else ("finetune",), key="step.init_from",
        handed_steps=("align", "finetune", "pretrain") if classifier else ("align", "finetune"),
        allowed=INIT_FROM_ALLOWED,
    )  # fmt: skip
    if source is None:
        raise missing(
            cfg,
            "step.init_from",
            "finetune run",
            "make one with: python launch.py pipeline=quickstart_sft, or " + INIT_FROM_ALLOWED,
        )
    model = locate_model(source, "step.init_from", INIT_FROM_ALLOWED)
    check_weights(model.directory, "step.init_from", INIT_FROM_ALLOWED)
    check_seq_len(int(step.seq_len), model.positions or int(step.seq_len))
    reference = model
    if step.reference:
        reference = locate_model(Path(str(step.reference)), "step.reference", REFERENCE_ALLOWED)
        check_weights(reference.directory, "step.reference", REFERENCE_ALLOWED)
    if classifier:
        return AlignInputs(model, reference, _labelled_dir(cfg), "", extra=_extra_train(cfg))
    template = str(step.chat_template) if step.chat_template else chat_template_of(model.directory)
    if template is None:
        raise ConfigError(
            "step.chat_template",
            f"is null and the tokenizer in {model.directory} has no chat template",
            "start from a finetune run (its tokenizer carries the template), or set "
            "step.chat_template",
        )
    _check_method(cfg)
    if cfg.align.name == "grpo":
        return AlignInputs(model, reference, _prompts_dir(cfg), template, _reward_model_dir(cfg))
    data_dir = find_run(
        cfg, ("data",), key="step.data_dir", holds=holds_preferences, allowed=PREFERENCES_ALLOWED
    )
    if data_dir is None:
        raise missing(cfg, "step.data_dir", "data run of preference pairs", PREFERENCES_ALLOWED)
    if not holds_preferences(data_dir):
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} holds no preference splits (train.jsonl, val.jsonl with prompt, "
            "chosen and rejected)",
            PREFERENCES_ALLOWED,
        )
    check_records(data_dir, SPLITS, "step.data_dir", PREFERENCES_ALLOWED)
    return AlignInputs(model, reference, data_dir, template)


def _labelled_dir(cfg: DictConfig) -> Path:
    """The classifier's labelled texts: step.data_dir, else the data run handed over, else the
    newest data run holding them (data=safety_requests)."""
    data_dir = find_run(
        cfg, ("data",), key="step.data_dir", holds=holds_labelled, allowed=LABELLED_ALLOWED
    )
    if data_dir is None:
        raise missing(cfg, "step.data_dir", "data run of labelled texts", LABELLED_ALLOWED)
    if not holds_labelled(data_dir):
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} holds no labelled splits (train.jsonl, val.jsonl with text and label)",
            LABELLED_ALLOWED,
        )
    check_records(data_dir, SPLITS, "step.data_dir", LABELLED_ALLOWED)
    return data_dir


def _extra_train(cfg: DictConfig) -> tuple[Path, ...]:
    """align.extra_train: labelled files added to the training split (the bypasses an
    adaptive red-team run found, say), each of which must exist."""
    found = []
    for index, name in enumerate(cfg.align.extra_train or []):
        path = Path(str(name)).expanduser()
        key = f"align.extra_train.{index}"
        if not path.is_file():
            raise ConfigError(key, f"{path} is not a file", EXTRA_TRAIN_ALLOWED)
        check_records(path.parent, (path.name,), key, EXTRA_TRAIN_ALLOWED)
        found.append(path)
    return tuple(found)


def _prompts_dir(cfg: DictConfig) -> Path:
    """GRPO's prompts: step.data_dir, else the data run handed over, else the newest data run
    holding prompt splits (every generated task set does)."""
    data_dir = find_run(
        cfg, ("data",), key="step.data_dir", holds=holds_prompts, allowed=PROMPTS_ALLOWED
    )
    if data_dir is None:
        raise missing(cfg, "step.data_dir", "data run of prompts", PROMPTS_ALLOWED)
    if not holds_prompts(data_dir):
        raise ConfigError(
            "step.data_dir",
            f"{data_dir} holds no prompt splits (train.jsonl, val.jsonl with a prompt field)",
            PROMPTS_ALLOWED,
        )
    check_records(data_dir, SPLITS, "step.data_dir", PROMPTS_ALLOWED)
    return data_dir


def _reward_model_dir(cfg: DictConfig) -> Path | None:
    """With align.reward=reward_model: align.reward_model_dir (a run's reward_model/ or a
    directory), else the newest align run holding a reward model."""
    if str(cfg.align.reward) != "reward_model":
        return None
    source = find_run(
        cfg, ("align",), key="align.reward_model_dir",
        holds=lambda run: (run / "reward_model").is_dir(), allowed=REWARD_MODEL_ALLOWED,
    )  # fmt: skip
    if source is None:
        raise missing(cfg, "align.reward_model_dir", "align=reward_model run", REWARD_MODEL_ALLOWED)
    directory = source / "reward_model" if (source / "reward_model").is_dir() else source
    check_classifier(directory, "align.reward_model_dir", REWARD_MODEL_ALLOWED, "reward model")
    return directory


def _check_method(cfg: DictConfig) -> None:
    method, strategy = str(cfg.align.name), str(cfg.trainer.strategy)
    if method == "grpo" and str(cfg.align.reward) != "reward_model":
        from quark.align.rewards import load_reward

        load_reward(str(cfg.align.reward), None)  # an unknown name or a callable not importable
    if method == "dpo" and strategy in SHARDED and not bool(cfg.align.precompute_reference):
        raise ConfigError(
            "align.precompute_reference",
            f"false keeps a whole reference model beside the policy, which trainer.strategy "
            f"'{strategy}' shards",
            "set align.precompute_reference=true, or use trainer=cpu, gpu or ddp",
        )


def run(cfg: DictConfig, run: Run, inputs: AlignInputs) -> dict[str, float]:
    from quark.training.strategies import check_layout
    from quark.training.trainer import quiet_libraries

    quiet_libraries()
    check_layout(cfg)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    recipes = {
        "dpo": _dpo,
        "reward_model": _reward_model,
        "grpo": _grpo,
        "safety_classifier": _safety_classifier,
    }
    metrics = recipes[str(cfg.align.name)](cfg, run, inputs)
    if metrics:
        print_run_summary(
            f"Align ({cfg.align.name})",
            metrics,
            {
                "hf export": run.dir / "hf",
                "reward model": run.dir / "reward_model",
                "safety classifier": run.dir / "classifier",
                "answers": run.dir / "val_answers.jsonl",
                "checkpoint": run.dir / "checkpoints" / "last.ckpt",
            },
        )
    return metrics


def _dpo(cfg: DictConfig, run: Run, inputs: AlignInputs) -> dict[str, float]:
    import lightning as L
    import torch
    from transformers import AutoModelForCausalLM

    from quark.align.batches import (
        check_preference_lengths,
        collate_preferences,
        encode_preferences,
        with_reference_logps,
    )
    from quark.align.modules import DPOObjective, PreferenceModule
    from quark.core.run import process_rank
    from quark.training.sft import load_chat_model

    step, method = cfg.step, cfg.align
    # where the reference's log-probs are computed ahead
    device = "cuda" if cfg.trainer.accelerator == "gpu" else "cpu"

    # 1. The starting model (the policy) with its chat tokenizer, and the frozen reference.
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    chat = load_chat_model(
        inputs.model.directory, inputs.model.directory, inputs.chat_template, str(step.stop_token)
    )
    model, tokenizer = chat.model, chat.tokenizer
    if inputs.reference.directory != inputs.model.directory:
        _check_same_tokenizer(tokenizer, inputs.reference.directory)
    reference: Any = AutoModelForCausalLM.from_pretrained(
        str(inputs.reference.directory), dtype=torch.float32
    )

    # 2. The pairs, each answer as token ids with labels on the answer only; never cut.
    train_prefs, val_prefs = _read_splits(cfg, inputs.data_dir)
    train = encode_preferences(tokenizer, train_prefs)
    val = encode_preferences(tokenizer, val_prefs)
    check_preference_lengths(train, int(step.seq_len), "train")
    check_preference_lengths(val, int(step.seq_len), "val")
    if bool(method.precompute_reference):
        # the reference's log-probs once, then no reference in memory while training
        batch = int(step.eval_batch_size)
        train = with_reference_logps(train, reference, chat.pad_id, batch, device)
        val = with_reference_logps(val, reference, chat.pad_id, batch, device)
        reference = None

    # 3. Exact match of the greedy answer against the chosen one, before training.
    eval_prefs = val_prefs[: int(step.eval_samples)]
    conversations = [p.conversation for p in eval_prefs]
    references = [p.chosen for p in eval_prefs]
    accuracy = _answer_check(cfg, tokenizer, conversations, references, chat.stop_ids)
    before, answers_before = accuracy(model) if process_rank() == 0 else (0.0, [])

    # 4. DPO: the policy against the reference, on the training core.
    model.train()  # from_pretrained gives eval mode, and Lightning keeps each module's mode
    objective = DPOObjective(
        beta=float(method.beta),
        loss_type=str(method.loss_type),
        reference=reference,
        sft_weight=float(method.sft_weight),
    )
    module = PreferenceModule(model, step.optim, objective)
    collate = collate_preferences(chat.pad_id)
    fitted = _fit(cfg, run, module, train, val, collate, tokens_per_sample=_pair_tokens(train))
    if not fitted.trainer.is_global_zero:
        return {}  # rank 0 exports and records

    # 5. hf/: the aligned model, rebuilt from the checkpoint, reloaded and asked again.
    exported, aligned = _export_policy(run, fitted, chat, val[0].chosen.input_ids)
    after, answers_after = accuracy(aligned)
    _write_answers(run, conversations, references, answers_before, answers_after)
    validation = fitted.validation
    return {
        "val_accuracy_before": before,
        "val_accuracy": after,
        "val_loss": float(validation["val/loss"]),
        "val_reward_accuracy": float(validation["val/rewards/accuracies"]),
        "val_reward_margin": float(validation["val/rewards/margins"]),
        "train_loss": fitted.train_loss,
        "steps": float(fitted.trainer.global_step),
        "train_seconds": fitted.seconds,
        **exported,
    }


def _reward_model(cfg: DictConfig, run: Run, inputs: AlignInputs) -> dict[str, float]:
    import lightning as L
    import torch
    from transformers import AutoModelForSequenceClassification

    from quark.align.batches import (
        check_preference_lengths,
        collate_preferences,
        encode_preferences,
    )
    from quark.align.modules import PreferenceModule, RewardObjective, measure
    from quark.training.export import export_checkpoint
    from quark.training.sft import load_chat_tokenizer

    step, method = cfg.step, cfg.align

    # 1. The starting model with a one-number head, read at the last token before padding.
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    tokenizer, stop_id = load_chat_tokenizer(
        inputs.model.directory, inputs.chat_template, str(step.stop_token)
    )
    # padding must be a token no conversation holds: the head reads the last non-pad token
    pad_id = next(
        i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, stop_id) if i is not None
    )
    model = _with_new_head(inputs.model.directory, num_labels=1)
    model.config.pad_token_id = pad_id

    # 2. The pairs, as whole conversations (the head scores the answer in its context).
    train_prefs, val_prefs = _read_splits(cfg, inputs.data_dir)
    train = encode_preferences(tokenizer, train_prefs)
    val = encode_preferences(tokenizer, val_prefs)
    check_preference_lengths(train, int(step.seq_len), "train")
    check_preference_lengths(val, int(step.seq_len), "val")
    objective = RewardObjective(center_rewards_coefficient=float(method.center_rewards_coefficient))
    collate = collate_preferences(pad_id)
    batch_size = int(step.eval_batch_size)
    before = measure(model, objective, val[: int(step.val_samples)], collate, batch_size)

    # 3. Bradley-Terry on chosen vs rejected, on the training core.
    model.train()
    module = PreferenceModule(model, step.optim, objective)
    fitted = _fit(cfg, run, module, train, val, collate, tokens_per_sample=_pair_tokens(train))
    if not fitted.trainer.is_global_zero:
        return {}

    # 4. reward_model/: what AutoModelForSequenceClassification loads, checked again.
    reward_dir = run.dir / "reward_model"
    sample = torch.tensor([val[0].chosen.input_ids])
    exported = export_checkpoint(
        fitted.last_checkpoint,
        model.config,
        reward_dir,
        tokenizer,
        sample,
        model_class=AutoModelForSequenceClassification,
    )
    reloaded = AutoModelForSequenceClassification.from_pretrained(reward_dir)
    after = measure(reloaded, objective, val[: int(step.val_samples)], collate, batch_size)
    run.add_output("reward_model")
    return {
        "val_accuracy_before": before["accuracy"],
        "val_accuracy": after["accuracy"],
        "val_margin": after["margin"],
        "val_loss": after["loss"],
        "train_loss": fitted.train_loss,
        "steps": float(fitted.trainer.global_step),
        "train_seconds": fitted.seconds,
        **exported,
    }


def _grpo(cfg: DictConfig, run: Run, inputs: AlignInputs) -> dict[str, float]:
    import lightning as L
    import torch
    from transformers import AutoModelForCausalLM

    from quark.align.modules import GRPOModule, GRPOSettings
    from quark.align.rewards import load_reward
    from quark.core.run import process_rank
    from quark.data.prompts import read_prompts
    from quark.training.sft import load_chat_model

    step, method = cfg.step, cfg.align

    # 1. The reward, the starting model (the policy) with its chat tokenizer, and the frozen
    # reference the KL penalty is measured against (none when beta is 0).
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    reward = load_reward(str(method.reward), inputs.reward_model_dir)
    chat = load_chat_model(
        inputs.model.directory, inputs.model.directory, inputs.chat_template, str(step.stop_token)
    )
    model, tokenizer = chat.model, chat.tokenizer
    reference = None
    if float(method.beta) != 0.0:
        if inputs.reference.directory != inputs.model.directory:
            _check_same_tokenizer(tokenizer, inputs.reference.directory)
        reference = AutoModelForCausalLM.from_pretrained(
            str(inputs.reference.directory), dtype=torch.float32
        )

    # 2. The prompts, rendered up to the assistant's turn, with the fields the reward reads.
    system_prompt = str(step.system_prompt) if step.system_prompt else None
    splits = [
        read_prompts(
            inputs.data_dir / f"{split}.jsonl",
            key="step.data_dir",
            allowed=PROMPTS_ALLOWED,
            needs=reward.needs,
            system_prompt=system_prompt,
        )
        for split in ("train", "val")
    ]
    train, val = (_prompt_samples(tokenizer, records) for records in splits)
    _check_prompt_lengths(train + val, int(step.seq_len), int(step.max_new_tokens))

    # 3. Exact match of the greedy answer against the record's answer, before training.
    eval_samples = [s for s in val if s.record.reference is not None][: int(step.eval_samples)]
    conversations = [s.record.conversation for s in eval_samples]
    references = [str(s.record.reference) for s in eval_samples]
    accuracy = _answer_check(cfg, tokenizer, conversations, references, chat.stop_ids)
    before, answers_before = accuracy(model) if process_rank() == 0 else (0.0, [])

    # 4. GRPO on the training core: each step samples, rewards, and steps once.
    model.train()
    settings = GRPOSettings(
        num_generations=int(method.num_generations),
        max_new_tokens=int(step.max_new_tokens),
        temperature=float(method.temperature),
        top_p=float(method.top_p),
        beta=float(method.beta),
        epsilon_low=float(method.epsilon),
        epsilon_high=float(method.epsilon_high or method.epsilon),
        loss_type=str(method.loss_type),
        scale_rewards=str(method.scale_rewards),
        seed=int(cfg.seed),
    )
    module = GRPOModule(
        model,
        step.optim,
        settings=settings,
        reward=reward,
        reference=reference,
        tokenizer=tokenizer,
        stop_ids=chat.stop_ids,
        pad_id=chat.pad_id,
    )
    prompt_tokens = sum(len(s.prompt_ids) for s in train) / len(train)
    per_step = (prompt_tokens + settings.max_new_tokens) * settings.num_generations
    fitted = _fit(cfg, run, module, train, val, list, tokens_per_sample=round(per_step))
    if not fitted.trainer.is_global_zero:
        return {}

    # 5. hf/: the trained policy, rebuilt from the checkpoint, reloaded and asked again.
    exported, trained = _export_policy(run, fitted, chat, val[0].prompt_ids)
    after, answers_after = accuracy(trained)
    if eval_samples:
        _write_answers(run, conversations, references, answers_before, answers_after)
    validation = fitted.validation
    accuracies = {"val_accuracy_before": before, "val_accuracy": after} if eval_samples else {}
    return {
        **accuracies,
        "val_reward": float(validation["val/reward"]),
        "steps": float(fitted.trainer.global_step),
        "train_seconds": fitted.seconds,
        **exported,
    }


def _safety_classifier(cfg: DictConfig, run: Run, inputs: AlignInputs) -> dict[str, float]:
    from functools import partial

    import lightning as L
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from quark.align.modules import PreferenceModule
    from quark.data.labelled import read_labelled
    from quark.safety.classifier import (
        ClassifierObjective,
        classifier_metrics,
        collate_texts,
        encode_labelled,
    )
    from quark.training.export import export_checkpoint
    from quark.training.sft import check_lengths

    step, method = cfg.step, cfg.align

    # 1. The labelled texts: train (with align.extra_train), val, and test when there is one
    # (data=safety_requests: templates never trained on).
    def read(path: Path, key: str) -> list[Any]:
        return read_labelled(path, key=key, allowed=LABELLED_ALLOWED)

    sources = {
        split: inputs.data_dir / f"{split}.jsonl"
        for split in ("train", "val", "test")
        if split != "test" or (inputs.data_dir / "test.jsonl").is_file()
    }
    splits = {split: read(path, "step.data_dir") for split, path in sources.items()}
    extra = [read(path, f"align.extra_train.{i}") for i, path in enumerate(inputs.extra)]
    labels = _classifier_labels(
        {**splits, "train": splits["train"] + [t for texts in extra for t in texts]},
        str(method.benign_label),
        inputs.data_dir,
    )

    # 2. The starting model with a head of one logit per label, read at the last token.
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(str(inputs.model.directory))
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    model = _with_new_head(
        inputs.model.directory,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model.config.pad_token_id = pad_id
    label_ids = {label: i for i, label in enumerate(labels)}

    def encoded_texts(texts: list[Any], source: Path) -> list[Any]:
        found = encode_labelled(
            tokenizer, [t.text for t in texts], [label_ids[t.label] for t in texts]
        )
        check_lengths(found, int(step.seq_len), str(source))  # the error names the file
        return found

    encoded = {split: encoded_texts(splits[split], path) for split, path in sources.items()}
    for texts, path in zip(extra, inputs.extra, strict=True):
        encoded["train"] += encoded_texts(texts, path)

    # 3. Cross-entropy on the training core; the guard's measures before and after.
    benign, threshold = label_ids[str(method.benign_label)], float(method.threshold)
    measure = partial(
        classifier_metrics, pad_id=pad_id, benign=benign, threshold=threshold,
        batch_size=int(step.eval_batch_size),
    )  # fmt: skip
    held_out = "test" if "test" in encoded else "val"
    before = measure(model, encoded[held_out])
    model.train()
    module = PreferenceModule(
        model, step.optim, ClassifierObjective(benign=benign, threshold=threshold)
    )
    tokens = sum(len(s.input_ids) for s in encoded["train"]) / len(encoded["train"])
    fitted = _fit(cfg, run, module, encoded["train"], encoded["val"], collate_texts(pad_id),
                  tokens_per_sample=max(1, round(tokens)))  # fmt: skip
    if not fitted.trainer.is_global_zero:
        return {}

    # 4. classifier/: what AutoModelForSequenceClassification (and safety=classifier) loads,
    # measured again on every split it was not trained on.
    classifier_dir = run.dir / "classifier"
    sample = torch.tensor([encoded["val"][0].input_ids])
    exported = export_checkpoint(
        fitted.last_checkpoint, model.config, classifier_dir, tokenizer, sample,
        model_class=AutoModelForSequenceClassification,
    )  # fmt: skip
    run.add_output("classifier")
    reloaded = AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    metrics = {f"{held_out}_{name}_before": value for name, value in before.items()}
    for split in [s for s in ("val", "test") if s in encoded]:
        after = measure(reloaded, encoded[split])
        metrics |= {f"{split}_{name}": value for name, value in after.items()}
    return {
        **dict(sorted(metrics.items(), key=lambda item: not item[0].startswith(held_out))),
        "train_loss": fitted.train_loss,
        "steps": float(fitted.trainer.global_step),
        "train_seconds": fitted.seconds,
        **exported,
    }


def _with_new_head(directory: Path, **config: Any) -> Any:
    """The model in `directory` with a new sequence-classification head (`config`: its
    labels), fp32. The head is new by design, so transformers' load report of a missing head
    and an unused lm_head, which would only alarm, is silenced while it loads."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(directory), dtype=torch.float32, **config
        )
    finally:
        transformers_logging.set_verbosity(verbosity)


def _classifier_labels(splits: dict[str, list[Any]], benign: str, data_dir: Path) -> list[str]:
    """The labels, the benign one first; every label of val and test must be trained on."""
    trained = {t.label for t in splits["train"]}
    if benign not in trained:
        raise ConfigError(
            "align.benign_label",
            f"'{benign}' is not a label of {data_dir / 'train.jsonl'} (it has: "
            f"{', '.join(sorted(trained))})",
            "set align.benign_label to the label of safe texts",
        )
    if len(trained) < 2:
        raise ConfigError(
            "step.data_dir", f"{data_dir / 'train.jsonl'} has only the label '{benign}'",
            "label unsafe texts too",
        )  # fmt: skip
    for split in ("val", "test"):
        unknown = {t.label for t in splits.get(split, [])} - trained
        if unknown:
            raise ConfigError(
                "step.data_dir",
                f"{data_dir / (split + '.jsonl')} has labels no training text has: "
                f"{', '.join(sorted(unknown))}",
                "give every label training examples",
            )
    return [benign, *sorted(trained - {benign})]


def _fit(
    cfg: DictConfig,
    run: Run,
    module: Any,
    train: Sequence[Any],
    val: Sequence[Any],
    collate: Callable[[list[Any]], Any],
    *,
    tokens_per_sample: int,
) -> Any:
    """`module` trained on in-memory samples batched by `collate` (the training core's fit:
    resume, checkpoints, final validation); checkpoints/ and logs/metrics.csv recorded."""
    from quark.hpo.pruning import trial_callbacks
    from quark.training.sft import SampleDataModule
    from quark.training.trainer import fit

    datamodule = SampleDataModule(
        train,
        val,
        collate,
        int(cfg.trainer.micro_batch_size),
        int(cfg.seed),
        int(cfg.step.val_samples),
    )
    fitted = fit(
        cfg,
        run,
        module,
        datamodule,
        tokens_per_sample=tokens_per_sample,
        callbacks=trial_callbacks(),  # pruning, when this job is a trial of an Optuna study
    )
    if fitted.trainer.is_global_zero:
        run.add_output("checkpoints")
        run.add_output(Path("logs") / "metrics.csv")
    return fitted


def _export_policy(run: Run, fitted: Any, chat: Any, sample_ids: list[int]) -> tuple[dict, Any]:
    """hf/: the trained causal LM rebuilt from the last checkpoint (sharded strategies hold
    shards), with the chat tokenizer and a generation config that stops where answers end;
    the export's checks, and the export reloaded (what gets asked after training)."""
    import torch
    from transformers import AutoModelForCausalLM

    from quark.training.export import export_checkpoint

    hf_dir = run.dir / "hf"
    sample = torch.tensor([sample_ids])
    exported = export_checkpoint(
        fitted.last_checkpoint, chat.model.config, hf_dir, chat.tokenizer, sample
    )
    chat.generation_config.save_pretrained(hf_dir)
    run.add_output("hf")
    return exported, AutoModelForCausalLM.from_pretrained(hf_dir)


def _prompt_samples(tokenizer: Any, records: Sequence[Any]) -> list[Any]:
    """Each record with its conversation's token ids, rendered up to the assistant's turn."""
    from quark.align.modules import PromptSample

    texts = [
        tokenizer.apply_chat_template(
            list(r.conversation), add_generation_prompt=True, tokenize=False
        )
        for r in records
    ]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [PromptSample(r, list(i)) for r, i in zip(records, ids, strict=True)]


def _check_prompt_lengths(samples: list[Any], seq_len: int, new_tokens: int) -> None:
    """A prompt and its longest completion fit step.seq_len: nothing is cut."""
    longest = max(range(len(samples)), key=lambda i: len(samples[i].prompt_ids))
    length = len(samples[longest].prompt_ids)
    if length + new_tokens > seq_len:
        raise ConfigError(
            "step.seq_len",
            f"{seq_len} is shorter than a prompt of {length} tokens plus step.max_new_tokens="
            f"{new_tokens}",
            f"allowed: >= {length + new_tokens}",
        )


def _answer_check(
    cfg: DictConfig,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    references: Sequence[str],
    stop_ids: list[int],
) -> Callable[[Any], tuple[float, list[str]]]:
    """A check to run on the model before training and on its export after: the greedy
    answers to `conversations` (their first step.eval_samples), and the share that are their
    references exactly; NaN when there are none to check."""
    from quark.eval.exact_match import greedy_exact_match

    device = "cuda" if cfg.trainer.accelerator == "gpu" else "cpu"
    prompts = [
        tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
        for c in conversations
    ]

    def check(model: Any) -> tuple[float, list[str]]:
        if not prompts:
            return float("nan"), []
        found = greedy_exact_match(
            model.to(device),
            tokenizer,
            prompts,
            list(references),
            stop_token_ids=stop_ids,
            max_new_tokens=int(cfg.step.max_new_tokens),
            batch_size=int(cfg.step.eval_batch_size),
        )
        model.to("cpu")
        return found.accuracy, found.answers

    return check


def _write_answers(
    run: Run,
    conversations: Sequence[Sequence[dict[str, str]]],
    references: Sequence[str],
    before: list[str],
    after: list[str],
) -> None:
    """val_answers.jsonl: each prompt, its reference, the answers before and after."""
    from quark.data.pairs import Pair, write_answers

    write_answers(
        run.path("val_answers.jsonl"),
        [Pair(c[-1]["content"], r) for c, r in zip(conversations, references, strict=True)],
        before=before or [None] * len(references),  # answered on rank 0 only
        after=after,
    )
    run.add_output("val_answers.jsonl")


def _read_splits(cfg: DictConfig, directory: Path) -> tuple[list[Any], list[Any]]:
    from quark.data.preferences import read_preferences

    system_prompt = str(cfg.step.system_prompt) if cfg.step.system_prompt else None
    train, val = (
        read_preferences(
            directory / f"{split}.jsonl",
            key="step.data_dir",
            allowed=PREFERENCES_ALLOWED,
            system_prompt=system_prompt,
        )
        for split in ("train", "val")
    )
    return train, val


def _check_same_tokenizer(tokenizer: Any, reference_dir: Path) -> None:
    """DPO compares log-probs of the same token ids under both models: the reference must read
    them as the policy's tokenizer wrote them."""
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(str(reference_dir)).get_vocab()
    ours = tokenizer.get_vocab()
    if theirs != ours:
        differ = len(set(ours.items()) ^ set(theirs.items()))
        raise ConfigError(
            "step.reference",
            f"the tokenizer in {reference_dir} is not the starting model's ({differ} token "
            "ids differ)",
            REFERENCE_ALLOWED,
        )


def _pair_tokens(examples: list[Any]) -> int:
    total = sum(len(e.chosen.input_ids) + len(e.rejected.input_ids) for e in examples)
    return max(1, round(total / len(examples)))
