"""The classifier half of the safety guard: a Hugging Face text-classification model that
labels a text benign or one of its unsafe categories.

Quark trains one with align=safety_classifier (a sequence-classification head on a language
model, cross-entropy on {text, label} records, quark.data.labelled) and writes it to a run's
classifier/; any other local text-classification directory works as well (a prompt-injection
or toxicity detector from the hub, downloaded beforehand). A text is unsafe when the
probability of every label but the benign one, together, reaches the threshold.

Texts are read as the model's tokenizer reads them by default (its own special tokens), in
windows of the model's positions when they are longer, so that nothing past the first window
goes unread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quark.core.errors import ConfigError
from quark.safety.rules import Finding

CLASSIFIER_ALLOWED = (
    "train one with: python launch.py step=align align=safety_classifier, or give its run "
    "directory or a local Hugging Face text-classification model directory"
)
# the most tokens read at once, whatever the model's positions allow
MAX_WINDOW = 512
# what a tokenizer is saved as (fast; WordPiece, BPE, SentencePiece vocabularies)
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "spm.model",
    "sentencepiece.bpe.model", "tokenizer.model",
)  # fmt: skip


def classifier_labels(directory: Path, key: str) -> dict[int, str]:
    """The labels of the text classifier in `directory` (its config's id2label).

    Raises:
        ConfigError: on `key`, when `directory` is not a text classifier with a tokenizer.
    """
    from quark.lineage.model_files import check_classifier

    found = check_classifier(directory, key, CLASSIFIER_ALLOWED)
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(key, f"{directory} has no tokenizer", CLASSIFIER_ALLOWED)
    labels = {int(i): str(label) for i, label in (found.get("id2label") or {}).items()}
    if len(labels) < 2:
        raise ConfigError(
            key,
            f"{directory} has {len(labels)} label(s); a safety classifier needs a benign label "
            "and at least one other",
            CLASSIFIER_ALLOWED,
        )
    return labels


@dataclass(frozen=True)
class Verdict:
    """A text's probability of being unsafe (every label but the benign one), and its most
    likely unsafe label."""

    unsafe: float
    label: str


class ClassifierGuard:
    """The text classifier in `directory`, flagging texts whose unsafe probability reaches
    `threshold`. `check` answers as RuleGuard.check does (a Finding per flagged text)."""

    def __init__(
        self,
        directory: Path,
        *,
        threshold: float = 0.5,
        benign_label: str = "benign",
        key: str = "safety.classifier.path",
        batch_size: int = 32,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        labels = classifier_labels(directory, key)
        if benign_label not in labels.values():
            raise ConfigError(
                "safety.classifier.benign_label",
                f"'{benign_label}' is not a label of {directory}",
                f"allowed: {', '.join(labels.values())}",
            )
        self.directory = directory
        self.threshold = threshold
        self.batch_size = batch_size
        self.labels = [labels[i] for i in sorted(labels)]
        self.benign = self.labels.index(benign_label)
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(directory), dtype=torch.float32
        ).eval()
        positions = getattr(self.model.config, "max_position_embeddings", None) or MAX_WINDOW
        self.window = min(int(positions), MAX_WINDOW)
        self.pad_id = _pad_id(self.tokenizer, self.model)
        self.special = _special_tokens(self.tokenizer)

    def verdicts(self, texts: Sequence[str]) -> list[Verdict]:
        """Each text's verdict; a long text's is that of its most unsafe window."""
        windows: list[list[int]] = []
        owner: list[int] = []
        for index, text in enumerate(texts):
            for ids in self._windows(text):
                windows.append(ids)
                owner.append(index)
        probabilities = self._probabilities(windows)
        best: list[Verdict] = [Verdict(0.0, self.labels[self.benign]) for _ in texts]
        for index, row in zip(owner, probabilities, strict=True):
            unsafe = 1.0 - float(row[self.benign])
            if unsafe >= best[index].unsafe:
                others = row.clone()
                others[self.benign] = -1.0
                best[index] = Verdict(unsafe, self.labels[int(others.argmax())])
        return best

    def check(self, text: str) -> list[Finding]:
        verdict = self.verdicts([text])[0]
        if verdict.unsafe < self.threshold:
            return []
        return [
            Finding(
                verdict.label, "classifier", "text", 0, len(text), f"p(unsafe)={verdict.unsafe:.2f}"
            )
        ]

    def _windows(self, text: str) -> list[list[int]]:
        """The text's token ids as the tokenizer reads it by default; a longer text in
        half-overlapping windows, each with the tokenizer's own special tokens (a BERT-like
        model's [CLS] ... [SEP]) around it."""
        ids = list(self.tokenizer(text, verbose=False)["input_ids"]) or [self.pad_id]
        if len(ids) <= self.window:
            return [ids]
        # longer than the model's positions is expected here: it is read in windows
        bare = list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        prefix, suffix = self.special
        size = max(1, self.window - len(prefix) - len(suffix))
        stride = max(1, size // 2)
        starts = range(0, max(1, len(bare) - size + stride), stride)
        return [prefix + bare[s : s + size] + suffix for s in starts]

    def _probabilities(self, windows: list[list[int]]) -> torch.Tensor:
        rows = []
        with torch.no_grad():
            for start in range(0, len(windows), self.batch_size):
                batch = collate_texts(self.pad_id)(
                    [LabelledIds(ids, 0) for ids in windows[start : start + self.batch_size]]
                )
                logits = self.model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                rows.append(logits.float().softmax(-1))
        return torch.cat(rows) if rows else torch.zeros(0, len(self.labels))


@dataclass(frozen=True)
class LabelledIds:
    """A text as its token ids, and its label's index."""

    input_ids: list[int]
    label: int


def encode_labelled(
    tokenizer: Any, texts: Sequence[str], labels: Sequence[int]
) -> list[LabelledIds]:
    """Each text as the tokenizer reads it by default (as ClassifierGuard will read it)."""
    ids = tokenizer(list(texts))["input_ids"]
    return [LabelledIds(list(i), label) for i, label in zip(ids, labels, strict=True)]


def collate_texts(pad_id: int) -> Any:
    """Right-padded rows of token ids, their attention mask and their labels. A
    sequence-classification head reads each row's rightmost token that is not pad_id, so
    pad_id must be a token no text ends with."""

    def batch(samples: list[LabelledIds]) -> dict[str, torch.Tensor]:
        width = max(len(s.input_ids) for s in samples)
        ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for row, sample in enumerate(samples):
            ids[row, : len(sample.input_ids)] = torch.tensor(sample.input_ids)
            mask[row, : len(sample.input_ids)] = 1
        labels = torch.tensor([s.label for s in samples], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return batch


CLASSIFIER_METRICS = ("loss", "accuracy", "unsafe_recall", "false_positive_rate")


class ClassifierObjective:
    """Cross-entropy over the labels (quark.align.modules.PreferenceModule trains with it), and
    what the guard cares about: the share of unsafe texts flagged (any unsafe label) and of
    benign texts flagged wrongly, at `threshold`."""

    metric_names: tuple[str, ...] = CLASSIFIER_METRICS
    rows_per_sample = 1

    def __init__(self, *, benign: int, threshold: float = 0.5) -> None:
        self.benign = benign
        self.threshold = threshold

    def to(self, device: torch.device) -> None:
        pass  # nothing besides the model

    def __call__(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        with torch.no_grad():
            flagged = 1.0 - logits.float().softmax(-1)[:, self.benign] >= self.threshold
            unsafe = labels != self.benign
            zero = torch.zeros((), device=logits.device)
            return {
                "loss": loss,
                "accuracy": (logits.argmax(-1) == labels).float().mean(),
                # shares within the batch's unsafe and benign rows (0 where it has none)
                "unsafe_recall": flagged[unsafe].float().mean() if unsafe.any() else zero,
                "false_positive_rate": flagged[~unsafe].float().mean() if (~unsafe).any() else zero,
            }


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text by default ([CLS] and [SEP] for a
    BERT-like one; none for Quark's), found on a sample word: what each window is wrapped in."""
    sample = "sample"
    whole = list(tokenizer(sample)["input_ids"])
    bare = list(tokenizer(sample, add_special_tokens=False)["input_ids"])
    for start in range(len(whole) - len(bare) + 1):
        if whole[start : start + len(bare)] == bare:
            return whole[:start], whole[start + len(bare) :]
    return [], []


def _pad_id(tokenizer: Any, model: Any) -> int:
    """The id batches are padded with. A sequence-classification head finds each row's last
    real token by the config's pad_token_id, so that is the one used; a model without one
    (many decoder classifiers) gets the tokenizer's pad or eos token set as its own."""
    if model.config.pad_token_id is not None:
        return int(model.config.pad_token_id)
    chosen = next(
        (int(i) for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0
    )
    model.config.pad_token_id = chosen
    return chosen


def classifier_metrics(
    model: torch.nn.Module,
    samples: Sequence[LabelledIds],
    *,
    pad_id: int,
    benign: int,
    threshold: float,
    batch_size: int,
) -> dict[str, float]:
    """Over all of `samples`, without gradients: label accuracy; the share of unsafe texts
    flagged (unsafe_recall) and of benign texts flagged (false_positive_rate) at `threshold`;
    and the share of flagged texts that are unsafe (precision)."""
    pad = collate_texts(pad_id)
    was_training = model.training
    model.eval()
    predicted, flagged, labels = [], [], []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            batch = pad(list(samples[start : start + batch_size]))
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.float()
            predicted.append(logits.argmax(-1))
            flagged.append(1.0 - logits.softmax(-1)[:, benign] >= threshold)
            labels.append(batch["labels"])
    model.train(was_training)
    found, flag, truth = torch.cat(predicted), torch.cat(flagged), torch.cat(labels)
    unsafe = truth != benign

    def share(selected: torch.Tensor, within: torch.Tensor) -> float:
        return float(selected[within].float().mean()) if within.any() else float("nan")

    return {
        "accuracy": float((found == truth).float().mean()),
        "unsafe_recall": share(flag, unsafe),
        "false_positive_rate": share(flag, ~unsafe),
        "precision": share(unsafe, flag),
    }
