"""step=orchestrate: one OpenAI-compatible endpoint in front of several models and tools.

    python launch.py step=orchestrate                                   # serve until Ctrl-C
    python launch.py step=orchestrate step.demo_prompt='What is 12 * 3 - 4?'    # one answer
    python launch.py step=orchestrate step.evaluate.enabled=true        # mixed workload, report
    python launch.py step=orchestrate router=bandit                     # learn who answers what

1. The fleet (quark.orchestrate.fleet): in-process models loaded through the serve engine,
   remote OpenAI-compatible servers, and tools that answer on their own.
2. The router (quark.orchestrate.router, the `router` group); the classifier it needs is
   trained here on requests Quark generates (quark.orchestrate.kinds) and saved in the run.
3. What the gateway keeps across runs, in SQLite: what the router learned of each backend
   (step.outcomes) and each user's conversations and profile (step.memory).
4. The gateway (quark.orchestrate.gateway) on step.host:step.port until Ctrl-C, SIGTERM or
   step.max_seconds; or one demo request; or the evaluation workload
   (quark.orchestrate.evaluation), whose results go to the manifest and report.html.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from quark.core.errors import ConfigError
from quark.core.run import MANIFEST, Run, verify_run

log = logging.getLogger("quark")


@dataclass(frozen=True)
class OrchestrateInputs:
    # in-process backend -> its model, located and verified once (quark.lineage.ModelLocation)
    models: dict[str, Any] = field(default_factory=dict)
    index: Path | None = None  # step.tools.index: a retrieve run
    reward_model: Path | None = None
    # in-process backend -> the retrieve run its answers are grounded in (its `retrieval`)
    retrievals: dict[str, Path] = field(default_factory=dict)
    # safety=classifier: the guard's classifier, in front of every in-process backend
    classifier: Path | None = None

    def recorded(self) -> dict[str, Path]:
        found = {f"backend_{name}": model.source for name, model in self.models.items()}
        found |= {f"retrieval_{name}": path for name, path in self.retrievals.items()}
        found |= {"safety_classifier": self.classifier} if self.classifier else {}
        found |= {"tools_index": self.index} if self.index else {}
        return found | ({"reward_model": self.reward_model} if self.reward_model else {})


def inputs(cfg: DictConfig) -> OrchestrateInputs:
    """Every backend, the router and the tools' index checked before anything loads."""
    from quark.orchestrate.fleet import backend_specs, model_location
    from quark.orchestrate.router import check_router

    specs = backend_specs(cfg.step.backends)
    check_router(cfg.router, [s.name for s in specs])
    models = {
        spec.name: model_location(cfg, spec, number)
        for number, spec in enumerate(specs)
        if spec.model_dir
    }
    index = retrieve_run(cfg.step.tools.index, "step.tools.index", cfg)
    retrievals = {
        spec.name: retrieve_run(spec.retrieval, f"step.backends.{number}.retrieval", cfg)
        for number, spec in enumerate(specs)
        if spec.retrieval
    }
    if index is None and any(s.tool == "retrieve" for s in specs):
        raise ConfigError(
            "step.tools.index", "is null, but a backend is the retrieve tool",
            "a completed retrieve run (python launch.py step=retrieve)",
        )  # fmt: skip
    reward_model = None
    if cfg.router.name == "ensemble" and cfg.router.aggregate == "reward":
        reward_model = reward_model_of(cfg.router)
    from quark.safety.guard import classifier_dir

    classifier = classifier_dir(cfg) if models else None
    check_kept_files(cfg.step)
    return OrchestrateInputs(models, index, reward_model, retrievals, classifier)  # type: ignore[arg-type]


def check_kept_files(step: Any) -> None:
    """The SQLite files the gateway keeps across runs (step.outcomes, step.memory.path), when
    they exist, are databases it can open: one cut short or of another kind is refused here,
    before the run starts (a missing one is created)."""
    from quark.core.files import sqlite_problem

    kept = [("step.outcomes", step.outcomes)]
    kept += [("step.memory.path", step.memory.path)] if step.memory.enabled else []
    for key, named in kept:
        path = Path(str(named)).expanduser()
        problem = sqlite_problem(path)
        if problem is not None:
            raise ConfigError(
                key, f"{path} {problem}",
                "a SQLite file the gateway wrote, or a new path (it is created); move a "
                "damaged file away to start afresh",
            )  # fmt: skip


def reward_model_of(router: Any) -> Path | None:
    """The reward model directory router.reward reads (reward_model), checked."""
    from quark.lineage.model_files import check_classifier

    allowed = "an align=reward_model run (its reward_model/) or such a directory"
    if str(router.reward) != "reward_model":
        return None
    if not router.reward_model_dir:
        raise ConfigError("router.reward_model_dir", "is null, but router.reward is reward_model",
                          allowed)  # fmt: skip
    directory = Path(str(router.reward_model_dir)).expanduser()
    if not directory.exists():
        raise ConfigError("router.reward_model_dir", f"{directory} does not exist", allowed)
    if (directory / MANIFEST).exists():
        verify_run(directory, "router.reward_model_dir", allowed)
    found = directory / "reward_model" if (directory / "reward_model").is_dir() else directory
    check_classifier(found, "router.reward_model_dir", allowed, "reward model")
    return found


def retrieve_run(named: Any, key: str, cfg: Any = None) -> Path | None:
    """A retrieve run named by path, or `latest:retrieve` (the one a pipeline handed over,
    else the newest completed one of the experiment: what a pipeline stage names before the
    run exists); checked."""
    from quark.lineage.finding import find_run

    if not named:
        return None
    allowed = (
        "a completed retrieve run directory (python launch.py step=retrieve), or latest:retrieve"
    )
    if str(named).startswith("latest:"):
        if str(named) != "latest:retrieve" or cfg is None:
            raise ConfigError(key, f"'{named}' is not a retrieve run", allowed)
        found = find_run(cfg, ("retrieve",))  # the handed-over run, else the newest
        if found is None:
            raise ConfigError(key, f"no completed retrieve run in experiment '{cfg.experiment_name}'",
                              allowed)  # fmt: skip
        return found
    path = Path(str(named)).expanduser()
    if not path.is_dir():
        raise ConfigError(
            key,
            f"{path} {'does not exist' if not path.exists() else 'is not a directory'}",
            allowed,
        )
    step = verify_run(path, key, allowed).get("step")
    if step != "retrieve":
        raise ConfigError(key, f"{path} is a {step} run", allowed)
    return path


def run(cfg: DictConfig, run: Run, inputs: OrchestrateInputs) -> dict[str, float]:
    from quark.export import quiet_exporters
    from quark.orchestrate.fleet import backend_specs, build_fleet
    from quark.orchestrate.gateway import DecisionLog, GatewaySettings, build_gateway
    from quark.orchestrate.memory import Memory
    from quark.orchestrate.outcomes import Outcomes
    from quark.orchestrate.router import Router
    from quark.serve.server import Server, bind

    quiet_exporters()
    # a line per request the gateway forwards would drown the log
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    step = cfg.step
    specs = [
        dataclasses.replace(spec, retrieval=str(inputs.retrievals[spec.name]))
        if spec.name in inputs.retrievals else spec
        for spec in backend_specs(step.backends)
    ]  # fmt: skip
    sock = bind(str(step.host), int(step.port))
    fleet = None
    try:
        # 1. The fleet, with the tools the gateway runs.
        tools = gateway_tools(step.tools, inputs.index)
        fleet = build_fleet(cfg, specs, tools, inputs.models, inputs.classifier)

        # 2. The router, and the classifier it needs, trained on generated requests.
        metrics: dict[str, float] = {}
        classifier = None
        if cfg.router.name != "rules":
            classifier, metrics = train_classifier(cfg, run)
        Path(str(step.outcomes)).parent.mkdir(parents=True, exist_ok=True)
        outcomes = Outcomes(Path(str(step.outcomes)))
        skills = {s.name: tuple(s.skills) for s in specs}
        router = Router(cfg.router, skills, classifier, outcomes, seed=int(cfg.seed))

        # 3. Memory, kept across runs.
        memory = Memory(Path(str(step.memory.path))) if step.memory.enabled else None
        reward = None
        if cfg.router.name == "ensemble" and cfg.router.aggregate == "reward":
            reward = reward_scorer(str(cfg.router.reward), inputs.reward_model)
    except BaseException:
        sock.close()
        if fleet is not None:
            fleet.stop()
        raise

    # 4. The gateway.
    api_key = step.api_key or os.environ.get("QUARK_API_KEY") or None
    settings = GatewaySettings(
        max_request_bytes=int(step.max_request_bytes),
        cascade_threshold=float(cfg.router.threshold),
        ensemble_aggregate=str(cfg.router.aggregate),
        max_tool_steps=int(step.tools.max_steps),
        max_tool_seconds=float(step.tools.max_seconds),
        memory_summarize=bool(step.memory.summarize),
    )
    decisions = DecisionLog(run.add_output("decisions.jsonl"))
    app = build_gateway(
        fleet, router, settings, api_key=api_key, memory=memory, outcomes=outcomes,
        tools=tools, reward=reward, decisions=decisions,
    )  # fmt: skip
    server = Server(app, sock, lifespan="on")
    server.start()
    started = time.perf_counter()
    log.info(
        "orchestrate: gateway on %s/v1 (router %s; backends %s) %s", server.url, cfg.router.name,
        ", ".join(f"{s.name} [{s.kind}]" for s in specs),
        "(API key required)" if api_key else "(no API key)",
    )  # fmt: skip
    try:
        prompts = [*([step.demo_prompt] if step.demo_prompt is not None else []),
                   *step.demo_prompts]  # fmt: skip
        if prompts:
            metrics |= demo(server.url, [str(p) for p in prompts], api_key)
            reason = "demo done"
        elif step.evaluate.enabled:
            from quark.orchestrate.evaluation import evaluate_gateway

            metrics |= evaluate_gateway(cfg, run, server.url, api_key, fleet, router, outcomes)
            reason = "evaluation done"
        else:
            reason = server.wait(step.max_seconds)
    finally:
        server.stop()
        fleet.stop()
        decisions.close()
        outcomes.close()
        if memory is not None:
            memory.close()
    log.info("orchestrate: stopped (%s) after %.1f s", reason, time.perf_counter() - started)
    stats = app.state.stats
    # what was served first (`quark runs` shows the first few), then the rest
    served = {
        "requests": float(stats.requests),
        "failed": float(stats.failed),
        **(
            {"accuracy/gateway": metrics["accuracy/gateway"]}
            if "accuracy/gateway" in metrics
            else {}
        ),
        "fallbacks": float(stats.fallbacks),
        "served_s": time.perf_counter() - started,
    }
    served |= {f"answered/{name}": float(count) for name, count in stats.by_backend.items()}
    return served | metrics


def gateway_tools(settings: Any, index: Path | None) -> dict[str, Any]:
    """The tools the gateway runs: the calculator, and with an index run retrieval over it and
    its knowledge graph."""
    from quark.orchestrate.tools import calculator_tool, load_index_tools

    tools = [calculator_tool()]
    if index is not None:
        tools += load_index_tools(index, int(settings.k), str(settings.mode))
        log.info("orchestrate: tools over %s", index)
    return {tool.name: tool for tool in tools}


def train_classifier(cfg: DictConfig, run: Run) -> tuple[Any, dict[str, float]]:
    """The request-kind classifier, trained on the generated train split and scored on the
    test split; saved as router/classifier.npz."""
    from quark.orchestrate.kinds import labelled_requests
    from quark.orchestrate.router import KindClassifier
    from quark.retrieve.embedders import load_embedder, quiet_libraries

    started = time.perf_counter()
    quiet_libraries()
    embedder = load_embedder(cfg.embedder)
    requests = labelled_requests(int(cfg.step.classifier.per_kind), seed=int(cfg.seed))
    train = [r for r in requests if r.split == "train"]
    test = [r for r in requests if r.split == "test"]
    classifier = KindClassifier.train(
        embedder, [r.text for r in train], [r.kind for r in train],
        c=float(cfg.step.classifier.c), seed=int(cfg.seed),
    )  # fmt: skip
    predicted = classifier.predict([r.text for r in test])
    right = sum(kind == r.kind for (kind, _p), r in zip(predicted, test, strict=True))
    accuracy = right / max(len(test), 1)
    classifier.save(run.add_output(run.path("router", "classifier.npz")))
    log.info(
        "orchestrate: request-kind classifier: %d train, %d held-out requests, accuracy %.3f "
        "(%.1f s)", len(train), len(test), accuracy, time.perf_counter() - started,
    )  # fmt: skip
    return classifier, {
        "classifier/accuracy": accuracy,
        "classifier/train_requests": float(len(train)),
        "classifier/test_requests": float(len(test)),
    }


def reward_scorer(spec: str, directory: Path | None) -> Any:
    """A function scoring answers to a question: router.reward as align.reward names rewards
    (reward_model, or module:function with TRL's signature; quark.align.rewards)."""
    from quark.align.rewards import load_reward
    from quark.data.prompts import PromptRecord

    try:
        reward = load_reward(spec, directory)
    except ConfigError as exc:  # the same rewards, named by this step's key
        raise ConfigError("router.reward", exc.problem, exc.allowed) from None

    def score(question: str, answers: list[str]) -> list[float]:
        asked = ({"role": "user", "content": question},)
        return [float(s) for s in reward.score([PromptRecord(asked) for _ in answers], answers)]

    return score


def demo(url: str, prompts: list[str], api_key: str | None) -> dict[str, float]:
    """Ask the gateway each prompt with the official client; print every answer and its route."""
    import json

    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key or "none", max_retries=0)
    started = time.perf_counter()
    for prompt in prompts:
        answer = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": prompt}], max_tokens=48,
            temperature=0,
        )  # fmt: skip
        extra = answer.model_extra or {}
        choice = answer.choices[0]
        refused = (
            " (refused by the safety guard)" if choice.finish_reason == "content_filter" else ""
        )
        print(f"{prompt}\n-> {answer.model}: {choice.message.content or ''}{refused}")
        if extra.get("sources"):  # an in-process backend with a retrieve run answered (RAG)
            print("sources: " + ", ".join(
                f"{s['path']}:{s['start_line']}-{s['end_line']} ({s['name']})"
                for s in extra["sources"]
            ))  # fmt: skip
        print(f"route: {json.dumps(extra.get('route', {}), ensure_ascii=False)}")
    return {"demo_seconds": time.perf_counter() - started}
