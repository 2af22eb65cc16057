"""Step 10, improve: a governed improvement cycle, or several.

    python launch.py step=improve                              # one cycle from production
    python launch.py step=improve step.max_cycles=3 step.time_budget_s=1800
    python launch.py step=improve governance=strict            # human approval, safety limits
    python launch.py step=improve step.model_dir=outputs/demo/align/<time>

A cycle, each part a run of its own step where it is one (children.py):
1. the production model answers the suite (an evaluate run: exact match on the task set's
   test split, and the red team with a safety guard); its wrong answers, the red team's
   bypasses and its highest-loss validation windows are the failures (failures.py);
2. data aimed at them: new examples of the kinds it gets wrong, and the documents of a retrieve
   run most like its weakest windows (augment.py), written down with the reasons;
3. the candidate: fine-tuned from the production model on the task set plus that data;
4. the candidate answers the same suite; the governance gate (the `governance` group) compares
   both and lists every rule with its measured value; a pass promotes the candidate in the
   model registry (MLflow), and the decision is appended to the hash-chained audit log either
   way, with a model card for the candidate;
5. the next goal (goal.py): the weakest kind, what to reach on it and the budget, which the
   next cycle takes, while step.max_cycles and step.time_budget_s allow.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError
from quark.core.run import Run
from quark.lineage.models import ModelLocation

log = logging.getLogger("quark.improve")
MODEL_ALLOWED = (
    "give an align or finetune run directory (a model fine-tuned to answer: it has a chat "
    "template), or run python launch.py pipeline=sft first"
)
PAIRS_ALLOWED = (
    "give a directory holding train.jsonl, val.jsonl and the suite's split of prompt/response "
    "records (a data=arithmetic_sft run)"
)
MODEL_STEPS = ("align", "finetune")


@dataclass(frozen=True)
class ImproveInputs:
    """The model the first candidate is trained from, the task set, and (optional) the data run
    of its pretraining (high-loss windows) and a retrieve run (documents like them)."""

    model: ModelLocation
    pairs_dir: Path
    corpus: Path | None
    retrieval: Path | None

    def recorded(self) -> dict[str, Path]:
        found: dict[str, Path | None] = {"model": self.model.source, "pairs": self.pairs_dir}
        found |= {"corpus": self.corpus, "retrieval": self.retrieval}
        return {role: path for role, path in found.items() if path is not None}


def inputs(cfg: DictConfig) -> ImproveInputs:
    """The starting model (step.model_dir, the run a pipeline handed over, the registry's
    production, the newest align or finetune run), its task set and, when the cycle looks for
    high-loss windows, its pretraining data and a retrieve run. The registry's production is not
    an input: a pipeline rerun with nothing changed reuses this run even after it promoted."""
    from quark.data.records import check_records
    from quark.governance.registry import production_run
    from quark.lineage.finding import (
        find_run,
        holds_shards,
        missing,
        nearest_ancestor,
        newest_completed,
    )
    from quark.lineage.model_files import check_weights
    from quark.lineage.models import has_chat_template, locate_model
    from quark.steps.finetune import holds_pairs

    step = cfg.step
    check_governance_files(cfg)
    if str(cfg.trainer.devices) != "1" or str(cfg.trainer.num_nodes) != "1":
        raise ConfigError(
            "trainer.devices", f"{cfg.trainer.devices} devices on {cfg.trainer.num_nodes} "
            "node(s): improve trains its candidate inside this process, which other ranks "
            "cannot join", "one device on one node (trainer=cpu or trainer=gpu)",
        )  # fmt: skip
    source = find_run(cfg, MODEL_STEPS, key="step.model_dir", allowed=MODEL_ALLOWED)
    if source is None or (not step.model_dir and not _handed(cfg)):
        output_dir = Path(str(cfg.paths.output_dir))
        source = production_run(cfg.governance, output_dir, str(cfg.experiment_name)) or source
    if source is None:
        raise missing(cfg, "step.model_dir", "align or finetune run", MODEL_ALLOWED)
    model = locate_model(source, "step.model_dir", MODEL_ALLOWED)
    check_weights(model.directory, "step.model_dir", MODEL_ALLOWED)
    if not has_chat_template(model.directory):
        raise ConfigError(
            "step.model_dir",
            f"{model.directory} has no chat template: improve retrains a model fine-tuned to "
            "answer (continued pretraining of a base model is not built)",
            MODEL_ALLOWED,
        )
    split = str(step.suite.split)

    def holds_task_set(path: Path) -> bool:
        return holds_pairs(path) and (path / f"{split}.jsonl").is_file()

    def task_set_run(path: Path) -> bool:
        # a data run: not an earlier cycle's augment/ directory (its train split holds that
        # cycle's additions, which a later cycle would add to again)
        return holds_task_set(path) and _step_of(path) == "data"

    pairs = find_run(
        cfg, ("data",), key="step.pairs_dir", holds=task_set_run, ancestor_of=model.source,
        handed_steps=(), allowed=PAIRS_ALLOWED,
    )  # fmt: skip
    if pairs is None:
        raise missing(cfg, "step.pairs_dir", "data run of prompt/response pairs", PAIRS_ALLOWED)
    if not holds_task_set(pairs):
        raise ConfigError(
            "step.pairs_dir", f"{pairs} holds no train.jsonl, val.jsonl and {split}.jsonl "
            "of prompt/response records", PAIRS_ALLOWED,
        )  # fmt: skip
    check_records(
        pairs, ("train.jsonl", "val.jsonl", f"{split}.jsonl"), "step.pairs_dir", PAIRS_ALLOWED
    )
    corpus = retrieval = None
    if int(step.failures.high_loss_windows) > 0:
        # the data the model was pretrained on (an ancestor: its tokenizer is the model's)
        corpus = nearest_ancestor(
            model.source, lambda path, found: found == "data" and holds_shards(path)
        )
        retrieval = find_run(cfg, ("retrieve",), key="step.retrieval",
                             allowed="give a retrieve run directory")  # fmt: skip
        if retrieval is None:
            retrieval = newest_completed(cfg, ("retrieve",))
        if retrieval is not None and not (retrieval / "index").is_dir():
            raise ConfigError(
                "step.retrieval", f"{retrieval} is not a retrieve run (no index/)",
                "give a retrieve run directory (python launch.py step=retrieve)",
            )  # fmt: skip
    return ImproveInputs(model, pairs, corpus, retrieval)


def check_governance_files(cfg: DictConfig) -> None:
    """The files the governance group names are ones a cycle can use: the registry's SQLite
    database (a missing one is created), the audit log it appends to, and a signed approval
    (its content is the gate's to judge: a bad one is a refusal, not an error)."""
    from quark.core.files import kept_file_problem, sqlite_problem
    from quark.governance.audit import append_problem
    from quark.governance.registry import SQLITE, audit_log_path, registry_uri

    governance = cfg.governance
    output_dir, experiment = Path(str(cfg.paths.output_dir)), str(cfg.experiment_name)
    uri = registry_uri(governance, output_dir, experiment)
    database = Path(uri.removeprefix(SQLITE)) if uri.startswith(SQLITE) else None
    problem = sqlite_problem(database) if database is not None else None
    if problem is not None:
        raise ConfigError(
            "governance.registry.uri", f"{database} {problem}",
            "a SQLite file the registry wrote, a new path, or another database URI",
        )  # fmt: skip
    audit = audit_log_path(governance, output_dir, experiment)
    problem = append_problem(audit)
    if problem is not None:
        raise ConfigError(
            "governance.audit_log", f"{audit} {problem}",
            "the audit log earlier cycles wrote, or a new path (null: registry/audit.jsonl)",
        )  # fmt: skip
    approval = governance.approval.file
    path = Path(str(approval)).expanduser() if approval else None
    problem = kept_file_problem(path) if path is not None else None
    if problem is not None:
        raise ConfigError(
            "governance.approval.file", f"{path} {problem}",
            "a signed approval file (quark audit approve writes one)",
        )  # fmt: skip


def _step_of(path: Path) -> str | None:
    from quark.core.run import MANIFEST, read_manifest

    return read_manifest(path).get("step") if (path / MANIFEST).is_file() else None


def _handed(cfg: DictConfig) -> bool:
    handed = cfg.get("inputs") or {}
    return any(handed.get(step) for step in MODEL_STEPS)


def run(cfg: DictConfig, run: Run, inputs: ImproveInputs) -> dict[str, float]:
    from quark.governance.audit import AuditLog
    from quark.governance.registry import ModelRegistry, audit_log_path
    from quark.improve.goal import Goal

    step = cfg.step
    output_dir, experiment = Path(str(cfg.paths.output_dir)), str(cfg.experiment_name)
    registry = ModelRegistry.open(cfg.governance, output_dir, experiment)
    audit = AuditLog(audit_log_path(cfg.governance, output_dir, experiment))
    log.info("improve: registry %s (model '%s'), audit log %s",
             registry.uri, registry.model_name, audit.path)  # fmt: skip
    gate = Gate(cfg, run, inputs, registry, audit)
    if step.regate:
        return gate.regate()

    # 0. The starting model, registered; with no production yet, it is gated on its own first.
    start = inputs.model.source
    if registry.by_alias("production") is None:
        gate.first_production(start)

    started = time.monotonic()
    cycles: list[dict[str, Any]] = []
    goal: Goal | None = None
    metrics: dict[str, float] = {}
    for number in range(1, int(step.max_cycles) + 1):
        spent = time.monotonic() - started
        if number > 1 and spent >= float(step.time_budget_s):
            log.info("improve: time budget spent (%.0f s of %.0f): no cycle %d",
                     spent, float(step.time_budget_s), number)  # fmt: skip
            break
        cycle = _cycle(cfg, run, inputs, gate, number, start, goal)
        cycles.append(cycle["record"])
        goal, metrics = cycle["goal"], cycle["metrics"]
        run.update(cycles=cycles)
        if cycle["record"]["promoted"]:
            start = Path(cycle["record"]["candidate"]["run_dir"])  # the next cycle's start
        if not cycle["failures"]:
            log.info("improve: the model answered every question: nothing to improve")
            break
    _print_summary(cycles)
    production = registry.by_alias("production")
    metrics |= {"cycles": float(len(cycles)),
                "promotions": float(sum(c["promoted"] for c in cycles)),
                "production_version": float(production.version if production else 0)}  # fmt: skip
    return metrics


class Gate:
    """The governance side of a cycle: evaluations of the models it compares (evaluate runs,
    reused when they exist), the decision, the registry's aliases, model cards and the audit
    log, in that order (the audit record is written before the registry changes, and a failed
    promotion is recorded too)."""

    def __init__(self, cfg: DictConfig, run: Run, inputs: ImproveInputs, registry: Any,
                 audit: Any) -> None:  # fmt: skip
        self.cfg, self.run, self.inputs = cfg, run, inputs
        self.registry, self.audit = registry, audit
        self.suite = _suite_overrides(cfg, inputs.pairs_dir)

    def evaluate(self, run_dir: Path) -> Any:
        from quark.improve.children import run_child

        return run_child(self.cfg, "evaluate", [f"step.model_dir={run_dir}", *self.suite])

    def decide(self, label: str, name: str, version: Any, evaluated: Any, production: Any) -> Any:
        """The gate on `version` (evaluated), against production (None: there is none); its
        model card; the audit record; the promotion on a pass."""
        from quark.core.run import describe_input
        from quark.governance.model_card import write_model_card
        from quark.governance.policy import decide

        reference = self.evaluate(production.run_dir) if production is not None else None
        decision = decide(
            self.cfg.governance, evaluated.metrics, reference.metrics if reference else None,
            candidate_id=f"version {version.version} ({version.run_dir})",
            incumbent_id=f"version {production.version} ({production.run_dir})" if production else None,
            candidate_digest=describe_input(version.run_dir)["sha256"],
        )  # fmt: skip
        card = write_model_card(
            self.run.path(name), version.run_dir, evaluation=evaluated.metrics,
            safety={k: v for k, v in evaluated.metrics.items() if k.startswith("red_team")} or None,
            decision=decision, intended_use=INTENDED_USE, limits=LIMITS,
        )  # fmt: skip
        self.run.add_output(name)
        self.registry.attach_card(version, card)
        self.audit.append(
            "decision", run_dir=str(self.run.dir), candidate=version.version,
            candidate_run=str(version.run_dir),
            production=production.version if production else None, passed=decision.passed,
            decision=decision.as_dict(), card=str(card),
        )  # fmt: skip
        archived = None
        if decision.passed:
            try:
                archived = self.registry.promote(version)
            except Exception as exc:
                self.audit.append("promotion_failed", version=version.version,
                                  error=" ".join(str(exc).split()))  # fmt: skip
                raise
            self.audit.append("promotion", version=version.version, run_dir=str(version.run_dir),
                              archived=archived.version if archived else None)  # fmt: skip
        _print_decision(decision, label)
        return SimpleNamespace(decision=decision, card=card, archived=archived,
                               reference=reference)  # fmt: skip

    def register(self, run_dir: Path, metrics: dict[str, float] | None = None) -> Any:
        from quark.lineage.finding import ancestors

        lineage = [
            {"path": str(path), "step": item.get("step"), "sha256": item.get("sha256")}
            for path, item in ancestors(run_dir)
        ]
        return self.registry.register(run_dir, lineage=lineage, metrics=metrics or {},
                                      description=f"a {self.inputs.pairs_dir.name} model")  # fmt: skip

    def first_production(self, start: Path) -> None:
        """No production yet: the starting model is registered and gated alone (the rules that
        need no incumbent: required metrics, safety, approval); a pass makes it production."""
        evaluated = self.evaluate(start)
        version = self.register(start, evaluated.metrics)
        log.info("improve: the registry has no production model: gating %s (version %d)",
                 start, version.version)  # fmt: skip
        self.decide(
            "first production", f"model_card_v{version.version}.md", version, evaluated, None
        )

    def regate(self) -> dict[str, float]:
        """step.regate: the registry's candidate gated again, without training (after a person
        approved it, or the policy changed); promoted on a pass."""
        candidate = self.registry.by_alias("candidate")
        if candidate is None:
            raise ConfigError(
                "step.regate", f"the registry {self.registry.uri} has no candidate to gate again",
                "run a cycle first: python launch.py step=improve",
            )  # fmt: skip
        evaluated = self.evaluate(candidate.run_dir)
        production = self.registry.by_alias("production")
        gated = self.decide(
            "again", f"model_card_v{candidate.version}_regated.md", candidate, evaluated, production
        )
        self.run.update(
            regated={"candidate": candidate.version, "decision": gated.decision.as_dict()}
        )
        primary = str(self.cfg.governance.primary_metric)
        return {f"candidate/{primary}": evaluated.metrics.get(primary, float("nan")),
                "promotions": float(gated.decision.passed)}  # fmt: skip


def _cycle(
    cfg: DictConfig, run: Run, inputs: ImproveInputs, gate: Gate, number: int, start: Path,
    goal: Any,
) -> dict[str, Any]:  # fmt: skip
    """One cycle: failures, data, candidate, evaluation, gate, promotion, goal."""
    from quark.core.files import write_json_atomic
    from quark.improve.augment import augment_pairs, similar_documents
    from quark.improve.children import child_record, run_child
    from quark.improve.failures import Failures, high_loss_windows, read_answers, read_bypasses
    from quark.improve.goal import next_goal

    step = cfg.step
    here = f"cycle_{number}"

    # 1. The starting model on the suite; what it got wrong.
    start_eval = gate.evaluate(start)
    failures = Failures()
    read_answers(start_eval.run_dir, failures)
    read_bypasses(start_eval.run_dir, failures)
    if inputs.corpus is not None and int(step.failures.high_loss_windows) > 0:
        model_dir = start / "hf"
        failures.windows = high_loss_windows(
            model_dir, inputs.corpus, _seq_len(model_dir), int(step.failures.windows_scanned),
            int(step.failures.high_loss_windows),
        )  # fmt: skip
    failures.write(run.path(here, "failures.jsonl"))
    run.add_output(f"{here}/failures.jsonl")
    log.info("improve: cycle %d: %d wrong answers of %d (%s), %d red-team bypasses, %d high-loss "
             "windows", number, len(failures.wrong), sum(failures.asked.values()),
             _by_kind(failures), len(failures.bypasses), len(failures.windows))  # fmt: skip
    record: dict[str, Any] = {"cycle": number, "start": str(start),
                              "failures": failures.summary(),
                              "start_evaluation": child_record(start_eval)}  # fmt: skip
    primary = str(cfg.governance.primary_metric)
    if not failures.wrong:
        record |= {"promoted": False, "skipped": "no wrong answers"}
        found = {f"start/{primary}": start_eval.metrics.get(primary, float("nan"))}
        return {"record": record, "goal": goal, "metrics": found, "failures": False}

    # 2. Data aimed at the failures.
    augmentation = augment_pairs(
        inputs.pairs_dir, failures, run.path(here, "augment", "train.jsonl").parent,
        per_failure=int(step.augment.per_failure),
        max_new=goal.max_new if goal is not None else int(step.augment.max_new),
        seed=int(cfg.seed) + number, focus=goal.kind if goal is not None else None,
        held_out=(str(step.suite.split),),
    )  # fmt: skip
    if not augmentation.total:
        log.warning("improve: cycle %d: no example could be generated for these failures (kinds "
                    "it does not generate): the candidate trains on the task set alone", number)  # fmt: skip
    if failures.windows and inputs.retrieval is not None:
        augmentation.documents = similar_documents(
            inputs.retrieval, failures.windows, int(step.failures.documents_per_window)
        )
    write_json_atomic(run.path(here, "augmentation.json"), augmentation.as_dict())
    for name in ("augment", "augmentation.json"):
        run.add_output(f"{here}/{name}")
    log.info("improve: cycle %d: %d new examples, %d repeated, on %d of the task set's %d",
             number, sum(augmentation.added.values()), sum(augmentation.repeated.values()),
             augmentation.total, augmentation.original)  # fmt: skip

    # 3. The candidate, fine-tuned from the starting model on the task set and the new data.
    steps = goal.steps if goal is not None else int(step.retrain.steps)
    retrain = [f"step.init_from={start}", f"step.data_dir={run.dir / here / 'augment'}",
               f"step.max_steps={steps}", f"step.val_every_n_steps={steps}",
               f"step.checkpoint_every_n_steps={steps}",
               *([f"step.optim.lr={step.retrain.lr}"] if step.retrain.lr else []),
               *step.retrain.overrides]  # fmt: skip
    candidate = run_child(cfg, "finetune", retrain)

    # 4. The candidate on the same suite; the gate against production; promotion; the audit.
    candidate_eval = gate.evaluate(candidate.run_dir)
    version = gate.register(candidate.run_dir, candidate_eval.metrics)
    gate.registry.set_alias("candidate", version)
    production = gate.registry.by_alias("production")
    gated = gate.decide(
        f"cycle {number}", f"{here}/model_card.md", version, candidate_eval, production
    )
    decision = gated.decision

    # 5. The next goal, from what the next cycle's starting model gets wrong.
    measured = Failures()
    read_answers((candidate_eval if decision.passed else start_eval).run_dir, measured)
    goal = next_goal(
        measured.accuracy_by_kind(), dict(measured.asked), steps_used=steps,
        base_steps=int(step.retrain.steps), max_steps=int(step.retrain.max_steps),
        base_new=int(step.augment.max_new), promoted=decision.passed,
    )  # fmt: skip
    write_json_atomic(run.path(here, "goal.json"), goal.as_dict())
    run.add_output(f"{here}/goal.json")
    record |= {
        "augmentation": {"added": sum(augmentation.added.values()),
                         "repeated": sum(augmentation.repeated.values())},
        "candidate": child_record(candidate), "candidate_version": version.version,
        "candidate_evaluation": child_record(candidate_eval),
        "production": str(production.run_dir) if production else None,
        "production_version": production.version if production else None,
        "decision": decision.as_dict(), "promoted": decision.passed,
        "archived_version": gated.archived.version if gated.archived else None,
        "model_card": str(gated.card), "goal": goal.as_dict(),
    }  # fmt: skip
    reference = gated.reference.metrics if gated.reference else {}
    found = {
        f"candidate/{primary}": candidate_eval.metrics.get(primary, float("nan")),
        f"production/{primary}": reference.get(primary, float("nan")),
        "wrong_answers": float(len(failures.wrong)),
        "examples_added": float(augmentation.total),
    }
    return {"record": record, "goal": goal, "metrics": found, "failures": True}


INTENDED_USE = (
    "Research and testing of the Quark lifecycle: answering the generated task set it was "
    "fine-tuned and evaluated on. Not for decisions that matter, nor for any other task."
)
LIMITS = [
    "Measured only on the generated task set and, where configured, the red-team suite.",
    "A small model: it answers in the learned form even when it is wrong.",
    "The gate compares against the production model on one held-out split; a small split "
    "makes small gains noise.",
]


def _suite_overrides(cfg: DictConfig, pairs_dir: Path) -> list[str]:
    suite = cfg.step.suite
    tasks = ",".join(str(t) for t in suite.tasks)
    return [f"step.tasks=[{tasks}]", f"step.exact_match.data_dir={pairs_dir}",
            f"step.exact_match.split={suite.split}", f"step.exact_match.samples={suite.samples}",
            *suite.overrides]  # fmt: skip


def _seq_len(model_dir: Path) -> int:
    import json

    positions = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings")
    return min(128, int(positions or 128))


def _by_kind(failures: Any) -> str:
    wrong = failures.summary()["wrong_by_kind"]
    return ", ".join(f"{kind}: {count}" for kind, count in list(wrong.items())[:4]) or "none"


def _print_decision(decision: Any, label: str) -> None:
    from rich.markup import escape

    from quark.core.console import wide_console

    table = decision.table()
    verdict = "PROMOTED" if decision.passed else "REFUSED"
    against = decision.incumbent or "no production model"
    table.title = escape(
        f"Governance gate, {label}: {verdict} ({decision.candidate} against {against})"
    )
    wide_console().print(table)


def _added(augmentation: dict[str, int] | None) -> str:
    if not augmentation:
        return ""
    return f"{augmentation['added']} new" + (
        f" + {augmentation['repeated']} repeated" if augmentation["repeated"] else ""
    )


def _print_summary(cycles: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    table = Table(title="Improve", title_justify="left")
    for column in ("cycle", "wrong", "added", "candidate", "promoted", "next goal"):
        table.add_column(column)
    for cycle in cycles:
        goal = cycle.get("goal") or {}
        table.add_row(
            str(cycle["cycle"]), str(cycle["failures"]["wrong_answers"]),
            _added(cycle.get("augmentation")),
            cycle.get("candidate", {}).get("run_dir", ""), "yes" if cycle["promoted"] else "no",
            f"{goal.get('kind')} -> {goal.get('aim')} ({goal.get('steps')} steps)" if goal else "",
        )  # fmt: skip
    wide_console().print(table)
