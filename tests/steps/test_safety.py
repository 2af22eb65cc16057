"""The safety pillar from the command line, on a tiny model made on the fly: the generated
labelled requests (data=safety_requests), the classifier trained on them
(align=safety_classifier), the red-team suite of step=evaluate through the served model with
and without the guard, the adaptive attack's bypasses trained on next, and bad input refused
with one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ..conftest import CONF, launcher, manifests
from .conftest import newest
from .test_pretrain import TINY_MODEL as PRETRAIN_MODEL

# room for the red team's framed requests. The pretrain run is 4 steps, so the classifier starts
# from what is nearly the model's initialisation: transformers' normal(0.02) (model.init=hf).
# The default scaled init draws std sqrt(2 / (5 * 64)) = 0.079 at this width, from which 80
# steps separated unsafe from benign by 0.22 (recall - false positives), against > 0.3 here.
TINY_MODEL = [
    *(a for a in PRETRAIN_MODEL if "max_seq_len" not in a),
    "model.max_seq_len=512",
    "model.init=hf",
]
CLASSIFIER = [
    "step=align",
    "align=safety_classifier",
    "step.seq_len=512",
    "step.max_steps=80",
    "step.val_every_n_steps=40",
    "step.val_samples=64",
    "step.checkpoint_every_n_steps=40",
    "step.optim.warmup_steps=4",
    "trainer.micro_batch_size=16",
]
RED_TEAM = [
    "step=evaluate",
    "step.tasks=[red_team]",
    "step.red_team.attacks=8",
    "step.red_team.benign=8",
    "step.red_team.max_new_tokens=4",
    "step.red_team.adaptive.rounds=2",
    "step.red_team.adaptive.seeds=6",
    "step.red_team.adaptive.keep=3",
]


@pytest.fixture(scope="module")
def safety(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """An experiment with a tiny pretrain run on English-like text, a generated labelled set
    and a classifier trained on it."""
    root = tmp_path_factory.mktemp("safety")
    outputs, corpus = root / "outputs", root / "corpus"
    outputs.mkdir()
    corpus.mkdir()
    from quark.safety.requests import BENIGN_TASKS, TEMPLATES, UNSAFE_TASKS

    tasks = [t for ts in UNSAFE_TASKS.values() for t in ts] + list(BENIGN_TASKS)
    for i, template in enumerate(TEMPLATES):
        (corpus / f"{i}.txt").write_text(" ".join(template.format(task=t) for t in tasks))
    launch = launcher(outputs)
    launch(
        "step=data", "data=text_files", f"data.sources.0.paths=[{corpus}/*.txt]",
        "data.tokenizer.vocab_size=600", "data.dedup.near=false", "data.pack.val_fraction=0.2",
        check=True,
    )  # fmt: skip
    launch("step=pretrain", *TINY_MODEL, "step.seq_len=64", "step.max_steps=4", check=True)
    launch(
        "step=data", "data=safety_requests", "data.task.train=800", "data.task.val=100",
        "data.task.test=200", check=True,
    )  # fmt: skip
    requests = newest(outputs, "data")
    launch(*CLASSIFIER, check=True)
    return SimpleNamespace(
        outputs=outputs,
        launch=launch,
        root=root,
        pretrain=newest(outputs, "pretrain"),
        requests=requests,
        classifier=newest(outputs, "align"),
    )


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_manifest(outputs: Path, step: str) -> dict:
    return [m for m in manifests(outputs) if m["step"] == step][-1]


@pytest.mark.slow
def test_the_labelled_set_keeps_its_test_templates_out_of_training(safety: SimpleNamespace) -> None:
    card = json.loads((safety.requests / "data_card.json").read_text())
    assert card["splits"] == {"train": 800, "val": 100, "test": 200}
    assert set(card["labels"]["test"]) == {
        "benign", "weapons", "self_harm", "malware", "pii_harvesting", "prompt_injection",
    }  # fmt: skip
    templates = {
        split: {r["template"] for r in records(safety.requests / f"{split}.jsonl")}
        for split in ("train", "val", "test")
    }
    assert not templates["test"] & templates["train"] and not templates["val"] & templates["train"]


@pytest.mark.slow
def test_the_classifier_learns_and_loads_as_a_text_classifier(safety: SimpleNamespace) -> None:
    from transformers import AutoModelForSequenceClassification

    from quark.safety.classifier import ClassifierGuard

    manifest = run_manifest(safety.outputs, "align")
    assert [(i["role"], i["path"]) for i in manifest["inputs"]] == [
        ("model", str(safety.pretrain)),  # no finetune run: the pretrain run is a start as good
        ("data", str(safety.requests)),
    ]
    metrics = manifest["metrics"]
    # measured on templates never trained on, before and after
    assert metrics["test_accuracy"] >= metrics["test_accuracy_before"] + 0.2, metrics
    assert metrics["test_unsafe_recall"] - metrics["test_false_positive_rate"] > 0.3, metrics
    assert metrics["hf_max_logit_diff"] < 1e-4
    directory = safety.classifier / "classifier"
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    assert model.config.id2label[0] == "benign" and model.config.num_labels == 6
    guard = ClassifierGuard(directory)
    test = records(safety.requests / "test.jsonl")
    flagged = [v.unsafe >= 0.5 for v in guard.verdicts([r["text"] for r in test])]
    unsafe = [r["label"] != "benign" for r in test]
    recall = sum(f and u for f, u in zip(flagged, unsafe, strict=True)) / sum(unsafe)
    assert recall == pytest.approx(metrics["test_unsafe_recall"], abs=1e-6)


@pytest.fixture(scope="module")
def red_team_rules(safety: SimpleNamespace) -> dict:
    safety.launch(*RED_TEAM, "safety=rules", f"step.model_dir={safety.pretrain}", check=True)
    return run_manifest(safety.outputs, "evaluate")


@pytest.mark.slow
def test_the_red_team_goes_through_the_served_model_with_and_without_the_guard(
    red_team_rules: dict,
) -> None:
    metrics = red_team_rules["metrics"]
    # the bare tiny model never refuses; the word lists stop the attacks that name a phrase
    assert metrics["red_team_attack_success_unguarded"] == 1.0
    assert metrics["red_team_attack_success_guarded"] < 1.0
    assert metrics["red_team_attacks"] == 8 * 7 and metrics["red_team_benign"] == 8
    assert 0 <= metrics["red_team_false_refusal_rate"] <= 1
    run_dir = Path(red_team_rules["run_dir"])
    outcomes = records(run_dir / "red_team" / "outcomes.jsonl")
    assert len(outcomes) == 8 * 7 + 8
    for outcome in outcomes:
        if outcome["guarded"]["filtered"]:
            assert outcome["guarded"]["answer"] == ""  # nothing of a blocked answer was sent
        assert not outcome["unguarded"]["refused"]
    attacks = [o for o in outcomes if o["label"] != "benign"]
    success = sum(not o["guarded"]["refused"] for o in attacks) / len(attacks)
    assert success == pytest.approx(metrics["red_team_attack_success_guarded"])
    # the word lists cannot read a request written backwards: found in round 1
    assert metrics["red_team_adaptive_rounds_to_bypass"] == 1
    bypasses = records(run_dir / "red_team" / "bypasses.jsonl")
    assert len(bypasses) == metrics["red_team_adaptive_bypasses"] > 0
    assert {"text", "label", "mutations", "origin"} <= set(bypasses[0])
    report = (run_dir / "report.html").read_text()
    assert "Attack success by framing" in report and "Adaptive attack on the guard" in report


@pytest.mark.slow
def test_the_classifier_guards_the_served_model_and_trains_on_the_bypasses(
    safety: SimpleNamespace, red_team_rules: dict
) -> None:
    safety.launch(*RED_TEAM, "safety=classifier", f"step.model_dir={safety.pretrain}", check=True)
    manifest = run_manifest(safety.outputs, "evaluate")
    roles = {i["role"]: i["path"] for i in manifest["inputs"]}
    # the newest classifier, and the held-out requests of the data it was trained on
    assert roles["safety_classifier"] == str(safety.classifier / "classifier")
    assert roles["red_team_data"] == str(safety.requests)
    metrics = manifest["metrics"]
    assert metrics["red_team_attack_success_guarded"] < metrics["red_team_attack_success_unguarded"]
    # the rules' bypasses, trained on: the next classifier records them as its input
    bypasses = Path(red_team_rules["run_dir"]) / "red_team" / "bypasses.jsonl"
    safety.launch(
        *CLASSIFIER, "step.max_steps=10", f"align.extra_train=[{bypasses}]",
        f"step.init_from={safety.pretrain}", check=True,
    )  # fmt: skip
    retrained = run_manifest(safety.outputs, "align")
    assert {"role": "extra_train_0", "path": str(bypasses)}.items() <= {
        k: v for i in retrained["inputs"] if i["role"] == "extra_train_0" for k, v in i.items()
    }.items()


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(safety: SimpleNamespace, tmp_path: Path) -> None:
    no_label = tmp_path / "no_label"
    no_label.mkdir()
    for split in ("train", "val"):
        (no_label / f"{split}.jsonl").write_text(
            '{"text": "hello", "label": "benign"}\n{"text": "x"}\n'
        )
    missing = tmp_path / "bypasses.jsonl"
    cases = [
        (
            [*RED_TEAM, f"step.model_dir={safety.pretrain}"],
            "error: safety: is none: the red_team task measures the safety guard against the "
            "bare model; add safety=rules or safety=classifier",
        ),
        (
            [
                *RED_TEAM,
                "safety=classifier",
                f"safety.classifier.path={safety.pretrain}",
                f"step.model_dir={safety.pretrain}",
            ],
            f"error: safety.classifier.path: {safety.pretrain} is not a text classifier (no "
            "readable config.json); train one with: python launch.py step=align "
            "align=safety_classifier, or give its run directory or a local Hugging Face "
            "text-classification model directory",
        ),
        (
            [*CLASSIFIER, f"step.data_dir={no_label}"],
            f"error: {no_label}/train.jsonl: line 2 has no label field (it has: text); each "
            "line a JSON object with a non-empty string text and a string label",
        ),
        (
            [*CLASSIFIER, f"align.extra_train=[{missing}]"],
            f"error: align.extra_train.0: {missing} is not a file; give JSONL files of "
            "{text, label} records, e.g. an evaluate run's red_team/bypasses.jsonl",
        ),
        (
            [*CLASSIFIER, "align.benign_label=safe"],
            f"error: align.benign_label: 'safe' is not a label of {safety.requests}/train.jsonl "
            "(it has: benign, malware, pii_harvesting, prompt_injection, self_harm, weapons); "
            "set align.benign_label to the label of safe texts",
        ),
        (
            [*RED_TEAM, "safety=rules", "step.red_team.framings=[rot13]"],
            "error: step.red_team.framings.0: 'rot13' is not one; allowed: plain, jailbreak, "
            "roleplay, hypothetical, base64, leetspeak, retrieved_injection",
        ),
    ]
    before = len(manifests(safety.outputs))
    for args, line in cases:
        done = safety.launch(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.strip().splitlines() == [line], args
    completed = [m for m in manifests(safety.outputs)[before:] if m["status"] == "completed"]
    assert completed == []


@pytest.mark.slow
def test_the_data_step_counts_what_the_classifier_flags_in_documents(
    safety: SimpleNamespace, tmp_path: Path
) -> None:
    import yaml

    from quark.safety.classifier import ClassifierGuard
    from quark.safety.guard import SafetyGuard
    from quark.safety.rules import RuleGuard

    texts = [r["text"] for r in records(safety.requests / "test.jsonl")[:12]]
    for i, text in enumerate(texts):
        (tmp_path / f"{i}.txt").write_text(text)
    safety.launch(
        "step=data", "data=text_files", f"data.sources.0.paths=[{tmp_path}/*.txt]",
        "data.tokenizer.vocab_size=300", "data.dedup.near=false", "data.clean.min_chars=10",
        "safety=classifier", f"safety.classifier.path={safety.classifier}",
        "safety.classifier.checks=[documents]", "safety.data=flag",
        "safety.patterns=false", check=True,
    )  # fmt: skip
    run = run_manifest(safety.outputs, "data")
    card = json.loads((Path(run["run_dir"]) / "data_card.json").read_text())
    # what the shipped word lists and the guard's classifier say of each document, counted
    # once per category
    lists = yaml.safe_load((CONF / "safety" / "rules.yaml").read_text())["lists"]
    guard = SafetyGuard(
        RuleGuard.from_lists(lists, patterns=False),
        ClassifierGuard(safety.classifier / "classifier"),
        ("documents",),
    )
    expected: dict[str, int] = {}
    for text in texts:
        for category in {f.category for f in guard.check_document(text)}:
            expected[category] = expected.get(category, 0) + 1
    assert any(f.rule == "classifier" for t in texts for f in guard.check_document(t))
    assert card["safety"]["documents"] == dict(sorted(expected.items()))
    assert {"role": "safety_classifier", "path": str(safety.classifier / "classifier")} in [
        {k: i[k] for k in ("role", "path")} for i in run["inputs"]
    ]
