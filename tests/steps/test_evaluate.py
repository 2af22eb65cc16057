"""step=evaluate from the command line: perplexity that agrees with torch and with the trained
run's own validation loss, exact match as quark.eval.exact_match computes it, an ONNX export
measured in ONNX Runtime, lm-eval's HFLM on the shipped task offline, regression against a
baseline failing the run with every regressed metric named, a self-contained report.html, and
bad input as one line with exit 2."""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ITEM_DATA, launcher, manifests, write_item_corpus
from .test_optimize import TINY_MODEL  # the same tiny Llama, whose exports are evaluated too

# the pretrain run's validation windows: 4 of 64 tokens
WINDOWS = ["step.seq_len=64", "step.val_samples=4"]
# a proxy that refuses every connection: any attempt to reach the network fails loudly
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}

Launch = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evaluate") / "outputs"


@pytest.fixture(scope="module")
def launch(outputs: Path) -> Launch:
    """`python launch.py ARGS` as a user runs it, one thread, every connection refused."""
    return launcher(outputs, {"OMP_NUM_THREADS": "1", **NO_NETWORK})


@pytest.fixture(scope="module")
def trained(launch: Launch, outputs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A corpus data run, a pretrain run on it, an arithmetic data run (one-digit sums) and a
    finetune run on those: their manifests by step."""
    corpus = write_item_corpus(tmp_path_factory.mktemp("corpus"))
    launch(*ITEM_DATA, f"data.sources.0.paths=[{corpus}/*.txt]", check=True)
    launch(
        "step=pretrain",
        *TINY_MODEL,
        *WINDOWS,
        "step.max_steps=60",
        "step.val_every_n_steps=20",
        "step.checkpoint_every_n_steps=60",
        "step.optim.warmup_steps=5",
        "step.optim.lr=1e-2",
        "trainer.micro_batch_size=8",
        check=True,
    )
    launch(
        "step=data",
        "data=arithmetic_sft",
        "data.task.operators=[+]",
        "data.task.max_digits=1",
        "data.task.max_terms=2",
        "data.task.train=70",
        "data.task.val=15",
        "data.task.test=15",
        check=True,
    )
    launch(
        "step=finetune",
        "step.max_steps=200",
        "step.val_every_n_steps=100",
        "step.checkpoint_every_n_steps=200",
        "step.val_samples=15",
        "step.eval_samples=15",
        "step.optim.lr=5e-3",
        "step.optim.warmup_steps=5",
        "trainer.micro_batch_size=16",
        check=True,
    )
    data, pretrain, pairs, finetune = manifests(outputs)
    return {"data": data, "pretrain": pretrain, "pairs": pairs, "finetune": finetune}


def evaluate_runs(outputs: Path) -> list[dict]:
    return [m for m in manifests(outputs) if m["step"] == "evaluate"]


def torch_perplexity(model_dir: Path, data_dir: Path) -> float:
    """exp of the mean next-token cross-entropy on the first 4 validation windows of 64
    tokens, in plain torch."""
    import torch
    from transformers import AutoModelForCausalLM

    from quark.training.shards import TokenWindows

    val = TokenWindows(data_dir / "shards", "val", 64)
    windows = torch.stack([val[i] for i in range(4)])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1)
    )
    return math.exp(float(loss))


def quark_exact_match(model_dir: Path, questions: Path) -> Any:
    """quark.eval.exact_match on the questions, in the model's chat template, in process."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quark.eval.exact_match import greedy_exact_match

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    records = [json.loads(line) for line in questions.read_text().splitlines()]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["prompt"]}], add_generation_prompt=True, tokenize=False
        )
        for r in records
    ]
    return greedy_exact_match(
        model,
        tokenizer,
        prompts,
        [r["response"] for r in records],
        stop_token_ids=model.generation_config.eos_token_id,
    )


def answers(manifest: dict) -> list[str]:
    lines = Path(manifest["run_dir"], "answers.jsonl").read_text().splitlines()
    return [json.loads(line)["answer"] for line in lines]


@pytest.mark.slow
def test_a_pretrain_run_gets_its_perplexity_and_a_self_contained_report(
    launch: Launch, outputs: Path, trained: dict
) -> None:
    pretrain = Path(trained["pretrain"]["run_dir"])
    # no windows given: the ones the pretrain run validated on (64 tokens, 4 of them)
    launch("step=evaluate", f"step.model_dir={pretrain}", check=True)
    manifest = evaluate_runs(outputs)[-1]
    metrics, run_dir = manifest["metrics"], Path(manifest["run_dir"])
    assert manifest["status"] == "completed"
    # the same windows as the run's own final validation: exp of its val_loss, and plain torch
    assert metrics["perplexity"] == pytest.approx(
        math.exp(trained["pretrain"]["metrics"]["val_loss"]), rel=1e-4
    )
    assert metrics["perplexity"] == pytest.approx(
        torch_perplexity(pretrain / "hf", Path(trained["data"]["run_dir"])), rel=1e-5
    )
    # no chat template: task accuracy is left out, with a note saying why
    assert "exact_match" not in metrics
    assert "no chat template" in manifest["notes"][0]
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert [i["path"] for i in manifest["inputs"]] == [str(pretrain), trained["data"]["run_dir"]]

    page = (run_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", page)  # nothing to fetch
    assert "<style>" in page and "no chat template" in page
    assert f"the first 4 of 64 tokens (the validation windows of {pretrain})" in page
    curves = run_dir / "plots" / "training_curves.png"
    assert curves.read_bytes().startswith(b"\x89PNG")
    import base64

    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert [base64.b64decode(e) for e in embedded] == [curves.read_bytes()]
    recorded = {o["path"] for o in manifest["outputs"]}
    assert {"metrics.json", "report.html", "plots/training_curves.png"} <= recorded


@pytest.mark.slow
def test_by_default_the_newest_finetune_run_gets_exact_match_as_quark_computes_it(
    launch: Launch, outputs: Path, trained: dict
) -> None:
    launch("step=evaluate", *WINDOWS, check=True)
    manifest = evaluate_runs(outputs)[-1]
    finetune, pairs = Path(trained["finetune"]["run_dir"]), Path(trained["pairs"]["run_dir"])
    assert [i["path"] for i in manifest["inputs"]] == [
        str(finetune),
        trained["data"]["run_dir"],  # perplexity: the data run the pretrained model came from
        str(pairs),  # exact match: the test split of the data run it was fine-tuned on
    ]
    assert manifest["metrics"]["exact_match_samples"] == 15
    expected = quark_exact_match(finetune / "hf", pairs / "test.jsonl")
    assert manifest["metrics"]["exact_match"] == expected.accuracy
    assert answers(manifest) == expected.answers
    # the fine-tuned fixture answers in the learned form (a number) even where it is wrong:
    # the comparison is of real answers. Its accuracy on the 15 test questions varies between
    # checkouts (0 on one CI run, above 0 on others), so it is not asserted here; nor is every
    # answer a number (one CI run's fixture answered one question with nothing at all)
    numbers = [answer for answer in expected.answers if answer.isdigit()]
    assert len(numbers) >= 2 * len(expected.answers) // 3, expected.answers


@pytest.mark.slow
def test_an_onnx_export_is_measured_in_onnx_runtime_and_agrees_with_torch(
    launch: Launch, outputs: Path, trained: dict
) -> None:
    launch(
        "step=optimize",
        "export=onnx",
        *WINDOWS,
        "step.new_tokens=4",
        "step.latency_repeats=1",
        "step.threads=1",
        check=True,
    )
    optimize = Path([m for m in manifests(outputs) if m["step"] == "optimize"][-1]["run_dir"])
    launch("step=evaluate", f"step.model_dir={optimize}", *WINDOWS, check=True)
    onnx = evaluate_runs(outputs)[-1]
    assert "onnx (fp32) export" in (Path(onnx["run_dir"]) / "report.html").read_text()
    finetune = Path(trained["finetune"]["run_dir"])
    torch_ppl = torch_perplexity(finetune / "hf", Path(trained["data"]["run_dir"]))
    assert onnx["metrics"]["perplexity"] == pytest.approx(torch_ppl, rel=1e-4)
    # greedy answers one token at a time through ONNX Runtime's key/value cache: the same as
    # the source model's, batched in torch
    expected = quark_exact_match(finetune / "hf", Path(trained["pairs"]["run_dir"]) / "test.jsonl")
    assert answers(onnx) == expected.answers
    assert onnx["metrics"]["exact_match"] == expected.accuracy


@pytest.mark.slow
def test_lm_eval_runs_the_shipped_task_offline_and_scores_as_exact_match_does(
    launch: Launch, outputs: Path, trained: dict
) -> None:
    # the training split: questions the model learned, so that both scores are far from 0
    launch(
        "step=evaluate",
        "step.tasks=[exact_match]",
        "step.exact_match.split=train",
        "step.exact_match.samples=30",
        "step.lm_eval.tasks=[quark_arithmetic]",
        "step.lm_eval.limit=30",
        check=True,
    )
    manifest = evaluate_runs(outputs)[-1]
    metrics, run_dir = manifest["metrics"], Path(manifest["run_dir"])
    assert "perplexity" not in metrics
    results = json.loads((run_dir / "lm_eval" / "results.json").read_text())
    assert (
        results["results"]["quark_arithmetic"]["acc,none"]
        == metrics["lm_eval/quark_arithmetic/acc"]
    )
    assert results["config"]["apply_chat_template"] is True
    questions = (run_dir / "lm_eval" / "quark_arithmetic.jsonl").read_text().splitlines()
    assert len(questions) == 30 and json.loads(questions[0])["target"].endswith("<|end|>")
    # the same questions; the greedy continuation is the answer and the end token exactly
    # when the greedy answer is right (a different tokenization of it aside). The fixture's
    # score on its training questions varies between checkouts (CI's scored 0.3); what
    # matters is that it is far from an untrained model's 0
    assert metrics["exact_match"] >= 0.2
    assert metrics["lm_eval/quark_arithmetic/acc"] == pytest.approx(
        metrics["exact_match"], abs=1 / 30
    )


@pytest.mark.slow
def test_a_regression_against_a_baseline_fails_the_run_naming_every_metric(
    launch: Launch, outputs: Path, trained: dict, tmp_path: Path
) -> None:
    pretrain = Path(trained["pretrain"]["run_dir"])
    measured = math.exp(trained["pretrain"]["metrics"]["val_loss"])
    better = tmp_path / "baseline.yaml"
    better.write_text(f"perplexity: {measured * 0.9}\nval_loss: 0.01\nsteps: 1000\n")
    args = ["step=evaluate", f"step.model_dir={pretrain}", *WINDOWS]
    done = launch(*args, f"step.regression.baseline={better}")
    assert done.returncode == 1, done.stderr
    failed = evaluate_runs(outputs)[-1]
    report = Path(failed["run_dir"]) / "report.html"
    assert re.fullmatch(
        rf"error: regression against {re.escape(str(better))}: 2 of 2 metrics worse than the "
        r"baseline beyond their tolerance: perplexity \S+ vs baseline \S+ \(tolerance 0, lower "
        r"is better\); val_loss \S+ vs baseline 0.01 \(tolerance 0, lower is better\); "
        rf"report: {re.escape(str(report))}",
        done.stderr.strip().splitlines()[-1],
    ), done.stderr
    assert failed["status"] == "failed"
    assert failed["metrics"]["perplexity"] == pytest.approx(measured, rel=1e-4)  # still recorded
    assert [c["metric"] for c in failed["regression"] if c["regressed"]] == [
        "perplexity",
        "val_loss",
    ]
    assert "REGRESSED" in report.read_text()
    assert (Path(failed["run_dir"]) / "plots" / "baseline_comparison.png").is_file()

    # within tolerance: relative for perplexity, absolute for the loss
    launch(*args, f"step.regression.baseline={better}",
           "step.regression.tolerances={perplexity:15%,val_loss:10}", check=True)  # fmt: skip
    within = evaluate_runs(outputs)[-1]
    assert within["status"] == "completed"
    assert [c["regressed"] for c in within["regression"]] == [False, False]
    # against a run: the same model measures the same, which no tolerance of 0 rejects
    launch(*args, f"step.regression.baseline={within['run_dir']}", check=True)
    again = evaluate_runs(outputs)[-1]
    assert [(c["value"], c["regressed"]) for c in again["regression"]] == [
        (within["metrics"]["perplexity"], False),
        (within["metrics"]["val_loss"], False),
    ]


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(
    launch: Launch, outputs: Path, trained: dict, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    malformed = tmp_path / "baseline.yaml"
    malformed.write_text("perplexity: [1, 2\n")
    not_numbers = tmp_path / "baseline.json"
    not_numbers.write_text('{"perplexity": "low"}')
    no_lm_eval = tmp_path / "no_lm_eval" / "lm_eval"
    no_lm_eval.mkdir(parents=True)
    (no_lm_eval / "__init__.py").write_text("raise ImportError('not installed')\n")
    pretrain = trained["pretrain"]["run_dir"]
    allowed = (
        "give a pretrain, finetune, align or optimize run directory, or a Hugging Face model "
        "directory (config.json and weights)"
    )
    baseline_allowed = "give a run directory, or a YAML or JSON file of metric: number"
    cases = [
        (
            [f"step.model_dir={empty}"],
            f"error: step.model_dir: {empty} is not a model (no config.json with weights or "
            f"model.onnx); {allowed}",
        ),
        (
            [f"step.model_dir={trained['data']['run_dir']}"],
            f"error: step.model_dir: {trained['data']['run_dir']} is a data run with no hf/ "
            f"model; {allowed}",
        ),
        (
            [f"step.data_dir={empty}"],
            f"error: step.data_dir: {empty} holds no token shards; give a completed data run "
            "of a corpus (not a task set)",
        ),
        (
            [f"step.model_dir={pretrain}", "step.tasks=[exact_match]"],
            f"error: step.tasks: exact_match needs a model with a chat template and {pretrain}/hf "
            "has none (a pretrain-only model); fine-tune it first (step=finetune), or leave "
            "exact_match out",
        ),
        (
            ["step.tasks=[bleu]"],
            "error: step.tasks.0: 'bleu' is not a task; allowed: perplexity, exact_match, red_team, rag",
        ),
        (
            [f"step.regression.baseline={malformed}"],
            re.compile(
                rf"error: step.regression.baseline: {re.escape(str(malformed))} is not YAML "
                rf"\(.+\); {baseline_allowed}"
            ),
        ),
        (
            [f"step.regression.baseline={not_numbers}"],
            f"error: step.regression.baseline: {not_numbers}: the value of 'perplexity' is "
            f"'low', not a number; {baseline_allowed}",
        ),
        (
            ["step.regression.tolerances={ppl:x}"],
            "error: step.regression.tolerances.ppl: 'x' is not a tolerance; allowed: a number "
            ">= 0 (absolute) or a percentage of the baseline, e.g. 5%",
        ),
        (
            ["step.lm_eval.tasks=[no_such_task]", "step.tasks=[perplexity]"],
            "error: step.lm_eval.tasks: 'no_such_task' is not an lm-eval task; give "
            "quark_arithmetic (shipped with Quark), a task of lm-eval's own list (lm-eval ls "
            "tasks) whose data is on this machine, or one of your own in step.lm_eval.include_path",
        ),
    ]
    for overrides, line in cases:
        done = launch("step=evaluate", *WINDOWS, *overrides)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2, (overrides, done.stderr)
        if isinstance(line, re.Pattern):
            assert line.fullmatch(last), (overrides, done.stderr)
        else:
            assert last == line, (overrides, done.stderr)
    # lm-eval not installed: the install command, nothing else
    done = launch(
        "step=evaluate",
        "step.lm_eval.tasks=[quark_arithmetic]",
        env={"PYTHONPATH": str(no_lm_eval.parent)},
    )
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (
        2,
        "error: step.lm_eval.tasks: lm-eval tasks need the Python package lm-eval, which is "
        "not installed; install the eval extra: pip install 'quark[eval]'",
    ), done.stderr
