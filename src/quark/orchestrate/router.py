"""Which backend answers a request, and why (conf/router/*.yaml).

    rules       regular expressions to backends, the first that matches wins
    classifier  the request's kind (arithmetic, code, docs, smalltalk) from its embedding (the
                retrieve step's embedder) and a logistic regression trained on requests Quark
                generates (quark.orchestrate.kinds); then the backends whose skills hold it
    bandit      the kind as the classifier says, then the backend that Thompson sampling picks
                from what the gateway has learned of each backend on that kind
                (quark.orchestrate.outcomes: verified answers and user feedback, in SQLite)
    cascade     the backends in order, cheapest first: the next is asked only when an answer
                fails its verifier or its mean token log-probability is below a threshold
    ensemble    several backends at once; one answer is picked by majority vote, by a verifier,
                or by a reward model's score

Every decision carries its reason, which the gateway returns and logs. Whatever the strategy,
the other backends follow as fallbacks, tried in order when the chosen one fails.
"""

from __future__ import annotations

import ast
import asyncio
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quark.core.errors import ConfigError

STRATEGIES = ("rules", "classifier", "bandit", "cascade", "ensemble")
# what the classifier reads of a request: its kind shows in its opening, and embedding cost
# grows with length (a code request can be hundreds of tokens)
CLASSIFIED_CHARACTERS = 200
AGGREGATES = ("majority", "verifier", "reward")


@dataclass
class Decision:
    strategy: str
    kind: str | None
    backends: list[str]  # asked in this order (ensemble: all at once); the rest are fallbacks
    reason: str
    mode: str = "single"  # single | cascade | ensemble
    scores: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "kind": self.kind,
            "backends": self.backends,
            "mode": self.mode,
            "reason": self.reason,
            **({"scores": {k: round(v, 4) for k, v in self.scores.items()}} if self.scores else {}),
        }


class KindClassifier:
    """The kind of a request from its embedding: multinomial logistic regression (scikit-learn
    trains it; predicting is a softmax of coef @ x + intercept, kept as plain arrays)."""

    def __init__(
        self, embedder: Any, coef: np.ndarray, intercept: np.ndarray, kinds: list[str]
    ) -> None:
        self.embedder, self.coef, self.intercept, self.kinds = embedder, coef, intercept, kinds

    @classmethod
    def train(
        cls, embedder: Any, texts: list[str], kinds: list[str], c: float = 4.0, seed: int = 0
    ) -> KindClassifier:
        from sklearn.linear_model import LogisticRegression

        vectors = embedder.encode([text[:CLASSIFIED_CHARACTERS] for text in texts])
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        model.fit(vectors, kinds)
        coef, intercept = model.coef_, model.intercept_
        if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes
            coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        return cls(embedder, coef, intercept, [str(k) for k in model.classes_])

    def probabilities(self, texts: list[str]) -> np.ndarray:
        vectors = self.embedder.encode([text[:CLASSIFIED_CHARACTERS] for text in texts])
        scores = vectors @ self.coef.T + self.intercept
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        return np.asarray(scores / scores.sum(axis=1, keepdims=True))

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        probs = self.probabilities(texts)
        return [(self.kinds[int(row.argmax())], float(row.max())) for row in probs]

    def save(self, path: Path) -> None:
        np.savez(path, coef=self.coef, intercept=self.intercept, kinds=np.array(self.kinds))

    @classmethod
    def load(cls, path: Path, embedder: Any) -> KindClassifier:
        saved = np.load(path)
        return cls(embedder, saved["coef"], saved["intercept"], [str(k) for k in saved["kinds"]])


# a request's kind, the confidence in it, and how it was found
Found = tuple[str | None, float, str]


class KindBatcher:
    """The kinds of requests that arrive together found in one embedding pass, in a worker
    thread: the event loop keeps serving while the classifier runs, and 32 clients cost a
    few batched passes instead of 32 one-by-one ones."""

    def __init__(self, router: Router, max_batch: int = 64) -> None:
        self.router = router
        self.max_batch = max_batch
        self.pending: list[tuple[str, asyncio.Future[Found]]] = []
        self.flushing = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps weak references

    async def kind_of(self, text: str) -> Found:
        if self.router.classifier is None:
            return self.router.kind_of(text)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Found] = loop.create_future()
        self.pending.append((text, future))
        if not self.flushing:
            self.flushing = True
            self._task = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self.pending:
                await asyncio.sleep(0)  # requests arriving in the same tick join the batch
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    found = await asyncio.to_thread(self.router.kinds_of, [t for t, _ in batch])
                except Exception as exc:  # every waiting request learns of it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, found, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.flushing = False


@dataclass
class Rule:
    pattern: re.Pattern[str]
    backend: str
    kind: str | None


class Router:
    """Decides per request (module docstring); `settings` is cfg.router."""

    def __init__(
        self,
        settings: Any,
        skills: dict[str, tuple[str, ...]],
        classifier: KindClassifier | None = None,
        outcomes: Any = None,
        seed: int = 0,
    ) -> None:
        self.strategy = str(settings.name)
        self.settings = settings
        self.skills = skills  # backend -> the kinds it is meant for, in configured order
        self.names = list(skills)
        self.classifier = classifier
        self.outcomes = outcomes
        self.rng = random.Random(seed)
        self.rules = [
            Rule(re.compile(str(r["pattern"]), re.IGNORECASE), str(r["backend"]), r.get("kind"))
            for r in settings.get("rules") or []
        ]

    def kind_of(self, text: str) -> Found:
        """The request's kind, the confidence, and how it was found."""
        return self.kinds_of([text])[0]

    def kinds_of(self, texts: list[str]) -> list[Found]:
        """kind_of for many requests, the classifier's embeddings computed in one pass."""
        found: list[Found | None] = [self._by_rule(text) for text in texts]
        unruled = [i for i, f in enumerate(found) if f is None]
        if unruled and self.classifier is not None:
            predicted = self.classifier.predict([texts[i] for i in unruled])
            for i, (kind, probability) in zip(unruled, predicted, strict=True):
                found[i] = (kind, probability, "classifier")
        return [f or (None, 0.0, "no classifier") for f in found]

    def rule_kind(self, text: str) -> str | None:
        """The kind a rule gives the request, without the classifier."""
        found = self._by_rule(text)
        return found[0] if found else None

    def _by_rule(self, text: str) -> Found | None:
        for rule in self.rules:
            if rule.kind and rule.pattern.search(text):
                return str(rule.kind), 1.0, f"rule /{rule.pattern.pattern}/"
        return None

    def decide(self, text: str, available: set[str], found: Found | None = None) -> Decision:
        """The decision for a request whose last user message is `text` (its kind `found`
        already, or found here); backends outside `available` (circuit open) are passed over
        while any other can answer."""
        kind, confidence, how = found or self.kind_of(text)
        said = f"kind {kind} (p={confidence:.2f}, {how})" if kind else "kind unknown"
        if self.strategy == "rules":
            for rule in self.rules:
                if rule.pattern.search(text):
                    order = self._fallbacks([rule.backend], available)
                    return Decision("rules", kind, order, f"/{rule.pattern.pattern}/ matched")
            default = str(self.settings.get("default") or self.names[0])
            return Decision(
                "rules", kind, self._fallbacks([default], available),
                f"no rule matched: the default {default}",
            )  # fmt: skip
        if self.strategy == "classifier":
            skilled = self._skilled(kind)
            reason = f"{said}: " + (
                f"backends with that skill: {', '.join(skilled)}" if skilled else "no backend "
                "has that skill: the configured order"
            )  # fmt: skip
            return Decision("classifier", kind, self._fallbacks(skilled, available), reason)
        if self.strategy == "bandit":
            return self._bandit(kind, said, available)
        if self.strategy == "cascade":
            order = [str(b) for b in self.settings.order]
            return Decision(
                "cascade", kind, order, f"{said}: cascade {' -> '.join(order)}", mode="cascade"
            )
        if self.strategy == "ensemble":
            members = [str(b) for b in self.settings.members]
            aggregate = str(self.settings.aggregate)
            return Decision(
                "ensemble", kind, members,
                f"{said}: ensemble of {', '.join(members)} by {aggregate}", mode="ensemble",
            )  # fmt: skip
        raise ConfigError(
            "router.name", f"'{self.strategy}' is not a router", ", ".join(STRATEGIES)
        )

    def _bandit(self, kind: str | None, said: str, available: set[str]) -> Decision:
        settings = self.settings
        pool = [n for n in self.names if n in available] or list(self.names)
        if settings.get("skilled_only", True) and kind is not None:
            pool = [n for n in pool if kind in self.skills[n]] or pool
        chosen, scores = self.outcomes.choose(
            kind or "unknown", pool, str(settings.rule), self.rng,
            float(settings.get("latency_weight", 0.0)),
        )  # fmt: skip
        ranked = sorted(scores, key=lambda n: -scores[n])
        order = self._fallbacks([chosen, *[n for n in ranked if n != chosen]], available)
        shown = ", ".join(f"{n} {scores[n]:.2f}" for n in ranked)
        reason = f"{said}: {settings.rule} sampled {shown}: {chosen}"
        return Decision("bandit", kind, order, reason, scores=scores)

    def _skilled(self, kind: str | None) -> list[str]:
        return [n for n in self.names if kind is not None and kind in self.skills[n]]

    def _fallbacks(self, preferred: list[str], available: set[str]) -> list[str]:
        """`preferred` then every other backend; those with an open circuit go last."""
        order = list(dict.fromkeys([*preferred, *self.names]))
        return [n for n in order if n in available] + [n for n in order if n not in available]


def verify(kind: str | None, request: str, answer: str) -> bool | None:
    """Whether an answer is right where it can be checked without a reference: arithmetic by
    the calculator, code by whether it parses; None where nothing can tell."""
    from quark.orchestrate.calculator import (
        ToolError,
        arithmetic_expression,
        calculate,
        format_number,
    )

    if kind == "arithmetic":
        expression = arithmetic_expression(request)
        if expression is None:
            return None
        try:
            expected = format_number(calculate(expression))
        except ToolError:
            return None
        # the answer's first number, after any restatement of the question ("3 + 4 = 7")
        tail = answer.split("=")[-1] if "=" in answer else answer
        found = re.search(r"-?\d+(?:\.\d+)?", tail)
        return found is not None and found.group(0) == expected
    if kind == "code":
        return parses_as_code(answer)
    return None


def parses_as_code(answer: str) -> bool:
    """Whether the first line of `answer` (a code completion) is Python on its own or as the
    head of a block."""
    text = answer.strip().strip("`").removeprefix("python").strip()
    line = text.splitlines()[0].strip() if text else ""
    if not line:
        return False
    for candidate in (line, line + "\n    pass"):
        try:
            ast.parse(candidate)
            return True
        except SyntaxError:
            continue
    return False


def mean_logprob(completion: dict[str, Any]) -> float | None:
    """The mean token log-probability of a chat completion's first choice (None when the
    backend gave none)."""
    choice = (completion.get("choices") or [{}])[0]
    content = ((choice.get("logprobs") or {}).get("content")) or []
    values = [float(entry["logprob"]) for entry in content if "logprob" in entry]
    return sum(values) / len(values) if values else None


def answer_text(completion: dict[str, Any]) -> str:
    choice = (completion.get("choices") or [{}])[0]
    return str((choice.get("message") or {}).get("content") or "")


def normalised(text: str) -> str:
    """An answer as majority voting compares it: its first number if it has one, else its
    words lowercased."""
    number = re.search(r"-?\d+(?:\.\d+)?", text.split("=")[-1])
    return number.group(0) if number else " ".join(re.findall(r"\w+", text.lower()))


def check_router(settings: Any, names: list[str]) -> None:
    """cfg.router against the backends, refused with the key of the first problem."""
    strategy = str(settings.name)
    if strategy not in STRATEGIES:
        raise ConfigError("router.name", f"'{strategy}' is not a router", ", ".join(STRATEGIES))
    allowed = f"one of the backends: {', '.join(names)}"
    for number, rule in enumerate(settings.get("rules") or []):
        if rule.get("backend") not in names:
            raise ConfigError(
                f"router.rules.{number}.backend", f"'{rule.get('backend')}' is not a backend",
                allowed,
            )  # fmt: skip
        try:
            re.compile(str(rule.get("pattern")))
        except re.error as exc:
            raise ConfigError(
                f"router.rules.{number}.pattern", f"is not a regular expression ({exc})",
                "a Python regular expression",
            ) from None  # fmt: skip
    if strategy == "rules" and settings.get("default") and settings.default not in names:
        raise ConfigError("router.default", f"'{settings.default}' is not a backend", allowed)
    if strategy == "cascade":
        _check_named(settings, "order", names, f"two or more, cheapest first; {allowed}")
    if strategy == "ensemble":
        _check_named(settings, "members", names, f"two or more; {allowed}")
        if str(settings.aggregate) not in AGGREGATES:
            raise ConfigError(
                "router.aggregate", f"'{settings.aggregate}' is not an aggregation",
                ", ".join(AGGREGATES),
            )  # fmt: skip
    if strategy == "bandit" and str(settings.rule) not in ("thompson", "greedy"):
        raise ConfigError(
            "router.rule", f"'{settings.rule}' is not a bandit rule", "thompson, greedy"
        )


def _check_named(settings: Any, key: str, names: list[str], allowed: str) -> None:
    """router.<key> names two or more backends, every one of them a backend."""
    named = list(settings.get(key) or [])
    bad = [b for b in named if b not in names]
    if len(named) < 2 or bad:
        problem = (
            f"{json.dumps(bad[0])} is not a backend" if bad else "names fewer than two backends"
        )
        raise ConfigError(f"router.{key}", problem, allowed)
