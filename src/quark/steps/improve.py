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
    from quark.governance.registry import production_run
    from quark.lineage.finding import find_run, holds_shards, missing, newest_completed
    from quark.lineage.models import has_chat_template, locate_model
    from quark.steps.finetune import holds_pairs

    step = cfg.step
    source = find_run(cfg, MODEL_STEPS, key="step.model_dir", allowed=MODEL_ALLOWED)
    if source is None or (not step.model_dir and not _handed(cfg)):
        output_dir = Path(str(cfg.paths.output_dir))
        source = production_run(cfg.governance, output_dir, str(cfg.experiment_name)) or source
    if source is None:
        raise missing(cfg, "step.model_dir", "align or finetune run", MODEL_ALLOWED)
    model = locate_model(source, "step.model_dir", MODEL_ALLOWED)
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

    pairs = find_run(
        cfg, ("data",), key="step.pairs_dir", holds=holds_task_set, ancestor_of=model.source,
        handed_steps=(), allowed=PAIRS_ALLOWED,
    )  # fmt: skip
    if pairs is None:
        raise missing(cfg, "step.pairs_dir", "data run of prompt/response pairs", PAIRS_ALLOWED)
    if not holds_task_set(pairs):
        raise ConfigError(
            "step.pairs_dir", f"{pairs} holds no train.jsonl, val.jsonl and {split}.jsonl "
            "of prompt/response records", PAIRS_ALLOWED,
        )  # fmt: skip
    corpus = retrieval = None
    if int(step.failures.high_loss_windows) > 0:
        corpus = find_run(cfg, ("data",), holds=holds_shards, ancestor_of=model.source,
                          handed_steps=())  # fmt: skip
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

    # 0. The incumbent: the registry's production, or the starting model as its first version.
    start = inputs.model.source
    production = registry.by_alias("production")
    if production is None:
        production = _register(registry, start, inputs)
        registry.set_alias("production", production)
        audit.append("registration", version=production.version, run_dir=str(start),
                     alias="production", reason="the registry had no production model")  # fmt: skip
        log.info("improve: registered %s as version %d, production", start, production.version)

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
        cycle = _cycle(cfg, run, inputs, registry, audit, number, goal)
        cycles.append(cycle["record"])
        goal = cycle["goal"]
        production = registry.by_alias("production") or production
        metrics = cycle["metrics"]
        run.update(cycles=cycles)
        if not cycle["failures"]:
            log.info("improve: the production model answered every question: nothing to improve")
            break
    _print_summary(run, cycles)
    metrics |= {"cycles": float(len(cycles)),
                "promotions": float(sum(c["promoted"] for c in cycles)),
                "production_version": float(production.version)}  # fmt: skip
    return metrics


def _cycle(
    cfg: DictConfig, run: Run, inputs: ImproveInputs, registry: Any, audit: Any, number: int,
    goal: Any,
) -> dict[str, Any]:  # fmt: skip
    """One cycle: failures, data, candidate, evaluation, gate, promotion, goal."""
    from quark.core.files import write_json_atomic
    from quark.core.run import describe_input
    from quark.governance.model_card import write_model_card
    from quark.governance.policy import decide
    from quark.improve.augment import augment_pairs, similar_documents
    from quark.improve.children import child_record, run_child
    from quark.improve.failures import Failures, high_loss_windows, read_answers, read_bypasses
    from quark.improve.goal import next_goal

    step = cfg.step
    here = f"cycle_{number}"
    production = registry.by_alias("production")
    assert production is not None  # run() registered one

    # 1. The production model on the suite; what it got wrong.
    suite = _suite_overrides(cfg, inputs.pairs_dir)
    incumbent_eval = run_child(cfg, "evaluate", [f"step.model_dir={production.run_dir}", *suite])
    failures = Failures()
    read_answers(incumbent_eval.run_dir, failures)
    read_bypasses(incumbent_eval.run_dir, failures)
    if inputs.corpus is not None and int(step.failures.high_loss_windows) > 0:
        model_dir = production.run_dir / "hf"
        failures.windows = high_loss_windows(
            model_dir, inputs.corpus, _seq_len(model_dir), int(step.failures.windows_scanned),
            int(step.failures.high_loss_windows),
        )  # fmt: skip
    failures.write(run.path(here, "failures.jsonl"))
    log.info("improve: cycle %d: %d wrong answers of %d (%s), %d red-team bypasses, %d high-loss "
             "windows", number, len(failures.wrong), sum(failures.asked.values()),
             _by_kind(failures), len(failures.bypasses), len(failures.windows))  # fmt: skip
    record: dict[str, Any] = {"cycle": number, "production": str(production.run_dir),
                              "production_version": production.version,
                              "failures": failures.summary(),
                              "incumbent_evaluation": child_record(incumbent_eval)}  # fmt: skip
    if not failures.wrong:
        record |= {"promoted": False, "skipped": "no wrong answers"}
        return {
            "record": record,
            "goal": goal,
            "metrics": incumbent_eval.metrics,
            "failures": False,
        }

    # 2. Data aimed at the failures.
    augmentation = augment_pairs(
        inputs.pairs_dir, failures, run.path(here, "augment", "train.jsonl").parent,
        per_failure=int(step.augment.per_failure),
        max_new=goal.max_new if goal is not None else int(step.augment.max_new),
        seed=int(cfg.seed) + number, focus=goal.kind if goal is not None else None,
    )  # fmt: skip
    if failures.windows and inputs.retrieval is not None:
        augmentation.documents = similar_documents(
            inputs.retrieval, failures.windows, int(step.failures.documents_per_window)
        )
    write_json_atomic(run.path(here, "augmentation.json"), augmentation.as_dict())
    log.info("improve: cycle %d: %d new examples, %d repeated, on %d of the task set's %d",
             number, sum(augmentation.added.values()), sum(augmentation.repeated.values()),
             augmentation.total, augmentation.original)  # fmt: skip

    # 3. The candidate, fine-tuned from production on the task set and the new data.
    steps = goal.steps if goal is not None else int(step.retrain.steps)
    retrain = [f"step.init_from={production.run_dir}", f"step.data_dir={run.dir / here / 'augment'}",
               f"step.max_steps={steps}", f"step.val_every_n_steps={steps}",
               f"step.checkpoint_every_n_steps={steps}",
               *([f"step.optim.lr={step.retrain.lr}"] if step.retrain.lr else []),
               *step.retrain.overrides]  # fmt: skip
    candidate = run_child(cfg, "finetune", retrain)

    # 4. The candidate on the same suite; the gate; promotion; the audit record either way.
    candidate_eval = run_child(cfg, "evaluate", [f"step.model_dir={candidate.run_dir}", *suite])
    version = _register(registry, candidate.run_dir, inputs, candidate_eval.metrics)
    registry.set_alias("candidate", version)
    decision = decide(
        cfg.governance, candidate_eval.metrics, incumbent_eval.metrics,
        candidate_id=f"version {version.version} ({candidate.run_dir})",
        incumbent_id=f"version {production.version} ({production.run_dir})",
        candidate_digest=describe_input(candidate.run_dir)["sha256"],
    )  # fmt: skip
    card = write_model_card(
        run.path(here, "model_card.md"), candidate.run_dir,
        evaluation=candidate_eval.metrics,
        safety={k: v for k, v in candidate_eval.metrics.items() if k.startswith("red_team")} or None,
        decision=decision, intended_use=INTENDED_USE, limits=LIMITS,
    )  # fmt: skip
    audit.append("decision", cycle=number, run_dir=str(run.dir), candidate=version.version,
                 candidate_run=str(candidate.run_dir), production=production.version,
                 passed=decision.passed, decision=decision.as_dict(), card=str(card))  # fmt: skip
    archived = None
    if decision.passed:
        archived = registry.promote(version)
        audit.append("promotion", cycle=number, version=version.version,
                     run_dir=str(candidate.run_dir),
                     archived=archived.version if archived else None)  # fmt: skip
    _print_decision(decision, number)

    # 5. The next goal, from what production now gets wrong.
    measured = Failures()
    read_answers((candidate_eval if decision.passed else incumbent_eval).run_dir, measured)
    goal = next_goal(
        measured.accuracy_by_kind(), dict(measured.asked), base_steps=int(step.retrain.steps),
        max_steps=int(step.retrain.max_steps), base_new=int(step.augment.max_new),
        promoted=decision.passed, previous=goal,
    )  # fmt: skip
    write_json_atomic(run.path(here, "goal.json"), goal.as_dict())
    for name in ("failures.jsonl", "augment", "augmentation.json", "model_card.md", "goal.json"):
        run.add_output(f"{here}/{name}")
    record |= {
        "augmentation": {"added": sum(augmentation.added.values()),
                         "repeated": sum(augmentation.repeated.values())},
        "candidate": child_record(candidate), "candidate_version": version.version,
        "candidate_evaluation": child_record(candidate_eval),
        "decision": decision.as_dict(), "promoted": decision.passed,
        "archived_version": archived.version if archived else None,
        "model_card": str(card), "goal": goal.as_dict(),
    }  # fmt: skip
    primary = str(cfg.governance.primary_metric)
    found = {
        f"candidate/{primary}": candidate_eval.metrics.get(primary, float("nan")),
        f"incumbent/{primary}": incumbent_eval.metrics.get(primary, float("nan")),
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


def _register(
    registry: Any, run_dir: Path, inputs: ImproveInputs, metrics: dict[str, float] | None = None
) -> Any:
    from quark.lineage.finding import ancestors

    lineage = [
        {"path": str(path), "step": item.get("step"), "sha256": item.get("sha256")}
        for path, item in ancestors(run_dir)
    ]
    return registry.register(run_dir, lineage=lineage, metrics=metrics or {},
                             description=f"trained on {inputs.pairs_dir}")  # fmt: skip


def _seq_len(model_dir: Path) -> int:
    import json

    positions = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings")
    return min(128, int(positions or 128))


def _by_kind(failures: Any) -> str:
    wrong = failures.summary()["wrong_by_kind"]
    return ", ".join(f"{kind}: {count}" for kind, count in list(wrong.items())[:4]) or "none"


def _print_decision(decision: Any, number: int) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    verdict = "PROMOTED" if decision.passed else "REFUSED"
    table = Table(title=f"Governance gate, cycle {number}: {verdict}", title_justify="left")
    for column in ("rule", "measured", "threshold", "result"):
        table.add_column(column)
    for rule in decision.rules:
        table.add_row(rule.rule, rule.measured, rule.threshold, "pass" if rule.passed else "FAIL")
    wide_console().print(table)


def _added(augmentation: dict[str, int] | None) -> str:
    if not augmentation:
        return ""
    return f"{augmentation['added']} new" + (
        f" + {augmentation['repeated']} repeated" if augmentation["repeated"] else ""
    )


def _print_summary(run: Run, cycles: list[dict[str, Any]]) -> None:
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
