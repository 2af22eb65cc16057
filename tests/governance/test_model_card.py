"""The model card: its sections, written from the manifests of the model's run and its lineage
(data, training), with the real metric values and the promotion decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from quark.core.files import write_json_atomic
from quark.governance.model_card import write_model_card
from quark.governance.policy import Decision, RuleResult

SECTIONS = [
    "## Model",
    "## Data",
    "## Training",
    "## Evaluation",
    "## Safety",
    "## Intended use",
    "## Limits",
    "## Lineage",
]


def make_run(
    path: Path,
    step: str,
    *,
    inputs: list[dict[str, Any]],
    metrics: dict[str, float],
    config: dict[str, Any],
) -> Path:
    """A completed run directory as quark.core.run.Run leaves one: manifest.json, config.yaml."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    write_json_atomic(
        path / "manifest.json",
        {
            "manifest_version": 1,
            "step": step,
            "experiment": "arith",
            "status": "completed",
            "started_at": "2026-01-02T03:04:05.000+00:00",
            "duration_s": 12.5,
            "run_dir": str(path),
            "config_hash": f"{step}-config-hash-0123456789",
            "overrides": [f"step={step}"],
            "inputs": inputs,
            "outputs": [],
            "outputs_digest": f"{step}-digest-0123456789abcdef",
            "metrics": metrics,
            "versions": {"python": "3.11.7", "torch": "2.13.0"},
            "git": {"commit": "0123456789abcdef0123", "dirty": False},
        },
    )
    return path


def run_input(path: Path, role: str, step: str) -> dict[str, Any]:
    return {"role": role, "path": str(path), "kind": "run", "step": step, "sha256": f"{step}-sha"}


def lineage(tmp_path: Path) -> Path:
    """corpus -> data -> pretrain -> finetune (which also reads a second data run)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    corpus_input = {
        "role": "data.sources.0",
        "path": str(corpus),
        "kind": "corpus:text_files",
        "sha256": "corpus-sha-0123456789",
        "files": ["a.txt", "b.txt", "c.txt"],
    }
    data = make_run(
        tmp_path / "data",
        "data",
        inputs=[corpus_input],
        metrics={"documents_kept": 710.0, "tokens_train": 52420.0},
        config={"step": {"name": "data"}},
    )
    tasks = make_run(
        tmp_path / "tasks",
        "data",
        inputs=[],
        metrics={"examples_train": 200.0},
        config={"step": {"name": "data"}},
    )
    pretrain = make_run(
        tmp_path / "pretrain",
        "pretrain",
        inputs=[run_input(data, "data", "data")],
        metrics={"val_loss": 5.533, "steps": 40.0},
        config={
            "step": {"name": "pretrain", "max_steps": 40, "seq_len": 64, "optim": {"lr": 0.003}},
            "trainer": {"strategy": "single", "precision": "32-true", "micro_batch_size": 8},
        },
    )
    finetune = make_run(
        tmp_path / "finetune",
        "finetune",
        inputs=[run_input(pretrain, "model", "pretrain"), run_input(tasks, "data", "data")],
        metrics={"val_accuracy": 0.625, "steps": 60.0},
        config={"step": {"name": "finetune", "max_steps": 60, "optim": {"lr": 0.001}}},
    )
    (finetune / "hf").mkdir()
    (finetune / "hf" / "config.json").write_text(
        json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2})
    )
    return finetune


def test_the_card_has_every_section_with_the_facts_of_the_lineage(tmp_path: Path) -> None:
    run = lineage(tmp_path)
    decision = Decision(
        "version 2",
        "version 1",
        (
            RuleResult("min_gain exact_match", "0.6667 vs 0.4 (+0.2667)", ">= +0.02", True),
            RuleResult("approval", "approved by ana (QUARK_APPROVER)", "a person approves", True),
        ),
    )
    card = write_model_card(
        tmp_path / "MODEL_CARD.md",
        run,
        evaluation={"exact_match": 0.6667, "perplexity": 12.25},
        safety={"red_team_attack_success_guarded": 0.05},
        decision=decision,
        intended_use="Answering two-digit arithmetic questions.",
        limits=["Trained on 200 examples.", "English only."],
    )
    text = card.read_text()
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    section = {
        name: text[start : (positions[i + 1] if i + 1 < len(positions) else len(text))]
        for i, (name, start) in enumerate(zip(SECTIONS, positions, strict=True))
    }
    assert "arith / finetune / finetune" in text.splitlines()[0]
    assert "model_type=llama, hidden_size=64, num_hidden_layers=2" in section["## Model"]
    assert "finetune-digest-0123456789abcdef" in section["## Model"]
    assert "git 0123456789abcdef0123" in section["## Model"]
    assert f"Data run `{tmp_path / 'data'}`" in section["## Data"]
    assert "read by pretrain as data" in section["## Data"]
    assert "documents_kept=710" in section["## Data"]
    assert f"corpus:text_files `{tmp_path / 'corpus'}`, 3 files" in section["## Data"]
    assert f"Data run `{tmp_path / 'tasks'}`" in section["## Data"]
    assert section["## Data"].count("corpus:text_files") == 1
    assert "### finetune" in section["## Training"] and "### pretrain" in section["## Training"]
    assert "max_steps=40, seq_len=64, lr=0.003, strategy=single" in section["## Training"]
    assert "| val_loss | 5.533 |" in section["## Training"]
    assert "| val_accuracy | 0.625 |" in section["## Training"]
    assert "| exact_match | 0.6667 |" in section["## Evaluation"]
    assert "| perplexity | 12.25 |" in section["## Evaluation"]
    assert "version 2 against version 1: passed" in section["## Evaluation"]
    assert "| min_gain exact_match | 0.6667 vs 0.4 (+0.2667) | >= +0.02 | pass |" in text
    assert "| red_team_attack_success_guarded | 0.05 |" in section["## Safety"]
    assert "two-digit arithmetic" in section["## Intended use"]
    assert "- Trained on 200 examples.\n- English only." in section["## Limits"]
    tree = section["## Lineage"].strip().splitlines()[2:]
    assert tree[0].startswith(f"- finetune `{run}`")
    assert tree[1].startswith(f"  - pretrain `{tmp_path / 'pretrain'}`") and "as model" in tree[1]
    assert tree[2].startswith(f"    - data `{tmp_path / 'data'}`")
    assert tree[3].startswith(f"      - corpus:text_files `{tmp_path / 'corpus'}`")
    assert tree[4].startswith(f"  - data `{tmp_path / 'tasks'}`")


def test_a_card_without_evaluation_says_so(tmp_path: Path) -> None:
    run = make_run(
        tmp_path / "pretrain", "pretrain", inputs=[], metrics={"val_loss": 4.0}, config={}
    )
    text = write_model_card(
        tmp_path / "card.md",
        run,
        evaluation=None,
        safety=None,
        decision=None,
        intended_use="",
        limits=[],
    ).read_text()
    assert "## Evaluation\n\nNot evaluated." in text
    assert "## Safety\n\nNo safety evaluation recorded." in text
    assert "## Data\n\nNo data run in the model's lineage." in text
    assert "Promotion gate" not in text
