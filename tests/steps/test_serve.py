"""step=serve from the command line: the demo streams a completion over HTTP and finishes the
run; the server answers the official client until SIGTERM, then the run completes; the ONNX
export is served through the same command; bad input is one line and exit status 2."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import openai
import pytest
import torch

from ..conftest import REPO, LaunchFn, manifests
from ..serve import conftest as serve_models
from ..serve.conftest import TinyModels

# tests/serve's session fixtures, shared: the tiny models are trained once per session
tiny_models = serve_models.tiny_models
onnx_dir = serve_models.onnx_dir

URL_LINE = re.compile(r"serve: (\S+) \((.+)\) on (http://127\.0\.0\.1:\d+)/v1")


def test_demo_streams_the_completion_and_completes_the_run(
    launch: LaunchFn, outputs: Path, tiny_models: TinyModels
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quark.export.decoding import TorchDecoder

    prompt = "item3 has value"
    done = launch(
        "step=serve",
        f"step.model_dir={tiny_models.base}",
        "step.port=0",
        f"step.demo_prompt='{prompt}'",
        "step.demo_max_tokens=12",
        "step.demo_temperature=0",  # greedy, so the text is known
        "step.threads=1",
        check=True,
    )
    # what plain incremental greedy decoding of the model gives, up to its end-of-sequence token
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype=torch.float32)
    tokens = TorchDecoder(model).generate(tokenizer.encode(prompt), 12)
    if tokenizer.eos_token_id in tokens:
        tokens = tokens[: tokens.index(tokenizer.eos_token_id) + 1]
    expected = tokenizer.decode(tokens, skip_special_tokens=True)
    assert expected.strip()
    assert f"{prompt}{expected}\n" in done.stdout  # the prompt, then the streamed completion
    [manifest] = manifests(outputs)
    assert manifest["status"] == "completed" and manifest["step"] == "serve"
    metrics = manifest["metrics"]
    assert metrics["demo_tokens"] == len(tokens) and metrics["requests"] == 1
    assert manifest["inputs"][0]["path"] == str(tiny_models.base)


def test_onnx_export_is_served_from_the_command_line(launch: LaunchFn, onnx_dir: Path) -> None:
    done = launch(
        "step=serve",
        f"step.model_dir={onnx_dir}",
        "step.port=0",
        "step.demo_prompt=item1",
        "step.demo_max_tokens=6",
        check=True,
    )
    match = URL_LINE.search(done.stdout)
    assert match and match.group(2).startswith("onnxruntime"), done.stdout


def start_server(
    outputs: Path,
    *args: str,
    env: dict[str, str] | None = None,
    step: str = "serve",
    url_line: re.Pattern[str] = URL_LINE,
) -> tuple[subprocess.Popen, re.Match, list[str]]:
    """`launch.py step=<step> step.port=0 ARGS` running, once it logged its URL (`url_line`):
    the process, the URL line's match, and its log so far (read on in a thread)."""
    merged = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs), **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "launch.py", f"step={step}", "step.port=0", *args],
        cwd=REPO, env=merged, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    log: list[str] = []
    match = None
    for line in process.stdout:
        log.append(line)
        if match := url_line.search(line):
            break
    if match is None:
        process.kill()
        raise AssertionError("".join(log))
    threading.Thread(target=lambda: log.extend(process.stdout), daemon=True).start()  # type: ignore[arg-type]
    return process, match, log


def test_serves_the_openai_client_until_sigterm(outputs: Path, tiny_models: TinyModels) -> None:
    process, match, log = start_server(
        outputs, f"step.model_dir={tiny_models.chat}", "step.threads=1",
        "step.model_name=tiny-chat", env={"QUARK_API_KEY": "sk-env"},
    )  # fmt: skip
    try:
        assert "API key required" in log[-1]
        client = openai.OpenAI(base_url=f"{match.group(3)}/v1", api_key="sk-env", max_retries=0)
        chat = client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "colour of item2?"}]
        )
        assert chat.choices[0].finish_reason == "stop" and chat.choices[0].message.content
        streamed = client.completions.create(
            model="tiny-chat", prompt="item2 has", max_tokens=5, stream=True, seed=1
        )
        assert len([c for c in streamed if c.choices]) >= 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "".join(log)
    finally:
        process.kill()
    [manifest] = manifests(outputs)
    assert manifest["status"] == "completed", manifest
    assert manifest["metrics"]["requests"] == 2
    assert manifest["metrics"]["tokens_generated"] >= 2


@pytest.mark.parametrize(
    ("model_dir", "says"),
    [
        ("/nonexistent/model", "/nonexistent/model does not exist"),
        ("{tmp}", "is not a model (no config.json with weights or model.onnx)"),
        ("null", "no completed align, finetune or pretrain run in experiment 'demo'"),
    ],
)
def test_a_bad_model_directory_is_one_line_and_exit_2(
    launch: LaunchFn, tmp_path: Path, model_dir: str, says: str
) -> None:
    done = launch("step=serve", f"step.model_dir={model_dir.format(tmp=tmp_path)}")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: step.model_dir: ") and says in line


def test_a_port_in_use_is_one_line_and_exit_2(launch: LaunchFn, tiny_models: TinyModels) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = launch("step=serve", f"step.model_dir={tiny_models.base}", f"step.port={port}")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: step.port: cannot listen on 127.0.0.1:{port}")
