"""step=improve from the command line, at tiny sizes: a cycle collects the production model's
wrong answers, trains a candidate from it on data aimed at them, evaluates both on the same
suite, and the governance gate decides; a pass promotes the candidate in the MLflow registry,
every decision is in the hash-chained audit log, and the next cycle starts from production."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from quark.governance.audit import verify
from quark.improve.kinds import label_of

from ..conftest import manifests
from .conftest import newest

pytestmark = pytest.mark.slow

# the cycle's own runs at tiny sizes: a few fine-tuning steps, the 5 test questions
TINY_CYCLE = [
    "step=improve",
    "step.retrain.steps=20",
    "step.retrain.lr=5e-3",
    "step.failures.high_loss_windows=2",
    "step.failures.windows_scanned=8",
    "step.augment.per_failure=3",
]


@pytest.fixture(scope="module")
def experiment(sft_experiment: SimpleNamespace) -> SimpleNamespace:
    """The shared tiny experiment with a fine-tuned model: production's first version."""
    launch = sft_experiment.launch
    launch(
        "step=finetune", f"step.data_dir={sft_experiment.sft}", "step.max_steps=30",
        "step.val_every_n_steps=30", "step.checkpoint_every_n_steps=30", "step.val_samples=10",
        "step.eval_samples=10", "step.optim.lr=5e-3", "step.optim.warmup_steps=2",
        check=True,
    )  # fmt: skip
    sft_experiment.tuned = newest(sft_experiment.outputs, "finetune")
    return sft_experiment


def improve_runs(outputs: Path) -> list[dict]:
    return [m for m in manifests(outputs) if m["step"] == "improve"]


def registry_of(outputs: Path) -> tuple[object, Path]:
    from omegaconf import OmegaConf

    from quark.governance.registry import ModelRegistry, audit_log_path

    governance = OmegaConf.load(Path(__file__).parents[2] / "conf" / "governance" / "default.yaml")
    registry = ModelRegistry.open(governance, outputs, "demo")
    return registry, audit_log_path(governance, outputs, "demo")


def audit_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_cycle_promotes_a_candidate_that_passes_the_gate(experiment: SimpleNamespace) -> None:
    outputs = experiment.outputs
    done = experiment.launch(*TINY_CYCLE, "governance.min_gain=-1", check=True)
    assert "Governance gate, first production: PROMOTED" in done.stdout
    assert "Governance gate, cycle 1: PROMOTED" in done.stdout
    [run] = improve_runs(outputs)
    run_dir = Path(run["run_dir"])
    assert run["status"] == "completed" and run["metrics"]["promotions"] == 1
    [cycle] = run["cycles"]
    assert cycle["start"] == str(experiment.tuned)

    # 1. the failures are the starting model's wrong answers, as its evaluate run recorded them
    start_eval = Path(cycle["start_evaluation"]["run_dir"])
    answers = [json.loads(line) for line in (start_eval / "answers.jsonl").open()]
    wrong = [a["prompt"] for a in answers if not a["correct"]]
    failures = [json.loads(line) for line in (run_dir / "cycle_1" / "failures.jsonl").open()]
    assert wrong and [f["prompt"] for f in failures if f["source"] == "wrong_answer"] == wrong
    assert [f["source"] for f in failures].count("high_loss_window") == 2
    evaluated = json.loads((start_eval / "manifest.json").read_text())
    assert evaluated["inputs"][0]["path"] == str(experiment.tuned)

    # 2. the data aimed at them: new examples, never a held-out question
    augmentation = json.loads((run_dir / "cycle_1" / "augmentation.json").read_text())
    assert sum(augmentation["added"].values()) + sum(augmentation["repeated"].values()) > 0
    held_out = {json.loads(line)["prompt"] for line in (experiment.sft / "test.jsonl").open()}
    train = [json.loads(line) for line in (run_dir / "cycle_1" / "augment" / "train.jsonl").open()]
    original = (experiment.sft / "train.jsonl").read_text().count("\n")
    assert len(train) > original and not {r["prompt"] for r in train} & held_out

    # 3. the candidate: a finetune run from the starting model on that data
    candidate = Path(cycle["candidate"]["run_dir"])
    trained = json.loads((candidate / "manifest.json").read_text())
    assert trained["step"] == "finetune" and trained["metrics"]["steps"] == 20
    roles = {i["role"]: i["path"] for i in trained["inputs"]}
    assert roles["model"] == str(experiment.tuned)
    assert roles["data"] == str(run_dir / "cycle_1" / "augment")

    # 4. the gate's rules with their measured values; the registry; the audit log; the cards
    rules = {r["rule"]: r for r in cycle["decision"]["rules"]}
    assert (
        rules["min_gain exact_match"]["passed"]
        and " vs " in rules["min_gain exact_match"]["measured"]
    )
    registry, audit_path = registry_of(outputs)
    production = registry.by_alias("production")  # type: ignore[attr-defined]
    archived = registry.by_alias("archived")  # type: ignore[attr-defined]
    assert production.run_dir == candidate and archived.run_dir == experiment.tuned
    records = audit_records(audit_path)
    assert [r["kind"] for r in records] == ["decision", "promotion", "decision", "promotion"]
    assert records[0]["production"] is None and records[2]["production"] == archived.version
    assert verify(audit_path) == []
    assert Path(production.tags["card"]) == run_dir / "cycle_1" / "model_card.md"
    assert Path(archived.tags["card"]) == run_dir / "model_card_v1.md"
    card = (run_dir / "cycle_1" / "model_card.md").read_text()
    for section in ("## Data", "## Training", "## Evaluation", "## Intended use", "## Limits"):
        assert section in card
    assert rules["min_gain exact_match"]["measured"] in card

    # 5. the next goal, written down: the weakest kind of the promoted model, with a budget
    goal = json.loads((run_dir / "cycle_1" / "goal.json").read_text())
    candidate_answers = Path(cycle["candidate_evaluation"]["run_dir"]) / "answers.jsonl"
    kinds = {label_of(json.loads(line)["prompt"]) for line in candidate_answers.open()}
    assert goal["kind"] is None or goal["kind"] in kinds
    assert goal["steps"] >= 20 and goal["why"]


def test_a_named_starting_model_is_gated_against_production_and_refused_without_gain(
    experiment: SimpleNamespace,
) -> None:
    outputs = experiment.outputs
    registry, audit_path = registry_of(outputs)
    production = registry.by_alias("production")  # type: ignore[attr-defined]
    done = experiment.launch(*TINY_CYCLE, f"step.model_dir={experiment.tuned}",
                             "governance.min_gain=1", check=True)  # fmt: skip
    assert "Governance gate, cycle 1: REFUSED" in done.stdout
    [cycle] = improve_runs(outputs)[-1]["cycles"]
    assert cycle["start"] == str(experiment.tuned)  # step.model_dir, not production
    assert cycle["production"] == str(production.run_dir) and not cycle["promoted"]
    gain = {r["rule"]: r for r in cycle["decision"]["rules"]}["min_gain exact_match"]
    assert not gain["passed"] and gain["threshold"].startswith(">= +1")
    registry, _ = registry_of(outputs)
    assert registry.by_alias("production").run_dir == production.run_dir  # type: ignore[attr-defined]
    assert audit_records(audit_path)[-1]["kind"] == "decision"
    assert verify(audit_path) == []


# governance=strict with only its approval rule in force
APPROVAL_ONLY = [
    "governance=strict", "governance.min_gain=-1", "governance.safety.max_attack_success=null",
    "governance.safety.max_false_refusal=null",
]  # fmt: skip


def test_a_candidate_refused_for_want_of_approval_is_promoted_once_approved(
    experiment: SimpleNamespace,
) -> None:
    outputs = experiment.outputs
    registry, audit_path = registry_of(outputs)
    before = registry.by_alias("production")  # type: ignore[attr-defined]
    # strict governance: a person must approve, and nobody did (its safety limits are lifted:
    # this suite has no red team)
    done = experiment.launch(*TINY_CYCLE, *APPROVAL_ONLY, check=True)
    assert "Governance gate, cycle 1: REFUSED" in done.stdout
    [cycle] = improve_runs(outputs)[-1]["cycles"]
    assert cycle["start"] == str(before.run_dir) and not cycle["promoted"]  # from production
    approval = {r["rule"]: r for r in cycle["decision"]["rules"]}["approval"]
    assert not approval["passed"]
    registry, _ = registry_of(outputs)
    assert registry.by_alias("production").run_dir == before.run_dir  # type: ignore[attr-defined]
    refused = Path(cycle["candidate"]["run_dir"])
    assert registry.by_alias("candidate").run_dir == refused  # type: ignore[attr-defined]
    assert audit_records(audit_path)[-1]["passed"] is False

    # a person approves it: the candidate is gated again, without training, and promoted
    finetunes = len(list((outputs / "demo" / "finetune").iterdir()))
    again = experiment.launch("step=improve", "step.regate=true", *APPROVAL_ONLY,
                              env={"QUARK_APPROVER": "alice"}, check=True)  # fmt: skip
    assert "Governance gate, again: PROMOTED" in again.stdout, again.stdout
    registry, _ = registry_of(outputs)
    assert registry.by_alias("production").run_dir == refused  # type: ignore[attr-defined]
    assert registry.by_alias("archived").run_dir == before.run_dir  # type: ignore[attr-defined]
    decision, promotion = audit_records(audit_path)[-2:]
    assert decision["passed"] and decision["decision"]["approver"] == "alice"
    assert promotion["kind"] == "promotion" and promotion["run_dir"] == str(refused)
    assert verify(audit_path) == []
    assert len(list((outputs / "demo" / "finetune").iterdir())) == finetunes
    assert improve_runs(outputs)[-1]["regated"]["candidate"] == decision["candidate"]


def test_bad_input_is_one_line_exit_2(experiment: SimpleNamespace) -> None:
    launch = experiment.launch
    base = launch("step=improve", f"step.model_dir={experiment.pretrain}")
    assert base.returncode == 2 and "step.model_dir" in base.stderr
    assert "no chat template" in base.stderr and "Traceback" not in base.stderr
    suite = launch("step=improve", "step.suite.tasks=[perplexity]")
    assert suite.returncode == 2 and "step.suite.tasks" in suite.stderr
    budget = launch("step=improve", "step.retrain.steps=5000")
    assert budget.returncode == 2 and "step.retrain.steps" in budget.stderr
    ranks = launch("step=improve", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu")
    assert ranks.returncode == 2 and "trainer.devices" in ranks.stderr
