"""Data aimed at the failures (pillar 8): new generated examples of the kinds the model gets
wrong, in proportion to how often it gets them wrong, and for its high-loss validation windows
the corpus documents most like them. Everything added is written down with the reason.

The new examples never repeat a validation or test question (those measure the candidate), nor
a training question; where a kind has no unseen question left (one-digit sums have 100 of two
terms), its training examples are repeated instead, and the record says so.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quark.data.tasks import ArithmeticSpec, evaluate, prompt_for
from quark.improve.failures import Failures, HighLossWindow
from quark.improve.kinds import OTHER, ArithmeticKind, kind_of, label_of

SPLITS = ("train", "val", "test")


@dataclass
class Augmentation:
    """What one cycle added to the training split, per kind, and why."""

    added: Counter[str] = field(default_factory=Counter)  # new questions per kind
    repeated: Counter[str] = field(default_factory=Counter)  # training examples repeated
    reasons: dict[str, str] = field(default_factory=dict)
    documents: list[dict[str, Any]] = field(default_factory=list)  # for high-loss windows
    original: int = 0  # training examples before

    @property
    def total(self) -> int:
        return sum(self.added.values()) + sum(self.repeated.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "original_train": self.original,
            "added": dict(self.added),
            "repeated": dict(self.repeated),
            "reasons": self.reasons,
            "documents": self.documents,
        }


def read_split(directory: Path, split: str) -> list[dict[str, Any]]:
    path = directory / f"{split}.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def augment_pairs(
    pairs_dir: Path, failures: Failures, out_dir: Path, *, per_failure: int, max_new: int,
    seed: int, focus: str | None = None, held_out: tuple[str, ...] = (),
) -> Augmentation:  # fmt: skip
    """Write out_dir/{train,val,test}.jsonl: the task set of `pairs_dir` with, in train, up to
    `per_failure` new examples per wrong answer of its kind (at most `max_new` in all; twice
    the share for the `focus` kind, the goal a previous cycle set). No new question repeats one
    of train, val, test or the `held_out` splits."""
    splits = {split: read_split(pairs_dir, split) for split in dict.fromkeys((*SPLITS, *held_out))}
    augmentation = Augmentation(original=len(splits["train"]))
    wanted = Counter(w.kind for w in failures.wrong if w.kind != OTHER)
    if focus is not None and focus in wanted:
        wanted[focus] *= 2
    asked = {kind: count * per_failure for kind, count in wanted.items()}
    total = sum(asked.values())
    scale = min(1.0, max_new / total) if total else 0.0
    known = {str(r["prompt"]) for records in splits.values() for r in records}
    rng = random.Random(seed)
    train_by_kind: dict[str, list[dict[str, Any]]] = {}
    for record in splits["train"]:
        train_by_kind.setdefault(label_of(str(record["prompt"])), []).append(record)
    new: list[dict[str, Any]] = []
    for label, count in sorted(asked.items()):
        target = round(count * scale)
        kind = _kind_from_label(failures, label)
        fresh = unseen_questions(kind, target, known, rng) if kind is not None else []
        known.update(prompt_for(e) for e in fresh)
        new += [_record(e) for e in fresh]
        augmentation.added[label] = len(fresh)
        short = target - len(fresh)
        pool = train_by_kind.get(label, [])
        if short > 0 and pool:
            new += [dict(r) for r in rng.choices(pool, k=short)]
            augmentation.repeated[label] = short
        augmentation.reasons[label] = (
            f"{wanted[label] // (2 if label == focus else 1)} wrong of "
            f"{failures.asked[label]} asked"
            + (" (the goal's focus: twice the share)" if label == focus else "")
            + (f"; {short} repeated: no unseen question of this kind left" if short > 0 and pool else "")
        )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    train = splits["train"] + new
    rng.shuffle(train)
    for split, records in {**splits, "train": train}.items():
        if records:
            with open(out_dir / f"{split}.jsonl", "w") as out:
                out.writelines(json.dumps(r) + "\n" for r in records)
    return augmentation


def _kind_from_label(failures: Failures, label: str) -> ArithmeticKind | None:
    for wrong in failures.wrong:
        if wrong.kind == label:
            return kind_of(wrong.prompt)
    return None


def _record(expression: str) -> dict[str, Any]:
    answer = evaluate(expression)
    return {"prompt": prompt_for(expression), "response": str(answer), "answer": answer,
            "expression": expression}  # fmt: skip


def unseen_questions(
    kind: ArithmeticKind, count: int, known: set[str], rng: random.Random
) -> list[str]:
    """Up to `count` distinct expressions of exactly `kind` whose question is not in `known`."""
    spec = ArithmeticSpec(operators=kind.operators, max_digits=kind.digits)
    found: dict[str, None] = {}
    for _ in range(50 * count + 200):
        if len(found) >= count:
            break
        numbers = [_number(rng, spec.max_digits) for _ in range(kind.terms)]
        ops = [rng.choice(kind.operators) for _ in range(kind.terms - 1)]
        expression = " ".join(
            [numbers[0], *(x for pair in zip(ops, numbers[1:], strict=True) for x in pair)]
        )
        if kind_of(prompt_for(expression)) == kind and prompt_for(expression) not in known:
            found.setdefault(expression, None)
    return list(found)


def _number(rng: random.Random, max_digits: int) -> str:
    digits = rng.randint(1, max_digits)
    return str(rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1))


def similar_documents(
    retrieval_dir: Path, windows: list[HighLossWindow], k: int
) -> list[dict[str, Any]]:
    """For each high-loss window, the `k` chunks of a retrieve run's index most like it (BM25,
    which needs no embedder): where more text like the model's weakest windows is."""
    from quark.retrieve.embedders import quiet_libraries
    from quark.retrieve.store import RetrievalIndex

    quiet_libraries(models=False)
    index = RetrievalIndex.load(retrieval_dir)
    mode = "bm25" if "bm25" in index.modes else index.modes[0]
    found = []
    for window in windows:
        hits = index.search(window.text, mode, k)
        found.append({
            "window": window.index, "loss": round(window.loss, 4),
            "documents": [{"path": h.chunk.path, "lines": [h.chunk.start_line, h.chunk.end_line],
                           "name": h.chunk.name, "score": round(h.score, 4)} for h in hits],
        })  # fmt: skip
    return found
