"""Schemas of the gateway: conf/step/orchestrate.yaml and the `router` group."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, ranged

ROUTERS = ("rules", "classifier", "bandit", "cascade", "ensemble")
KINDS = ("arithmetic", "code", "docs", "smalltalk")


@dataclass
class BackendSchema:
    name: str = "???"
    # exactly one of: an OpenAI-compatible base URL (…/v1); a model served in this process (a
    # run or model directory, or latest:<step> for the newest run of a model step); a tool
    # that answers on its own (calculator, retrieve)
    url: str | None = None
    model_dir: str | None = None
    tool: str | None = None
    model: str | None = None  # the model id a remote expects; null: the first it lists
    skills: list[str] = field(default_factory=list)  # request kinds it is meant for
    max_concurrency: int = ranged(32, ge=1)  # requests in flight; more wait for a slot
    timeout_s: float = ranged(60.0, gt=0)  # to connect, and between chunks of an answer
    retries: int = ranged(2, ge=0)  # more tries for faults before anything was answered
    api_key: str | None = None
    tool_calls: str = choice("prompt", ("native", "prompt", "none"))
    context_tokens: int | None = ranged(None, ge=16)
    retrieval: str | None = None  # in-process: a retrieve run its chat requests may use
    # chat | completions (the conversation as a prompt: base models) | auto (completions for an
    # in-process model without a chat template)
    api: str = choice("auto", ("auto", "chat", "completions"))

    def check_skills(self, key: str) -> None:
        for number, skill in enumerate(self.skills):
            if skill not in KINDS:
                raise ConfigError(
                    f"{key}.skills.{number}", f"'{skill}' is not a request kind",
                    f"allowed: {', '.join(KINDS)}",
                )  # fmt: skip


@dataclass
class InProcessSchema:
    """How in-process backends are served (as step=serve serves one model)."""

    threads: int | None = ranged(None, ge=1)
    max_batch_size: int = ranged(16, ge=1)
    max_prefill_tokens: int = ranged(2048, ge=1)
    max_tokens: int = ranged(256, ge=1)
    max_waiting: int = ranged(256, ge=1)
    max_request_bytes: int = ranged(1_000_000, ge=1)


@dataclass
class BreakerSchema:
    failures_to_open: int = ranged(3, ge=1)
    cooldown_s: float = ranged(10.0, gt=0)


@dataclass
class ClassifierSchema:
    per_kind: int = ranged(150, ge=10)  # generated training requests of each kind
    c: float = ranged(4.0, gt=0)  # inverse regularisation of the logistic regression


@dataclass
class ToolsSchema:
    index: str | None = None  # a retrieve run: the retrieve and graph_lookup tools
    k: int = ranged(4, ge=1, le=20)
    mode: str = choice("hybrid", ("dense", "bm25", "hybrid", "graph"))
    max_steps: int = ranged(4, ge=1)  # tool rounds before the loop is stopped
    max_seconds: float = ranged(30.0, gt=0)


@dataclass
class MemorySchema:
    enabled: bool = True
    path: str = "???"  # SQLite file: conversations and profiles, kept across runs
    summarize: bool = True  # dropped turns summarised in one system message


@dataclass
class GatewayEvaluateSchema:
    enabled: bool = False  # run the mixed workload through the gateway, report, then stop
    per_kind: int = ranged(12, ge=1)  # test requests of each kind
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    latency_requests: int = ranged(32, ge=1)  # requests per concurrency level
    max_tokens: int = ranged(24, ge=1)
    bandit_rounds: int = ranged(200, ge=0)  # simulated rounds of the bandit's convergence


@dataclass
class OrchestrateStepSchema:
    name: str = "orchestrate"
    host: str = "127.0.0.1"
    port: int = ranged(8100, ge=0, le=65535)
    api_key: str | None = None
    device: str = choice("auto", ("auto", "cpu", "cuda"))
    backends: list[BackendSchema] = field(default_factory=list)
    in_process: InProcessSchema = field(default_factory=InProcessSchema)
    breaker: BreakerSchema = field(default_factory=BreakerSchema)
    classifier: ClassifierSchema = field(default_factory=ClassifierSchema)
    tools: ToolsSchema = field(default_factory=ToolsSchema)
    memory: MemorySchema = field(default_factory=MemorySchema)
    outcomes: str = "???"  # SQLite file of what the router learned, kept across runs
    evaluate: GatewayEvaluateSchema = field(default_factory=GatewayEvaluateSchema)
    max_request_bytes: int = ranged(1_000_000, ge=1)
    max_seconds: float | None = ranged(None, gt=0)
    demo_prompt: str | None = None  # ask the gateway this, print the answer and route, stop
    demo_prompts: list[str] = field(default_factory=list)  # several, in order (after demo_prompt)

    @property
    def ends_by_itself(self) -> bool:
        """Whether a run answers its demo prompts or its evaluation and stops (a run a pipeline
        or a rerun can reuse), rather than serving until stopped."""
        return self.demo_prompt is not None or bool(self.demo_prompts) or self.evaluate.enabled

    def check(self) -> None:
        for number, backend in enumerate(self.backends):
            backend.check_skills(f"step.backends.{number}")
        for number, level in enumerate(self.evaluate.concurrency):
            if level < 1:
                raise ConfigError(
                    f"step.evaluate.concurrency.{number}", f"{level} is not positive", ">= 1"
                )


@dataclass
class RouterRuleSchema:
    pattern: str = "???"  # a Python regular expression, searched case-insensitively
    backend: str = "???"
    kind: str | None = None  # the kind the rule says a matching request is


@dataclass
class RouterSchema:
    name: str = choice("classifier", ROUTERS)
    rules: list[RouterRuleSchema] = field(default_factory=list)
    default: str | None = None  # rules: when none matches; null: the first backend
    # bandit
    rule: str = choice("thompson", ("thompson", "greedy"))
    skilled_only: bool = True  # choose among backends with the request's kind as a skill
    latency_weight: float = ranged(0.0, ge=0)  # score = sampled success - weight x mean latency
    # cascade: cheapest first; escalate below this mean token log-prob or on a failed verifier
    order: list[str] = field(default_factory=list)
    threshold: float = -1.5
    # ensemble
    members: list[str] = field(default_factory=list)
    aggregate: str = choice("majority", ("majority", "verifier", "reward"))
    # aggregate=reward: reward_model (an align=reward_model run in reward_model_dir), or a
    # Python callable as module:function with TRL's reward signature (as align.reward)
    reward: str = "reward_model"
    reward_model_dir: str | None = None
