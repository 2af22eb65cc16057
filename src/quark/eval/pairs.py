"""The questions task accuracy is measured on: {prompt, response} records of a JSONL split (a
data run of data=arithmetic_sft holds train, val and test), where to find them, how they are
put to the model, and what it answered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quark.core.run import MANIFEST, read_manifest
from quark.data.tasks import read_prompt_responses

KEY = "step.exact_match.data_dir"
ALLOWED = (
    "give a data run of data=arithmetic_sft (python launch.py step=data data=arithmetic_sft), "
    "or a directory holding <split>.jsonl of prompt/response records"
)


def read_pairs(path: Path, count: int) -> list[tuple[str, str]]:
    """The first `count` (prompt, response) records of a JSONL file (other fields ignored)."""
    return read_prompt_responses(path, KEY, ALLOWED, "task accuracy", count)


def questions_dir(cfg: Any, source: Path) -> Path | None:
    """step.exact_match.data_dir; else the data run a pipeline handed over, if it holds the
    split; else the data run the model was fine-tuned on; else the newest completed data run
    of the experiment that holds the split; else None."""
    split = str(cfg.step.exact_match.split)
    if cfg.step.exact_match.data_dir:
        return Path(str(cfg.step.exact_match.data_dir)).expanduser()
    handed = (cfg.get("inputs") or {}).get("data")
    if handed and holds_split(Path(str(handed)), split):
        return Path(str(handed))
    runs, seen = [source], 0
    while runs and seen < 8:  # through the inputs: optimize -> finetune -> its data run
        run, seen = runs.pop(0), seen + 1
        if (run / MANIFEST).is_file():
            for item in read_manifest(run).get("inputs", []):
                path = Path(item["path"])
                if holds_split(path, split):
                    return path
                runs.append(path)
    from quark.core.runs import find_runs

    output_dir, experiment = cfg.paths.output_dir, str(cfg.experiment_name)
    for record in reversed(find_runs(output_dir, experiment, "data", "completed")):
        if holds_split(record.path, split):
            return record.path
    return None


def holds_split(directory: Path, split: str) -> bool:
    return (directory / f"{split}.jsonl").is_file()


def generated_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """Arithmetic questions from quark.data.tasks (its default spec), when no data run holds
    a split: what the shipped lm-eval task runs on then."""
    from quark.data.tasks import ArithmeticSpec, expressions, sft_records

    records = sft_records(expressions(ArithmeticSpec(seed=seed), count))
    return [(r["prompt"], r["response"]) for r in records]


def render_prompts(tokenizer: Any, pairs: list[tuple[str, str]], system: str | None) -> list[str]:
    """Each question in the model's chat template, up to where its answer starts."""
    before = [{"role": "system", "content": system}] if system else []
    return [
        tokenizer.apply_chat_template(
            [*before, {"role": "user", "content": prompt}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for prompt, _ in pairs
    ]


def write_answers(
    path: Path, pairs: list[tuple[str, str]], answers: list[str], correct: list[bool]
) -> None:
    """Each question, its reference, the model's answer and whether it counted, a line each."""
    with open(path, "w") as out:
        for (prompt, reference), answer, right in zip(pairs, answers, correct, strict=True):
            record = {"prompt": prompt, "reference": reference, "answer": answer, "correct": right}
            out.write(json.dumps(record) + "\n")
