"""The guard a `safety` config describes, for the steps that check text with it.

    safety=rules        patterns and word lists (quark.safety.rules) on every text
    safety=classifier   the same rules, and a text classifier (quark.safety.classifier) on the
                        texts safety.classifier.checks names: requests by default (it is
                        trained on requests), answers and documents when asked

A text is blocked when either half finds something; the findings say which rule or label.
The classifier reads a text as written and in the readings the rules decode (leetspeak,
look-alike letters and separators inside words undone, base64 decoded), as the rules do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.lineage.finding import find_run, missing
from quark.safety.rules import Finding, RuleGuard, decoded_forms

CLASSIFIED_TEXTS = ("requests", "answers", "documents")
KEY = "safety.classifier.path"


@dataclass(frozen=True)
class FormVerdict:
    unsafe: float
    label: str
    form: str  # text, leetspeak or base64: the reading the classifier found most unsafe


class SafetyGuard:
    """Rules and, when there is one, a classifier: `check_request` for what users ask,
    `check` for what the model answers, `check_document` for training documents."""

    def __init__(self, rules: RuleGuard, classifier: Any = None, classified: tuple = ()) -> None:
        self.rules = rules
        self.classifier = classifier
        self.classified = set(classified) if classifier is not None else set()

    def _found(self, text: str, kind: str) -> list[Finding]:
        found = self.rules.check(text)
        if kind in self.classified:
            verdict = self._worst([text])[0]
            if verdict.unsafe >= self.classifier.threshold:
                found.append(
                    Finding(verdict.label, "classifier", verdict.form, 0, len(text),
                            f"p(unsafe)={verdict.unsafe:.2f}")
                )  # fmt: skip
        return found

    def _worst(self, texts: list[str]) -> list[Any]:
        """Each text's classifier verdict over the text and the readings the rules decode
        (leetspeak undone, look-alikes and separators undone, base64 decoded): a request the
        rules would decode is read decoded by the classifier too, which never saw encodings
        in training. The verdict of the most unsafe reading, with its form."""
        readings = [[("text", text), *decoded_forms(text)] for text in texts]
        flat = [variant for forms in readings for _, variant in forms]
        verdicts = iter(self.classifier.verdicts(flat))
        worst = []
        for forms in readings:
            scored = [(next(verdicts), form) for form, _ in forms]
            verdict, form = max(scored, key=lambda pair: pair[0].unsafe)
            worst.append(FormVerdict(verdict.unsafe, verdict.label, form))
        return worst

    def check_request(self, text: str) -> list[Finding]:
        return self._found(text, "requests")

    def check(self, text: str) -> list[Finding]:
        return self._found(text, "answers")

    def check_document(self, text: str) -> list[Finding]:
        return self._found(text, "documents")

    def assess(self, texts: list[str]) -> list[tuple[bool, float]]:
        """For each request: whether it is blocked, and how close it is to being blocked, for
        the adaptive red team (the rules' findings count one each, plus the classifier's
        probability of unsafe). The classifier reads the texts in batches."""
        findings = [len(self.rules.check(text)) for text in texts]
        if "requests" not in self.classified:
            return [(found > 0, float(found)) for found in findings]
        verdicts = self._worst(texts)
        threshold = self.classifier.threshold
        return [
            (found > 0 or v.unsafe >= threshold, found + v.unsafe)
            for found, v in zip(findings, verdicts, strict=True)
        ]


def classifier_dir(cfg: Any) -> Path | None:
    """safety=classifier's model: safety.classifier.path (a run holding classifier/, or a text
    classification directory), else the newest align run holding one; None for other guards.
    Checked here, before a step starts."""
    safety = cfg.get("safety")
    if safety is None or str(safety.get("name", "none")) != "classifier":
        return None
    # only here: the classifier's module imports torch, which the data step otherwise spares
    from quark.safety.classifier import CLASSIFIER_ALLOWED, classifier_labels

    source = find_run(
        cfg, ("align",), key=KEY, holds=lambda run: (run / "classifier").is_dir(),
        allowed=CLASSIFIER_ALLOWED,
    )  # fmt: skip
    if source is None:
        raise missing(cfg, KEY, "align=safety_classifier run", CLASSIFIER_ALLOWED)
    directory = source / "classifier" if (source / "classifier").is_dir() else source
    classifier_labels(directory, KEY)
    return directory


def build_guard(safety: Any, classifier: Path | None = None) -> SafetyGuard | None:
    """The guard of `cfg.safety` (None for safety=none, or a config without the group), with
    the classifier in `classifier` (classifier_dir) for safety=classifier."""
    if safety is None or str(safety.get("name", "none")) == "none":
        return None
    lists = {str(k): [str(p) for p in v] for k, v in (safety.get("lists") or {}).items()}
    rules = RuleGuard.from_lists(lists, patterns=bool(safety.get("patterns", True)))
    if classifier is None:
        return SafetyGuard(rules)
    from quark.safety.classifier import ClassifierGuard

    options = safety.classifier
    model = ClassifierGuard(
        classifier,
        threshold=float(options.threshold),
        benign_label=str(options.benign_label),
        batch_size=int(options.batch_size),
    )
    return SafetyGuard(rules, model, tuple(str(kind) for kind in options.checks))
