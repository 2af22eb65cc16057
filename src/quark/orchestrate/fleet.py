"""The fleet: every backend of step.backends, started and reachable.

In-process models are loaded through the serve engine (quark.serve: the same scheduler, the same
API) and each served on a loopback port of its own; remote servers are asked for their model id
(/v1/models) when none is configured; tools are built from their index run. `Fleet.close` stops
what this process started.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError
from quark.orchestrate.backends import BackendError, BackendSpec, ModelBackend, discover_model
from quark.orchestrate.breaker import CircuitBreaker

log = logging.getLogger("quark")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
TOOLS_ANSWERING = ("calculator", "retrieve")
# context of a remote backend that does not say (its /v1/models does not carry it)
REMOTE_CONTEXT_TOKENS = 4096


class ToolBackend:
    """A built-in tool that answers a request on its own: arguments read from the last user
    message (the calculator takes the arithmetic in it, retrieval the whole question)."""

    def __init__(self, spec: BackendSpec, tool: Any) -> None:
        self.spec, self.name, self.tool = spec, spec.name, tool
        self.breaker = CircuitBreaker()  # never opens: a tool either answers or declines
        self.requests = 0
        self.declined = 0

    def health(self) -> dict[str, Any]:
        return {
            "kind": "tool",
            "tool": self.tool.name,
            "skills": list(self.spec.skills),
            "requests": self.requests,
            "declined": self.declined,
            "breaker": self.breaker.snapshot(),
        }

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        from quark.orchestrate.calculator import ToolError, arithmetic_expression
        from quark.orchestrate.tools import run_tool

        self.requests += 1
        question = last_user_text(body.get("messages") or [])
        if self.tool.name == "calculator":
            expression = arithmetic_expression(question)
            if expression is None:
                self.declined += 1
                raise BackendError(
                    self.name, 422, f"tool '{self.name}': no arithmetic in the request",
                    code="tool_declined", fault=False,
                )  # fmt: skip
            arguments: dict[str, Any] = {"expression": expression}
        else:
            arguments = {"query": question}
        try:
            result = await run_tool(self.tool, arguments)
        except ToolError as exc:
            self.declined += 1
            raise BackendError(
                self.name, 422, str(exc), code="tool_declined", fault=False
            ) from None
        return tool_completion(self.name, self.tool.name, arguments, result)


def tool_completion(
    backend: str, tool: str, arguments: dict[str, Any], result: Any
) -> dict[str, Any]:
    """A chat completion answering with a tool's result, the call shown under tool_results."""
    import json
    import uuid

    if tool == "calculator":
        text = f"{arguments['expression']} = {result['value']}"
    else:
        lines = [
            f"[{hit['rank']}] {hit['name'] or hit['path']} ({hit['path']}:{hit['lines']})"
            for hit in result
        ]
        text = "The most relevant code:\n" + "\n".join(lines) if lines else "Nothing relevant."
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": backend,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "tool_results": [{"name": tool, "arguments": json.dumps(arguments), "result": result}],
    }


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content") or ""
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content)
            return str(content)
    return ""


@dataclass
class InProcess:
    """A model this process serves for the gateway: its server, scheduler and model."""

    server: Any
    engine: Any
    model: Any


@dataclass
class Fleet:
    backends: dict[str, Any]  # name -> ModelBackend | ToolBackend, in configured order
    started: list[InProcess] = field(default_factory=list)

    def names(self) -> list[str]:
        return list(self.backends)

    def models(self) -> list[ModelBackend]:
        return [b for b in self.backends.values() if isinstance(b, ModelBackend)]

    async def close(self) -> None:
        for backend in self.models():
            await backend.close()

    def stop(self) -> None:
        for served in self.started:
            served.server.stop()
            served.engine.stop()
        self.started = []


def backend_specs(entries: Any) -> list[BackendSpec]:
    """step.backends as specs, refused with the key of the first bad entry."""
    specs: list[BackendSpec] = []
    allowed_fields = set(BackendSpec.__dataclass_fields__)
    for number, entry in enumerate(entries or []):
        key = f"step.backends.{number}"
        entry = dict(entry)
        unknown = sorted(set(entry) - allowed_fields)
        if unknown:
            raise ConfigError(
                f"{key}.{unknown[0]}", "is not a backend field",
                f"allowed: {', '.join(sorted(allowed_fields))}",
            )  # fmt: skip
        name = str(entry.get("name") or "")
        if not NAME.match(name) or name == "auto":
            raise ConfigError(
                f"{key}.name", f"'{name}' is not a backend name",
                "letters, digits, '_', '.', '-' (not 'auto', which asks the router)",
            )  # fmt: skip
        if name in {s.name for s in specs}:
            raise ConfigError(f"{key}.name", f"'{name}' is used twice", "one name per backend")
        sources = [k for k in ("url", "model_dir", "tool") if entry.get(k)]
        if len(sources) != 1:
            raise ConfigError(
                key, f"backend '{name}' sets {' and '.join(sources) or 'none'} of url, "
                "model_dir and tool", "exactly one: a server's URL, a model to load, or a tool",
            )  # fmt: skip
        if entry.get("tool") and entry["tool"] not in TOOLS_ANSWERING:
            raise ConfigError(
                f"{key}.tool", f"'{entry['tool']}' is not a tool that answers on its own",
                f"allowed: {', '.join(TOOLS_ANSWERING)}",
            )  # fmt: skip
        if entry.get("api", "auto") not in ("auto", "chat", "completions"):
            raise ConfigError(
                f"{key}.api", f"'{entry['api']}' is not an API", "auto, chat or completions"
            )
        if entry.get("tool_calls", "prompt") not in ("native", "prompt", "none"):
            raise ConfigError(
                f"{key}.tool_calls", f"'{entry['tool_calls']}' is not a way to call tools",
                "native, prompt or none",
            )  # fmt: skip
        for limit in ("max_concurrency", "timeout_s"):
            if entry.get(limit) is not None and float(entry[limit]) <= 0:
                raise ConfigError(f"{key}.{limit}", f"{entry[limit]} is not positive", "> 0")
        entry["skills"] = tuple(entry.get("skills") or ())
        specs.append(BackendSpec(**{k: v for k, v in entry.items() if v is not None}))
    if not specs:
        raise ConfigError(
            "step.backends", "is empty", "one backend or more (url, model_dir or tool)"
        )
    return specs


def model_location(cfg: Any, spec: BackendSpec, number: int) -> Any:
    """The model an in-process backend serves: a path, latest:<step> (the run of that step a
    pipeline handed over, else the newest completed one in the experiment), or
    registry:<alias>; located, and its weight files checked."""
    from quark.lineage.model_files import check_weights
    from quark.steps.serve import MODEL_DIR_ALLOWED

    location = _named_model(cfg, spec, number)
    check_weights(location.directory, f"step.backends.{number}.model_dir", MODEL_DIR_ALLOWED)
    return location


def _named_model(cfg: Any, spec: BackendSpec, number: int) -> Any:
    from quark.core.step_registry import model_steps
    from quark.lineage.finding import find_run
    from quark.lineage.models import holds_model, locate_model
    from quark.steps.serve import MODEL_DIR_ALLOWED, SERVED_EXPORTS

    key = f"step.backends.{number}.model_dir"
    named = str(spec.model_dir)
    if named.startswith("registry:"):
        return locate_model(registered_run(cfg, key, named), key, MODEL_DIR_ALLOWED, SERVED_EXPORTS)
    if named.startswith("latest:"):
        step = named.split(":", 1)[1]
        steps = (*model_steps(), "optimize")
        if step not in steps:
            raise ConfigError(key, f"'{named}' names no model step", f"latest:<{'|'.join(steps)}>")
        # in a pipeline, the run of that step it handed over (a rerun then finds the same one
        # even after a later stage trained a newer run of the step); else the newest
        found = find_run(cfg, [step], holds=holds_model)
        if found is None:
            raise ConfigError(
                key, f"no completed {step} run in experiment '{cfg.experiment_name}'",
                f"run python launch.py step={step} first, or give a model directory",
            )  # fmt: skip
        return locate_model(found, key, MODEL_DIR_ALLOWED, SERVED_EXPORTS)
    return locate_model(Path(named).expanduser(), key, MODEL_DIR_ALLOWED, SERVED_EXPORTS)


def registered_run(cfg: Any, key: str, named: str) -> Path:
    """The run directory of the registry version that holds alias `registry:<alias>`
    (quark.governance.registry: the `governance` group's registry)."""
    from quark.governance.registry import ModelRegistry

    alias = named.split(":", 1)[1]
    if alias not in ModelRegistry.ALIASES:
        raise ConfigError(
            key, f"'{named}' names no alias", f"registry:<{'|'.join(ModelRegistry.ALIASES)}>"
        )
    output_dir, experiment = Path(str(cfg.paths.output_dir)), str(cfg.experiment_name)
    registry = ModelRegistry.open(cfg.governance, output_dir, experiment)
    version = registry.by_alias(alias)
    if version is None:
        raise ConfigError(
            key, f"the model registry {registry.uri} has no '{alias}' version of '{registry.model_name}'",
            "promote one first: python launch.py step=improve",
        )  # fmt: skip
    return version.run_dir


def start_in_process(
    location: Any, spec: BackendSpec, serving: Any, device: str, guard: Any = None,
    hold_back: int | None = None,
) -> InProcess:  # fmt: skip
    """The model at `location` served by quark.serve on a free loopback port, behind `guard`
    (the safety group's, as step=serve puts it) when there is one."""
    from quark.serve.api import build_app
    from quark.serve.backends import load_model
    from quark.serve.engine import Engine
    from quark.serve.protocol import Limits
    from quark.serve.server import Server, bind
    from quark.steps.serve import configure_threads, torch_device

    threads = configure_threads(serving.threads)
    model = load_model(location.directory, spec.name, torch_device(device), threads)
    retrieval = None
    if spec.retrieval:
        from quark.serve.rag import load_retrieval

        retrieval = load_retrieval(Path(spec.retrieval), 4, "hybrid", model.positions // 2)
    engine = Engine(model, int(serving.max_batch_size), int(serving.max_prefill_tokens))
    limits = Limits(
        max_tokens=int(serving.max_tokens),
        max_prompt_tokens=model.positions - 1,
        max_request_bytes=int(serving.max_request_bytes),
        max_waiting=int(serving.max_waiting),
    )
    if guard is not None and hold_back is not None:
        app = build_app(model, engine, limits, None, guard, hold_back, retrieval=retrieval)
    else:
        app = build_app(model, engine, limits, None, retrieval=retrieval)
    server = Server(app, bind("127.0.0.1", 0))
    engine.start()
    server.start()
    return InProcess(server, engine, model)


def build_fleet(
    cfg: Any,
    specs: list[BackendSpec],
    tools: dict[str, Any],
    located: dict[str, Any] | None = None,
    classifier: Path | None = None,
) -> Fleet:
    """Every backend started (in-process) or looked up (remote), in `specs` order;
    `located`: in-process backends' models already located and verified (the step's inputs),
    so their files are not hashed twice. In-process models answer behind the `safety` group's
    guard (`classifier`: safety=classifier's model), as step=serve does."""
    from quark.safety.guard import build_guard

    located = located or {}
    guard = build_guard(cfg.get("safety"), classifier) if any(s.model_dir for s in specs) else None
    hold_back = int(cfg.safety.hold_back) if guard is not None else None
    fleet = Fleet({})
    try:
        for number, spec in enumerate(specs):
            started = time.perf_counter()
            if spec.tool:
                if spec.tool not in tools:
                    raise ConfigError(
                        f"step.backends.{number}.tool", f"'{spec.tool}' needs step.tools.index "
                        "(a retrieve run)", "set step.tools.index, or drop this backend",
                    )  # fmt: skip
                fleet.backends[spec.name] = ToolBackend(spec, tools[spec.tool])
                continue
            breaker = CircuitBreaker(
                int(cfg.step.breaker.failures_to_open), float(cfg.step.breaker.cooldown_s)
            )
            if spec.model_dir:
                location = located.get(spec.name) or model_location(cfg, spec, number)
                served = start_in_process(
                    location, spec, cfg.step.in_process, str(cfg.step.device), guard, hold_back
                )
                fleet.started.append(served)
                model = served.model
                tokenizer = model.tokenizer
                backend = ModelBackend(
                    spec, served.server.url + "/v1", spec.name,
                    spec.context_tokens or model.positions, breaker,
                    lambda text, t=tokenizer: len(t.encode(text, add_special_tokens=False)),
                )  # fmt: skip
                # a base model without a chat template continues a prompt instead
                backend.completions_only = spec.api == "completions" or (
                    spec.api == "auto" and not model.has_chat_template
                )
                fleet.backends[spec.name] = backend
                log.info(
                    "orchestrate: backend %s: %s served in-process on %s (%.1f s)", spec.name,
                    location.directory, served.server.url, time.perf_counter() - started,
                )  # fmt: skip
            else:
                url = str(spec.url).rstrip("/")
                model_id = spec.model or asyncio.run(discover_model(url, spec.api_key, 5.0))
                if model_id is None:
                    # the gateway starts anyway: the breaker keeps it out until it answers
                    log.warning(
                        "orchestrate: backend %s: %s/models does not answer; its requests "
                        "will fail until it does", spec.name, url,
                    )  # fmt: skip
                    model_id = spec.name
                fleet.backends[spec.name] = ModelBackend(
                    spec, url, model_id, spec.context_tokens or REMOTE_CONTEXT_TOKENS, breaker
                )
                log.info("orchestrate: backend %s: %s (model %s)", spec.name, url, model_id)
    except BaseException:
        fleet.stop()
        raise
    return fleet
