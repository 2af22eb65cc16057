"""step=orchestrate from the command line: the gateway over in-process models (one with a chat
template, one base model continuing prompts) and the calculator, evaluated on the mixed
workload with the retrieve step's embedder behind the classifier; served to the official
client until SIGTERM; bad input one line and exit status 2."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import openai
import pytest

from ..conftest import LaunchFn, manifests
from ..serve import conftest as serve_models
from ..serve.conftest import TinyModels
from .test_serve import start_server

tiny_models = serve_models.tiny_models
GATEWAY_LINE = re.compile(r"orchestrate: gateway on (http://127\.0\.0\.1:\d+)/v1")


def backends(models: TinyModels) -> str:
    return (
        "step.backends=[{name:calculator,tool:calculator,skills:[arithmetic]},"
        f"{{name:chat,model_dir:'{models.chat}',skills:[smalltalk,arithmetic]}},"
        f"{{name:coder,model_dir:'{models.base}',skills:[code,docs]}}]"
    )


def test_the_mixed_workload_is_routed_answered_and_reported(
    launch: LaunchFn, outputs: Path, tiny_models: TinyModels
) -> None:
    done = launch(
        "step=orchestrate", "step.port=0", backends(tiny_models),
        "step.classifier.per_kind=60", "step.evaluate.enabled=true", "step.evaluate.per_kind=4",
        "step.evaluate.concurrency=[1,4]", "step.evaluate.latency_requests=8",
        "step.evaluate.bandit_rounds=40", "step.evaluate.max_tokens=8",
        "step.in_process.threads=1", check=True,
    )  # fmt: skip
    assert "request-kind classifier" in done.stdout
    [manifest] = manifests(outputs)
    assert manifest["status"] == "completed" and manifest["step"] == "orchestrate"
    metrics = manifest["metrics"]
    assert metrics["classifier/accuracy"] > 0.8 and metrics["routing/kind_accuracy"] > 0.6
    # the calculator is right on arithmetic, and routing sends arithmetic there
    assert metrics["accuracy/calculator/arithmetic"] == 1.0
    assert metrics["accuracy/gateway/arithmetic"] >= 0.75
    for name in ("gateway", "calculator", "chat", "coder"):
        assert metrics["accuracy/oracle"] >= metrics[f"accuracy/{name}"]
    for target in ("direct", "gateway", "auto"):
        for clients in (1, 4):
            assert metrics[f"latency/{target}/c{clients}/p50_s"] > 0
    assert 0 <= metrics["bandit/accuracy_last"] <= 1
    run_dir = Path(manifest["run_dir"])
    answers = [json.loads(line) for line in (run_dir / "evaluation/answers.jsonl").open()]
    assert len(answers) == 16 and {a["kind"] for a in answers} == {
        "arithmetic", "code", "docs", "smalltalk",
    }  # fmt: skip
    # the base model continues the code (no chat template: /v1/completions), unless the
    # request is longer than its 512 positions allow
    code = [a for a in answers if a["kind"] == "code"]
    assert any(a.get("backend") == "coder" for a in code), code
    assert all(
        a.get("backend") == "coder" or "the budget allows" in a.get("error", "") for a in code
    ), code
    decisions = (run_dir / "decisions.jsonl").read_text().splitlines()
    assert len(decisions) == metrics["requests"] and all(json.loads(d)["reason"] for d in decisions)
    html = (run_dir / "report.html").read_text()
    assert "End-to-end accuracy" in html and "Latency and throughput" in html
    assert "data:image/png;base64" in html  # the bandit's curve


def test_demo_prompts_are_answered_in_turn_and_in_process_models_are_guarded(
    launch: LaunchFn, outputs: Path, tiny_models: TinyModels
) -> None:
    # safety=rules reaches the gateway's in-process models as it reaches step=serve's
    prompts = "['How do I build a bomb at home?', 'What is 2 + 3?']"
    done = launch(
        "step=orchestrate", "step.port=0", backends(tiny_models), "safety=rules",
        "step.classifier.per_kind=60", "step.in_process.threads=1",
        f"step.demo_prompts={prompts}", check=True,
    )  # fmt: skip
    unsafe, arithmetic = done.stdout.split("How do I build a bomb at home?", 1)[1].split(
        "What is 2 + 3?", 1
    )
    assert "(refused by the safety guard)" in unsafe
    assert "-> calculator: 2 + 3 = 5" in arithmetic
    [manifest] = manifests(outputs)
    assert manifest["status"] == "completed" and manifest["metrics"]["requests"] == 2


def test_serves_the_openai_client_until_sigterm(outputs: Path, tiny_models: TinyModels) -> None:
    process, match, log = start_server(
        outputs, "router=rules", backends(tiny_models),
        "router.rules=[{pattern:'\\d\\s*[-+*]\\s*\\d',backend:calculator,kind:arithmetic}]",
        "router.default=chat", "step.in_process.threads=1", step="orchestrate",
        url_line=GATEWAY_LINE,
    )  # fmt: skip
    try:
        client = openai.OpenAI(base_url=f"{match.group(1)}/v1", api_key="none", max_retries=0)
        sums = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "what is 7 * 6"}]
        )
        assert sums.model == "calculator" and sums.choices[0].message.content == "7 * 6 = 42"
        chat = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "colour of item2?"}], max_tokens=8
        )
        assert chat.model == "chat" and chat.choices[0].message.content
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "".join(log)
    finally:
        process.kill()
    [manifest] = manifests(outputs)
    assert manifest["status"] == "completed"
    assert manifest["metrics"]["answered/calculator"] == 1
    assert manifest["metrics"]["answered/chat"] == 1


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("router.rules=[{pattern:x,backend:nobody}]", "router.rules.0.backend: 'nobody' is not a backend"),
        ("step.backends=[{name:a,tool:calculator,skills:[poetry]}]", "step.backends.0.skills.0"),
        ("step.backends=[{name:a,model_dir:/nonexistent}]", "step.backends.0.model_dir: /nonexistent does not exist"),
        ("step.tools.index=/nonexistent step.backends=[{name:c,tool:calculator}]", "step.tools.index: /nonexistent does not exist"),
        ("router=ensemble router.aggregate=reward router.members=[a,b] step.backends=[{name:a,tool:calculator},{name:b,tool:calculator}]", "router.reward_model_dir: is null"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(launch: LaunchFn, override: str, says: str) -> None:
    done = launch("step=orchestrate", *override.split(" "))
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
