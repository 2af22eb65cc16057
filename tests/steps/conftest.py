"""Fixtures of the training steps' tests: a tiny experiment to fine-tune and align in."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ..conftest import launcher, manifests
from .test_pretrain import TINY_MODEL

# 8 sums the model is asked back: val.jsonl is train.jsonl, so a tiny model learns them in
# seconds, and the accuracy it starts from is the one of a model that never saw the format
PAIRS = [
    (f"What is {a} + {b}?", str(a + b))
    for a, b in ((1, 2), (3, 4), (5, 1), (2, 7), (6, 3), (4, 4), (8, 1), (0, 5))
]


def newest(outputs: Path, step: str) -> Path:
    return Path([m for m in manifests(outputs) if m["step"] == step][-1]["run_dir"])


@pytest.fixture(scope="module")
def sft_experiment(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """An experiment holding a tiny pretrain run, an arithmetic pair run, then a preference run
    (the newest data run, which finetune must pass over), and a directory of user pairs."""
    root = tmp_path_factory.mktemp("finetune")
    outputs, corpus, pairs = root / "outputs", root / "corpus", root / "pairs"
    for directory in (outputs, corpus, pairs):
        directory.mkdir()
    for i in range(20):
        text = " ".join(f"What is {i} + {j}? It is {i + j}. item{j} is red." for j in range(30))
        (corpus / f"{i}.txt").write_text(text)
    launch = launcher(outputs)
    launch(
        "step=data",
        "data=text_files",
        f"data.sources.0.paths=[{corpus}/*.txt]",
        "data.tokenizer.vocab_size=600",
        "data.dedup.near=false",
        "data.pack.val_fraction=0.2",
        check=True,
    )
    launch("step=pretrain", *TINY_MODEL, "step.seq_len=32", "step.max_steps=4", check=True)
    task = [
        "data.task.max_digits=1",
        "data.task.max_terms=2",
        "data.task.train=40",
        "data.task.val=10",
        "data.task.test=5",
    ]
    launch("step=data", "data=arithmetic_sft", *task, check=True)
    sft = newest(outputs, "data")
    launch("step=data", "data=arithmetic_prefs", *task, check=True)
    lines = "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS)
    (pairs / "train.jsonl").write_text(lines)
    (pairs / "val.jsonl").write_text(lines)
    return SimpleNamespace(
        outputs=outputs,
        launch=launch,
        pretrain=newest(outputs, "pretrain"),
        sft=sft,
        prefs=newest(outputs, "data"),
        pairs=pairs,
    )
