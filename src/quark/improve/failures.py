"""What the production model gets wrong, collected from what was measured of it: the wrong
answers in an evaluate run's answers.jsonl, the red-team bypasses in its red_team/, and the
validation windows of its training data on which its loss is highest."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quark.core.errors import QuarkError
from quark.improve.kinds import label_of


@dataclass(frozen=True)
class WrongAnswer:
    prompt: str
    reference: str
    answer: str
    kind: str  # quark.improve.kinds label, or "other"


@dataclass(frozen=True)
class HighLossWindow:
    index: int  # of the validation windows, in order
    loss: float  # mean next-token loss, nats
    text: str  # decoded


@dataclass
class Failures:
    """Everything one cycle collected, and the accuracy per kind it was collected from."""

    wrong: list[WrongAnswer] = field(default_factory=list)
    asked: Counter[str] = field(default_factory=Counter)  # questions per kind
    correct: Counter[str] = field(default_factory=Counter)  # right answers per kind
    bypasses: list[dict[str, Any]] = field(default_factory=list)  # {text, label}
    windows: list[HighLossWindow] = field(default_factory=list)

    def accuracy_by_kind(self) -> dict[str, float]:
        return {kind: self.correct[kind] / asked for kind, asked in sorted(self.asked.items())}

    def summary(self) -> dict[str, Any]:
        return {
            "wrong_answers": len(self.wrong),
            "asked": sum(self.asked.values()),
            "accuracy_by_kind": self.accuracy_by_kind(),
            "wrong_by_kind": dict(Counter(w.kind for w in self.wrong).most_common()),
            "red_team_bypasses": len(self.bypasses),
            "high_loss_windows": [
                {"index": w.index, "loss": round(w.loss, 4), "start": w.text[:80]}
                for w in self.windows
            ],
        }

    def write(self, path: Path) -> None:
        with open(path, "w") as out:
            for wrong in self.wrong:
                out.write(json.dumps({"source": "wrong_answer", **vars(wrong)}) + "\n")
            for bypass in self.bypasses:
                out.write(json.dumps({"source": "red_team_bypass", **bypass}) + "\n")
            for window in self.windows:
                out.write(json.dumps({"source": "high_loss_window", **vars(window)}) + "\n")


def read_answers(evaluate_run: Path, failures: Failures) -> None:
    """The wrong answers of evaluate_run/answers.jsonl, and every answer counted per kind."""
    path = evaluate_run / "answers.jsonl"
    if not path.is_file():
        raise QuarkError(f"{evaluate_run} has no answers.jsonl: it measured no exact match")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
            prompt, reference = str(record["prompt"]), str(record["reference"])
            answer, correct = str(record["answer"]), bool(record["correct"])
        except (ValueError, KeyError, TypeError) as exc:
            raise QuarkError(f"{path}:{number} is not an answer record ({exc})") from None
        kind = label_of(prompt)
        failures.asked[kind] += 1
        if correct:
            failures.correct[kind] += 1
        else:
            failures.wrong.append(WrongAnswer(prompt, reference, answer, kind))


def read_bypasses(evaluate_run: Path, failures: Failures) -> None:
    """The adaptive attack's bypasses (red_team/bypasses.jsonl), when the run measured one."""
    path = evaluate_run / "red_team" / "bypasses.jsonl"
    if path.is_file():
        failures.bypasses += [json.loads(line) for line in path.read_text().splitlines() if line]


def high_loss_windows(
    model_dir: Path, data_dir: Path, seq_len: int, count: int, top: int
) -> list[HighLossWindow]:
    """The `top` of the first `count` validation windows of `data_dir` on which the model at
    `model_dir` has the highest mean next-token loss, highest first."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quark.export.validation import validation_windows

    windows = torch.from_numpy(validation_windows(data_dir, seq_len, count))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    losses = []
    with torch.inference_mode():
        for batch in windows.split(8):
            logits = model(batch[:, :-1]).logits
            per_token = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), batch[:, 1:], reduction="none"
            )
            losses += per_token.mean(dim=1).tolist()
    ranked = sorted(range(len(losses)), key=lambda i: -losses[i])[:top]
    return [
        HighLossWindow(i, float(losses[i]), str(tokenizer.decode(windows[i].tolist())))
        for i in ranked
    ]
