"""Step 9, evaluate: how good a model is, whether it got worse, and a report to read.

    python launch.py step=evaluate                       # the newest finetune, else pretrain run
    python launch.py step=evaluate step.model_dir=outputs/demo/optimize/<time>   # an export
    python launch.py step=evaluate step.lm_eval.tasks=[quark_arithmetic]
    python launch.py step=evaluate step.regression.baseline=outputs/demo/evaluate/<time>

Measures a pretrain or finetune run's hf/ model, a Hugging Face model directory, or an optimize
run's export in that export's own runtime (quark.export's decoders): perplexity on a data run's
validation windows (teacher forced, as pretraining's val_loss), task accuracy as greedy exact
match on the arithmetic test split (for a model with a chat template, i.e. fine-tuned), and
lm-eval-harness tasks through lm-eval's HFLM, offline. Writes metrics.json, answers.jsonl,
plots/ and a self-contained report.html. With step.regression.baseline (a run directory or a
metrics file), a metric worse than its baseline beyond tolerance fails the run, exit 1, with
one line naming every regressed metric.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError, StepFailed
from quark.core.run import Run
from quark.data.records import check_records
from quark.eval.evaluated_model import ALLOWED, EVALUATED_EXPORTS, KEY
from quark.eval.harness import ARITHMETIC
from quark.eval.pairs import ALLOWED as PAIRS_ALLOWED
from quark.eval.pairs import KEY as PAIRS_KEY
from quark.eval.pairs import questions_dir
from quark.lineage.data import validation_data
from quark.lineage.finding import holds_split
from quark.lineage.model_files import check_weights
from quark.lineage.models import ModelLocation, find_model, has_chat_template
from quark.models.hf import check_seq_len

HEADLINE = ("exact_match", "perplexity")
RED_TEAM_DATA_ALLOWED = (
    "give a data=safety_requests run or a directory with train.jsonl, val.jsonl and test.jsonl "
    "of text/label records (null: requests generated from the seed)"
)


def measured(cfg: DictConfig, model: ModelLocation) -> tuple[list[str], list[str]]:
    """The tasks of step.tasks to run, and notes on any left out."""
    chat = has_chat_template(model.directory)
    if cfg.step.tasks is not None:
        tasks = list(cfg.step.tasks)
        for task in ("exact_match", "rag"):
            if task in tasks and not chat:
                raise ConfigError(
                    "step.tasks",
                    f"{task} needs a model with a chat template and {model.directory} has none "
                    "(a pretrain-only model)",
                    f"fine-tune it first (step=finetune), or leave {task} out",
                )
        return tasks, []
    if chat:
        return ["perplexity", "exact_match"], []
    return ["perplexity"], [
        f"Task accuracy (exact_match) not measured: {model.directory} has no chat template, so "
        "the model was not fine-tuned to answer questions (python launch.py step=finetune)."
    ]


@dataclass(frozen=True)
class EvaluateInputs:
    """What evaluation reads: the model, the data run for perplexity, the directory of the
    exact-match split, and the regression baseline, each when the configured tasks need it."""

    model: ModelLocation
    tasks: list[str]
    notes: list[str]
    data_dir: Path | None
    split_dir: Path | None
    baseline: Path | None
    classifier: Path | None = None  # safety=classifier's model (red_team)
    red_team_data: Path | None = None  # the held-out requests (red_team)
    retrieval: Path | None = None  # the retrieve run (rag)
    # perplexity: (tokens per window, windows, where that shape comes from)
    windows: tuple[int, int, str] | None = None

    def recorded(self) -> dict[str, Path]:
        found = {"model": self.model.source, "data": self.data_dir}
        found |= {"questions": self.split_dir, "baseline": self.baseline}
        found |= {"safety_classifier": self.classifier, "red_team_data": self.red_team_data}
        found |= {"retrieval_index": self.retrieval}
        return {role: path for role, path in found.items() if path is not None}


def inputs(cfg: DictConfig) -> EvaluateInputs:
    """The model (quark.lineage: step.model_dir, else the run handed over, else the newest
    align, finetune or pretrain run), the data run (perplexity), the split's directory (exact match)
    and the baseline; bad input is refused here, before the run starts."""
    from quark.eval.regression import read_baseline

    model = find_model(cfg, KEY, ALLOWED, exports=EVALUATED_EXPORTS)
    check_weights(model.directory, KEY, ALLOWED)
    tasks, notes = measured(cfg, model)
    data_dir = None
    windows = None
    if "perplexity" in tasks:
        windows = perplexity_windows(cfg, model)
        check_seq_len(windows[0], model.positions or windows[0])
        data_dir = validation_data(cfg, model)
    split = questions_dir(cfg, model.source)
    if "exact_match" in tasks:
        if split is None:
            raise ConfigError(
                PAIRS_KEY,
                f"no completed data run holding {cfg.step.exact_match.split}.jsonl in "
                f"experiment '{cfg.experiment_name}' under {cfg.paths.output_dir}",
                PAIRS_ALLOWED,
            )
        if not holds_split(split, str(cfg.step.exact_match.split)):
            raise ConfigError(
                PAIRS_KEY, f"{split} has no {cfg.step.exact_match.split}.jsonl", PAIRS_ALLOWED
            )
        check_records(split, (f"{cfg.step.exact_match.split}.jsonl",), PAIRS_KEY, PAIRS_ALLOWED)
    if not ("exact_match" in tasks or ARITHMETIC in cfg.step.lm_eval.tasks):
        split = None
    include = cfg.step.lm_eval.include_path
    if include and not Path(str(include)).expanduser().is_dir():
        raise ConfigError(
            "step.lm_eval.include_path",
            f"{include} is not a directory",
            "give a directory of lm-eval task YAML files",
        )
    if cfg.step.lm_eval.tasks and not model.in_torch:
        raise ConfigError(
            "step.lm_eval.tasks",
            f"lm-eval runs Hugging Face models and {model.label} is not one",
            f"evaluate the model it was exported from: step.model_dir={model.origin}",
        )
    baseline = None
    if cfg.step.regression.baseline:
        baseline = read_baseline(str(cfg.step.regression.baseline)).source
    classifier = red_team_data = None
    if "red_team" in tasks:
        classifier, red_team_data = _red_team_inputs(cfg, model)
    retrieval = _rag_index(cfg, model) if "rag" in tasks else None
    return EvaluateInputs(
        model, tasks, notes, data_dir, split, baseline, classifier, red_team_data, retrieval,
        windows,
    )  # fmt: skip


# perplexity's windows when neither the config nor a pretrain run says
DEFAULT_WINDOWS = (128, 32)


def perplexity_windows(cfg: DictConfig, model: ModelLocation) -> tuple[int, int, str]:
    """Tokens per window and windows for perplexity: step.seq_len and step.val_samples where
    set; else those of the pretrain run the model comes from (the model itself, or its nearest
    pretrain ancestor), so its val_ppl and this perplexity are measured on the same windows;
    else 128 and 32."""
    from omegaconf import OmegaConf

    from quark.lineage.finding import nearest_ancestor

    seq_len, count = cfg.step.seq_len, cfg.step.val_samples
    if seq_len is not None and count is not None:
        return int(seq_len), int(count), "step.seq_len, step.val_samples"
    pretrain = model.source if model.step == "pretrain" else None
    pretrain = pretrain or nearest_ancestor(model.source, lambda _p, step: step == "pretrain")
    config = pretrain / "config.yaml" if pretrain is not None else None
    if config is not None and config.is_file():
        trained = OmegaConf.load(config).step
        seq_len = seq_len or int(trained.seq_len)
        count = count or int(trained.val_samples)
        return int(seq_len), int(count), f"the validation windows of {pretrain}"
    seq_len, count = seq_len or DEFAULT_WINDOWS[0], count or DEFAULT_WINDOWS[1]
    return int(seq_len), int(count), "the defaults (no pretrain run to take them from)"


def _rag_index(cfg: DictConfig, model: ModelLocation) -> Path:
    """step.rag.index, else the newest completed retrieve run of the experiment."""
    from quark.core.run import verify_run
    from quark.lineage.finding import find_run, missing

    allowed = "give a retrieve run directory (python launch.py step=retrieve)"
    if not model.in_torch:
        raise ConfigError(
            "step.tasks", f"rag generates in torch and {model.label} is not a torch model",
            f"evaluate the model it was exported from: step.model_dir={model.origin}",
        )  # fmt: skip
    found = find_run(cfg, ("retrieve",), key="step.rag.index", allowed=allowed)
    if found is None:
        raise missing(cfg, "step.rag.index", "retrieve run", allowed)
    step = verify_run(found, "step.rag.index", allowed).get("step")
    if step != "retrieve" or not (found / "graph" / "graph.json").is_file():
        raise ConfigError(
            "step.rag.index", f"{found} is not a retrieve run with a code graph ({step} run)",
            allowed,
        )  # fmt: skip
    return found


def _rag(
    cfg: DictConfig,
    run: Run,
    index: Path,
    model: Any,
    tokenizer: Any,
    stops: list[int],
    described: dict[str, str],
) -> dict[str, float]:
    from quark.eval.rag import measure_rag, rag_questions
    from quark.serve.rag import load_retrieval

    rag = cfg.step.rag
    positions = int(getattr(model.config, "max_position_embeddings", 512))
    budget = int(rag.max_context_tokens or positions // 2)
    retrieval = load_retrieval(index, int(rag.k), str(rag.mode), budget)
    if str(rag.mode) not in retrieval.index.modes:
        raise ConfigError(
            "step.rag.mode", f"'{rag.mode}' is not a mode of {index}",
            f"allowed: {', '.join(retrieval.index.modes)}",
        )  # fmt: skip
    questions = rag_questions(retrieval.index.graph, int(rag.questions))
    if not questions:
        raise ConfigError(
            "step.rag.index", f"{index}'s corpus gives no questions (no classes or functions)"
        )
    described["rag index"] = str(index)
    found = measure_rag(
        model, tokenizer, retrieval, questions, stops, int(rag.max_new_tokens), int(rag.batch_size)
    )
    found.write(run.path("rag", "answers.jsonl"))
    run.add_output("rag")
    return found.metrics()


def _red_team_inputs(cfg: DictConfig, model: ModelLocation) -> tuple[Path | None, Path | None]:
    """The guard's classifier (safety=classifier) and the held-out requests: step.red_team.data_dir,
    else the data the classifier was trained on, else the newest data run of labelled requests
    with a test split (None: generated from the seed)."""
    from quark.data.labelled import holds_labelled
    from quark.lineage.finding import find_run
    from quark.safety.guard import classifier_dir

    if cfg.get("safety") is None or str(cfg.safety.name) == "none":
        raise ConfigError(
            "safety",
            "is none: the red_team task measures the safety guard against the bare model",
            "add safety=rules or safety=classifier",
        )
    if model.directory.joinpath("model.gguf").is_file() or model.export not in (
        None, "hf", "onnx", "onnx_int8",
    ):  # fmt: skip
        raise ConfigError(
            "step.tasks",
            f"red_team serves the model and {model.label} is not one step=serve runs",
            f"evaluate the model it was exported from: step.model_dir={model.origin}",
        )
    classifier = classifier_dir(cfg)

    def holds_test(run: Path) -> bool:  # val.jsonl: the adaptive attack's seeds
        return holds_labelled(run) and (run / "test.jsonl").is_file()

    source = classifier.parent if classifier is not None else None
    data = find_run(
        cfg, ("data",), key="step.red_team.data_dir", holds=holds_test, ancestor_of=source,
        allowed=RED_TEAM_DATA_ALLOWED,
    )  # fmt: skip
    if data is not None and not holds_test(data):
        raise ConfigError(
            "step.red_team.data_dir",
            f"{data} holds no test.jsonl of text/label records",
            RED_TEAM_DATA_ALLOWED,
        )
    if data is not None:
        splits = ("train.jsonl", "val.jsonl", "test.jsonl")
        check_records(data, splits, "step.red_team.data_dir", RED_TEAM_DATA_ALLOWED)
    return classifier, data


def run(cfg: DictConfig, run: Run, inputs: EvaluateInputs) -> dict[str, float]:
    from quark.eval import harness

    harness.go_offline()  # before transformers is imported: it reads these once
    if cfg.step.lm_eval.tasks:
        harness.quiet_lm_eval()
    import torch
    from transformers import AutoTokenizer

    from quark.data.pairs import read_pairs, render_prompts, write_answers
    from quark.eval.evaluated_model import load_decoder, load_torch_model, stop_token_ids
    from quark.eval.exact_match import decoder_exact_match, greedy_exact_match
    from quark.eval.pairs import generated_pairs
    from quark.eval.perplexity import perplexity
    from quark.export import quiet_exporters
    from quark.export.decoding import cpu_threads
    from quark.export.validation import validation_windows

    quiet_exporters()
    if cfg.step.threads:
        torch.set_num_threads(int(cfg.step.threads))
    step, lm_eval = cfg.step, cfg.step.lm_eval
    model, tasks, notes = inputs.model, inputs.tasks, inputs.notes
    chat = has_chat_template(model.directory)
    described = {"model": model.label}

    # 0. lm-eval task names first: an unknown one is bad input before anything loads.
    arithmetic = run.dir / "lm_eval" / f"{harness.ARITHMETIC}.jsonl"
    include = Path(str(lm_eval.include_path)).expanduser() if lm_eval.include_path else None
    manager = (
        harness.task_manager(lm_eval.tasks, include, {harness.ARITHMETIC_PATH_KEY: str(arithmetic)})
        if lm_eval.tasks
        else None
    )

    # 1. The model: in torch, or in its export's runtime.
    tokenizer = AutoTokenizer.from_pretrained(model.directory)
    torch_model = load_torch_model(model) if model.in_torch else None
    decoder = load_decoder(model, torch_model, cpu_threads())
    described["runtime"] = decoder.runtime
    metrics: dict[str, float] = {}

    # 2. Perplexity on the data run's validation windows, teacher forced.
    if "perplexity" in tasks:
        data_dir = inputs.data_dir
        assert data_dir is not None  # inputs() found it
        described["perplexity data"] = str(data_dir)
        assert inputs.windows is not None
        seq_len, count, origin = inputs.windows
        described["perplexity windows"] = f"the first {count} of {seq_len} tokens ({origin})"
        windows = validation_windows(data_dir, seq_len, count)
        metrics.update(perplexity(decoder, windows, int(step.batch_size)))

    # 3. Task accuracy: greedy answers, exactly equal to the references.
    split_dir = inputs.split_dir
    split = split_dir / f"{step.exact_match.split}.jsonl" if split_dir else None
    stops = stop_token_ids(model, tokenizer)
    if "exact_match" in tasks:
        assert split is not None  # inputs() made sure
        described["exact match questions"] = str(split)
        pairs = read_pairs(
            split,
            key=PAIRS_KEY,
            allowed=PAIRS_ALLOWED,
            purpose="task accuracy",
            count=int(step.exact_match.samples),
        )
        system = str(step.exact_match.system_prompt) if step.exact_match.system_prompt else None
        prompts = render_prompts(tokenizer, pairs, system)
        references = [pair.response for pair in pairs]
        options: dict[str, Any] = dict(
            stop_token_ids=stops, max_new_tokens=int(step.exact_match.max_new_tokens)
        )
        found = (
            greedy_exact_match(
                torch_model,
                tokenizer,
                prompts,
                references,
                **options,
                batch_size=int(step.exact_match.batch_size),
            )
            if torch_model is not None
            else decoder_exact_match(decoder, tokenizer, prompts, references, **options)
        )
        metrics["exact_match"] = found.accuracy
        metrics["exact_match_samples"] = float(len(pairs))
        write_answers(run.path("answers.jsonl"), pairs, answer=found.answers, correct=found.correct)
        run.add_output("answers.jsonl")
    # 3a. Retrieval-augmented answers: with and without the retrieve run's chunks.
    if "rag" in tasks:
        assert inputs.retrieval is not None and torch_model is not None  # inputs() made sure
        metrics |= _rag(cfg, run, inputs.retrieval, torch_model, tokenizer, stops, described)
    decoder.close()
    del decoder, torch_model  # lm-eval loads its own copy

    # 3b. The red team: attacks through the served model, with and without the guard.
    tables: dict[str, Any] = {}
    if "red_team" in tasks:
        tables = _red_team(cfg, run, inputs, metrics, described)

    # 4. lm-eval-harness tasks, on the Hugging Face model directory, offline.
    directions: dict[str, str] = {}
    if manager is not None:
        if ARITHMETIC in lm_eval.tasks:
            count = int(lm_eval.limit or step.exact_match.samples)
            if split and split.is_file():
                questions = read_pairs(
                    split,
                    key=PAIRS_KEY,
                    allowed=PAIRS_ALLOWED,
                    purpose="task accuracy",
                    count=count,
                )
            else:
                questions = generated_pairs(count, int(cfg.seed))
            stop_text = str(tokenizer.decode(stops[:1])) if stops else ""
            harness.write_arithmetic_set(arithmetic, questions, stop_text, chat)
        harness.load_tasks(manager, lm_eval.tasks)
        found_metrics, directions, table = harness.run_tasks(
            model.directory, lm_eval.tasks, manager, chat=chat,
            limit=int(lm_eval.limit) if lm_eval.limit else None,
            num_fewshot=int(lm_eval.num_fewshot) if lm_eval.num_fewshot is not None else None,
            batch_size=int(lm_eval.batch_size),
            device="cuda" if torch.cuda.is_available() else "cpu", seed=int(cfg.seed),
        )  # fmt: skip
        metrics.update(found_metrics)
        run.path("lm_eval", "results.json").write_text(json.dumps(table, indent=2) + "\n")
        run.add_output("lm_eval")
    metrics = dict(sorted(metrics.items(), key=lambda item: item[0] not in HEADLINE))

    # 5. Against the baseline, then the files: metrics.json, plots, report.html.
    comparisons = []
    if step.regression.baseline:
        from quark.eval.regression import compare, read_baseline

        baseline = read_baseline(str(step.regression.baseline))
        described["baseline"] = str(baseline.source)
        comparisons = compare(
            metrics, baseline, dict(step.regression.tolerances or {}),
            step.regression.default_tolerance,
            {**directions, **dict(step.regression.directions or {})},
        )  # fmt: skip
    regressed = [c for c in comparisons if c.regressed]
    write_outputs(run, model, metrics, notes, comparisons, described, tables)
    run.update(
        notes=notes,
        regression=[{**vars(c), "tolerance": str(c.tolerance), "regressed": c.regressed}
                    for c in comparisons],
    )  # fmt: skip
    _print_summary(
        run, metrics, notes, regressed, len(comparisons), described.get("perplexity windows")
    )
    if regressed:
        run.update(metrics=metrics)  # the failed run still shows what was measured
        raise StepFailed(
            f"regression against {step.regression.baseline}: {len(regressed)} of "
            f"{len(comparisons)} metrics worse than the baseline beyond their tolerance: "
            f"{'; '.join(c.describe() for c in regressed)}; report: {run.dir / 'report.html'}"
        )
    return metrics


def _red_team(
    cfg: DictConfig, run: Run, inputs: EvaluateInputs, metrics: dict[str, float],
    described: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """quark.eval.red_team on the model, behind cfg.safety's guard; red_team/ written and its
    metrics added; the report's tables returned."""
    from quark.eval.red_team import run_red_team, suite_requests, write_results
    from quark.export.decoding import cpu_threads
    from quark.safety.guard import build_guard
    from quark.safety.redteam import probes

    options = cfg.step.red_team
    guard = build_guard(cfg.safety, inputs.classifier)
    requests, attack_seeds = suite_requests(inputs.red_team_data, int(cfg.seed))
    suite = probes(requests, list(options.framings), int(options.attacks), int(options.benign),
                   int(cfg.seed))  # fmt: skip
    described["red team guard"] = str(cfg.safety.name) + (
        f" ({inputs.classifier})" if inputs.classifier else ""
    )
    described["red team requests"] = str(inputs.red_team_data or "generated from the seed")
    result = run_red_team(
        inputs.model.directory, guard, suite, attack_seeds, options, seed=int(cfg.seed),
        threads=cpu_threads(), hold_back=int(cfg.safety.hold_back),
    )  # fmt: skip
    write_results(run.path("red_team"), result)
    run.add_output("red_team")
    metrics.update(result.metrics())
    return result.tables()


def write_outputs(
    run: Run,
    model: ModelLocation,
    metrics: dict[str, float],
    notes: list[str],
    comparisons: list[Any],
    described: dict[str, str],
    tables: dict[str, Any] | None = None,
) -> None:
    """metrics.json (itself a baseline file for a later run), the plots and report.html."""
    from quark.core.files import write_json_atomic
    from quark.eval.report import Report, baseline_bars, loss_curves, write_html
    from quark.lineage.models import training_run

    write_json_atomic(run.path("metrics.json"), metrics)
    plots = {}
    trained = training_run(model)
    log = trained / "logs" / "metrics.csv" if trained else None
    if log is not None and log.is_file():
        curves = loss_curves(log, run.path("plots", "training_curves.png"))
        if curves is not None:
            plots["Training and validation loss"] = curves
    if comparisons:
        plots["Against the baseline"] = baseline_bars(
            comparisons, run.path("plots", "baseline_comparison.png")
        )
    report = Report(
        title=f"Evaluation of {model.source}",
        subtitle=f"{model.label}, run {run.dir}",
        metrics=metrics,
        inputs=described,
        notes=notes,
        comparisons=comparisons,
        baseline=described.get("baseline"),
        plots=plots,
        tables=tables or {},
    )
    write_html(run.path("report.html"), report)
    for name in ("metrics.json", "report.html", *(["plots"] if plots else [])):
        run.add_output(name)


def _print_summary(
    run: Run,
    metrics: dict[str, float],
    notes: list[str],
    regressed: list,
    compared: int,
    windows: str | None = None,
) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    table = Table(title="Evaluate", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}")
    if windows:
        table.add_row("perplexity windows", windows)
    if compared:
        verdict = f"REGRESSED: {', '.join(c.metric for c in regressed)}" if regressed else "passed"
        table.add_row("regression", f"{verdict} ({compared} compared)")
    for note in notes:
        table.add_row("note", note)
    table.add_row("report", str(run.dir / "report.html"))
    wide_console().print(table)
