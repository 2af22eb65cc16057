"""The schema of conf/step/evaluate.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quark.core.errors import ConfigError
from quark.core.schemas.fields import choice, pattern, ranged
from quark.core.schemas.tolerance import DIRECTIONS, parse_tolerance

# what step.tasks may name: Quark's own measurements (lm-eval's tasks are in step.lm_eval)
TASKS = ("perplexity", "exact_match", "red_team", "rag")
FRAMINGS = (
    "plain", "jailbreak", "roleplay", "hypothetical", "base64", "leetspeak", "retrieved_injection",
)  # fmt: skip
MUTATIONS = ("split_words", "look_alike", "paraphrase", "padding", "base64", "reverse", "spell_out")


@dataclass
class ExactMatchSchema:
    # a directory holding <split>.jsonl of {prompt, response} records; null: the data run the
    # model was fine-tuned on, else the newest completed data run of this experiment holding it
    data_dir: str | None = None
    split: str = pattern("test", r"^[A-Za-z0-9_.-]+$", "a file name: <split>.jsonl")
    # prompts checked (the first ones of the split), generated greedily in batches
    samples: int = ranged(200, ge=1)
    batch_size: int = ranged(64, ge=1)
    # an answer not finished within this many tokens counts as wrong
    max_new_tokens: int = ranged(16, ge=1)
    # the system message the model was fine-tuned with, if any
    system_prompt: str | None = None


@dataclass
class LmEvalSchema:
    # lm-eval-harness task names: quark_arithmetic (shipped, offline), or any task whose data
    # is on this machine; [] runs none (and lm_eval is not imported)
    tasks: list[str] = field(default_factory=list)
    # examples per task (the first ones); null: all
    limit: int | None = ranged(100, ge=1)
    # null: each task's own default
    num_fewshot: int | None = ranged(None, ge=0)
    batch_size: int = ranged(16, ge=1)
    # a directory of your own lm-eval task YAMLs
    include_path: str | None = None


@dataclass
class RegressionSchema:
    # a run directory (its manifest's metrics) or a YAML or JSON file of metric: value;
    # null: no regression check
    baseline: str | None = None
    # metric: how much worse it may get, a number (absolute) or a percentage ("5%"); null
    # rather than {} in the YAML, so that a whole mapping can be given on the command line
    tolerances: dict[str, Any] | None = None
    # for compared metrics not in tolerances
    default_tolerance: Any = 0
    # metric: lower | higher; metrics named like perplexity, loss (lower), accuracy, acc,
    # exact_match (higher) need no entry; other metrics are compared only when listed here
    directions: dict[str, str] | None = None


@dataclass
class AdaptiveSchema:
    # rounds of mutating the requests closest to passing; 0: no adaptive attack
    rounds: int = ranged(5, ge=0)
    # unsafe requests the attack starts from
    seeds: int = ranged(40, ge=1)
    # the lowest-scoring blocked requests mutated each round
    keep: int = ranged(16, ge=1)
    mutations: list[str] = field(default_factory=lambda: list(MUTATIONS))


@dataclass
class RedTeamSchema:
    # a data=safety_requests run or directory (its test.jsonl: templates never trained on);
    # null: the data the guard's classifier was trained on, else the newest such data run,
    # else requests generated from the seed
    data_dir: str | None = None
    # unsafe requests, each sent in every framing
    attacks: int = ranged(40, ge=1)
    # benign requests (false refusals)
    benign: int = ranged(100, ge=1)
    framings: list[str] = field(default_factory=lambda: list(FRAMINGS))
    # tokens each answer may have (the suite measures refusals, not answers)
    max_new_tokens: int = ranged(16, ge=1)
    # requests in flight at once (the server batches them)
    concurrency: int = ranged(16, ge=1)
    adaptive: AdaptiveSchema = field(default_factory=AdaptiveSchema)


@dataclass
class RagSchema:
    # a retrieve run; null: the newest completed retrieve run of this experiment
    index: str | None = None
    # questions asked (about the index's test-split classes and functions)
    questions: int = ranged(100, ge=1)
    k: int = ranged(3, ge=1, le=50)
    mode: str = choice("hybrid", ("dense", "bm25", "hybrid", "graph"))
    # the model's tokens the retrieved chunks may fill; null: half its positions
    max_context_tokens: int | None = ranged(None, ge=16)
    max_new_tokens: int = ranged(24, ge=1)
    batch_size: int = ranged(16, ge=1)


@dataclass
class EvaluateStepSchema:
    name: str = "evaluate"
    # a pretrain, finetune or align run directory (its hf/ export), an optimize run (its export, in
    # its own runtime) or a Hugging Face model directory; null: the newest completed finetune
    # run of this experiment, else its newest pretrain run
    model_dir: str | None = None
    # a data run with token shards (perplexity on its validation split); null: the data run
    # the model was trained on, else the newest completed one of this experiment
    data_dir: str | None = None
    # what to measure: perplexity, exact_match, red_team (needs safety=rules or classifier),
    # rag (answers with and without a retrieve run's chunks);
    # null: perplexity, and exact_match when the model has a chat template (it was fine-tuned)
    tasks: list[str] | None = None
    # perplexity: the first val_samples windows of seq_len tokens of the val split (at most
    # the model's positions), teacher forced; null: those the model's pretrain run validated
    # on (its val_ppl is then this perplexity), else 128 and 32
    seq_len: int | None = ranged(None, ge=2)
    val_samples: int | None = ranged(None, ge=1)
    batch_size: int = ranged(8, ge=1)
    exact_match: ExactMatchSchema = field(default_factory=ExactMatchSchema)
    lm_eval: LmEvalSchema = field(default_factory=LmEvalSchema)
    regression: RegressionSchema = field(default_factory=RegressionSchema)
    red_team: RedTeamSchema = field(default_factory=RedTeamSchema)
    rag: RagSchema = field(default_factory=RagSchema)
    # CPU threads of every runtime (torch, ONNX Runtime, llama.cpp); null: torch's default
    threads: int | None = ranged(None, ge=1)

    def check(self) -> None:
        for index, task in enumerate(self.tasks or []):
            if task not in TASKS:
                raise ConfigError(
                    f"step.tasks.{index}", f"'{task}' is not a task", f"allowed: {', '.join(TASKS)}"
                )
        if self.tasks is not None and not self.tasks and not self.lm_eval.tasks:
            raise ConfigError(
                "step.tasks",
                "nothing to measure",
                f"name one of {', '.join(TASKS)}, or lm-eval tasks",
            )
        for key, chosen, allowed in (
            ("step.red_team.framings", self.red_team.framings, FRAMINGS),
            ("step.red_team.adaptive.mutations", self.red_team.adaptive.mutations, MUTATIONS),
        ):
            for index, name in enumerate(chosen):
                if name not in allowed:
                    raise ConfigError(
                        f"{key}.{index}", f"'{name}' is not one", f"allowed: {', '.join(allowed)}"
                    )
        regression = self.regression
        for metric, tolerance in (regression.tolerances or {}).items():
            parse_tolerance(f"step.regression.tolerances.{metric}", tolerance)
        parse_tolerance("step.regression.default_tolerance", regression.default_tolerance)
        for metric, side in (regression.directions or {}).items():
            if side not in DIRECTIONS:
                raise ConfigError(
                    f"step.regression.directions.{metric}",
                    f"'{side}' is not a direction",
                    f"allowed: {', '.join(DIRECTIONS)}",
                )
