"""Backends as real processes on loopback (the tiny chat model under `step=serve`, and a
scripted OpenAI-compatible server that misbehaves on cue), and a gateway over them started in
this process for each configuration a test needs."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from ..conftest import REPO
from ..serve import conftest as serve_models

tiny_models = serve_models.tiny_models
SCRIPTED = Path(__file__).with_name("scripted_backend.py")


@dataclass
class Process:
    process: subprocess.Popen
    url: str  # base URL, …/v1

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def start_serve(model_dir: Path, outputs: Path, name: str) -> Process:
    """`launch.py step=serve` of `model_dir`, once it has logged its URL."""
    from ..steps.test_serve import start_server

    process, match, _log = start_server(
        outputs, f"step.model_dir={model_dir}", f"step.model_name={name}", "step.threads=1"
    )
    return Process(process, match.group(3) + "/v1")


def start_scripted(directory: Path) -> Process:
    port_file = directory / f"port-{time.monotonic_ns()}"
    process = subprocess.Popen([sys.executable, str(SCRIPTED), str(port_file)], cwd=REPO)
    deadline = time.monotonic() + 60
    while not (port_file.is_file() and port_file.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the scripted backend did not start")
        time.sleep(0.05)
    return Process(process, f"http://127.0.0.1:{port_file.read_text()}/v1")


@pytest.fixture(scope="session")
def chat_backend(
    tiny_models: serve_models.TinyModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    """The tiny chat model served by `step=serve` in a process of its own."""
    running = start_serve(tiny_models.chat, tmp_path_factory.mktemp("serve_outputs"), "chat")
    yield running
    running.kill()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    running = start_scripted(tmp_path_factory.mktemp("scripted"))
    yield running
    running.kill()


def free_port_url() -> str:
    """A loopback URL where nothing listens: connections are refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@dataclass
class Gateway:
    url: str  # …/v1
    app: Any
    fleet: Any
    outcomes: Any
    memory: Any
    decisions: Path


@contextlib.contextmanager
def gateway(
    directory: Path,
    backends: list[dict[str, Any]],
    router: dict[str, Any] | None = None,
    classifier: Any = None,
    breaker: tuple[int, float] = (2, 30.0),
    reward: Any = None,
    tools: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Gateway]:
    """A gateway over `backends` (step.backends entries) in this process, on a free port."""
    from quark.orchestrate.fleet import backend_specs, build_fleet
    from quark.orchestrate.gateway import DecisionLog, GatewaySettings, build_gateway
    from quark.orchestrate.memory import Memory
    from quark.orchestrate.outcomes import Outcomes
    from quark.orchestrate.router import Router, check_router
    from quark.orchestrate.tools import calculator_tool
    from quark.serve.server import Server, bind

    cfg = OmegaConf.create(
        {"experiment_name": "test", "step": {"breaker": {"failures_to_open": breaker[0],
         "cooldown_s": breaker[1]}, "device": "cpu", "in_process": {}}}
    )  # fmt: skip
    router_cfg = OmegaConf.create(
        {"name": "classifier", "rules": [], "rule": "thompson", "skilled_only": True,
         "latency_weight": 0.0, "order": [], "threshold": -1.5, "members": [],
         "aggregate": "majority", "default": None} | (router or {})
    )  # fmt: skip
    specs = backend_specs(backends)
    check_router(router_cfg, [s.name for s in specs])
    tools = {"calculator": calculator_tool()} | (tools or {})
    fleet = build_fleet(cfg, specs, tools)
    directory.mkdir(parents=True, exist_ok=True)
    outcomes = Outcomes(directory / "outcomes.sqlite")
    memory = Memory(directory / "memory.sqlite")
    decisions = directory / "decisions.jsonl"
    skills = {s.name: tuple(s.skills) for s in specs}
    routed = Router(router_cfg, skills, classifier, outcomes, seed=0)
    defaults = {"cascade_threshold": float(router_cfg.threshold),
                "ensemble_aggregate": str(router_cfg.aggregate)}  # fmt: skip
    log = DecisionLog(decisions)
    app = build_gateway(
        fleet, routed, GatewaySettings(**(defaults | settings)), memory=memory,
        outcomes=outcomes, tools=tools, decisions=log, reward=reward,
    )  # fmt: skip
    server = Server(app, bind("127.0.0.1", 0), lifespan="on")
    server.start()
    try:
        yield Gateway(server.url + "/v1", app, fleet, outcomes, memory, decisions)
    finally:
        server.stop()
        fleet.stop()
        log.close()
        outcomes.close()
        memory.close()
