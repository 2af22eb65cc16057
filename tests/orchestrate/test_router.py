"""The router's decisions and reasons for every strategy, its config refused with the key at
fault, the classifier trained on generated requests, and the verifiers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from quark.core.errors import ConfigError
from quark.orchestrate.kinds import labelled_requests
from quark.orchestrate.outcomes import Outcomes
from quark.orchestrate.router import (
    KindBatcher,
    KindClassifier,
    Router,
    check_router,
    mean_logprob,
    normalised,
    parses_as_code,
    verify,
)

from .test_gateway import HashingEmbedder

SKILLS = {"calc": ("arithmetic",), "coder": ("code", "docs"), "chat": ("smalltalk",)}


def settings(**given: Any) -> Any:
    base = {"name": "classifier", "rules": [], "rule": "thompson", "skilled_only": True,
            "latency_weight": 0.0, "order": [], "threshold": -1.5, "members": [],
            "aggregate": "majority", "default": None}  # fmt: skip
    return OmegaConf.create(base | given)


@pytest.fixture(scope="module")
def classifier() -> KindClassifier:
    train = [r for r in labelled_requests(80, seed=0) if r.split == "train"]
    return KindClassifier.train(HashingEmbedder(), [r.text for r in train], [r.kind for r in train])


def test_the_classifier_finds_kinds_of_requests_it_never_saw(classifier: KindClassifier) -> None:
    test = [r for r in labelled_requests(80, seed=0) if r.split == "test"]
    predicted = classifier.predict([r.text for r in test])
    accuracy = np.mean([kind == r.kind for (kind, _p), r in zip(predicted, test, strict=True)])
    assert accuracy > 0.8
    assert all(0 < p <= 1 for _kind, p in predicted)


def test_the_classifier_saves_and_loads_to_the_same_predictions(
    classifier: KindClassifier, tmp_path: Path
) -> None:
    texts = ["What is 3 + 4?", "Hello there!"]
    classifier.save(tmp_path / "classifier.npz")
    loaded = KindClassifier.load(tmp_path / "classifier.npz", classifier.embedder)
    assert loaded.predict(texts) == classifier.predict(texts)


def test_classifier_routes_to_the_skilled_backend_and_passes_over_open_circuits(
    classifier: KindClassifier,
) -> None:
    router = Router(settings(), SKILLS, classifier)
    decision = router.decide("Compute 12 * 7 - 3.", set(SKILLS))
    assert decision.kind == "arithmetic" and decision.backends == ["calc", "coder", "chat"]
    assert "backends with that skill: calc" in decision.reason
    down = router.decide("Compute 12 * 7 - 3.", {"coder", "chat"})
    assert down.backends == ["coder", "chat", "calc"]  # open circuits last


def test_rules_match_in_order_and_fall_to_the_default() -> None:
    rules = [{"pattern": r"\d\s*[-+*]\s*\d", "backend": "calc", "kind": "arithmetic"},
             {"pattern": "def ", "backend": "coder"}]  # fmt: skip
    router = Router(settings(name="rules", rules=rules, default="chat"), SKILLS)
    assert router.decide("what is 3 + 4", set(SKILLS)).backends[0] == "calc"
    assert router.decide("what is 3 + 4", set(SKILLS)).kind == "arithmetic"
    assert router.decide("def f(x):", set(SKILLS)).backends[0] == "coder"
    other = router.decide("good morning", set(SKILLS))
    assert other.backends[0] == "chat" and "default" in other.reason


def test_bandit_samples_from_what_was_learned(classifier: KindClassifier, tmp_path: Path) -> None:
    skills = {"a": ("smalltalk",), "b": ("smalltalk",), "calc": ("arithmetic",)}
    with Outcomes(tmp_path / "o.sqlite") as outcomes:
        for _ in range(20):
            outcomes.record("a", "smalltalk", False)
            outcomes.record("b", "smalltalk", True)
        router = Router(settings(name="bandit"), skills, classifier, outcomes)
        chosen = [router.decide("Hi! How are you doing?", set(skills)).backends[0]
                  for _ in range(20)]  # fmt: skip
        assert chosen.count("b") >= 18
        decision = router.decide("Hi! How are you doing?", set(skills))
        assert "calc" not in decision.scores  # among the skilled only
        assert "thompson sampled" in decision.reason


def test_cascade_and_ensemble_decisions_say_their_mode() -> None:
    cascade = Router(settings(name="cascade", order=["chat", "coder"]), SKILLS)
    assert cascade.decide("hi", set(SKILLS)).mode == "cascade"
    ensemble = Router(settings(name="ensemble", members=["calc", "chat"]), SKILLS)
    decision = ensemble.decide("hi", set(SKILLS))
    assert decision.mode == "ensemble" and decision.backends == ["calc", "chat"]


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ({"name": "oracle"}, "router.name"),
        (
            {"name": "rules", "rules": [{"pattern": "x", "backend": "nobody"}]},
            "router.rules.0.backend",
        ),
        (
            {"name": "rules", "rules": [{"pattern": "(", "backend": "calc"}]},
            "router.rules.0.pattern",
        ),
        ({"name": "rules", "default": "nobody"}, "router.default"),
        ({"name": "cascade", "order": ["calc"]}, "router.order"),
        ({"name": "cascade", "order": ["calc", "nobody"]}, "router.order"),
        (
            {"name": "ensemble", "members": ["calc", "chat"], "aggregate": "vote"},
            "router.aggregate",
        ),
        ({"name": "bandit", "rule": "ucb"}, "router.rule"),
    ],
)
def test_bad_router_configs_name_the_key(given: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_router(settings(**given), list(SKILLS))
    assert refused.value.key == key


def test_requests_arriving_together_are_classified_in_one_pass(classifier: KindClassifier) -> None:
    calls: list[int] = []
    original = classifier.predict

    def counted(texts: list[str]) -> list[tuple[str, float]]:
        calls.append(len(texts))
        return original(texts)

    router = Router(settings(), SKILLS, classifier)
    router.classifier.predict = counted  # type: ignore[union-attr,method-assign]
    batcher = KindBatcher(router)

    async def many() -> list[Any]:
        texts = ["What is 2 + 2?", "Hello!", "def f(x):"] * 5
        return list(await asyncio.gather(*(batcher.kind_of(t) for t in texts)))

    found = asyncio.run(many())
    assert len(found) == 15 and calls == [15]
    assert found[0][0] == "arithmetic" and found[1][0] == "smalltalk"


@pytest.mark.parametrize(
    ("kind", "request_", "answer", "right"),
    [
        ("arithmetic", "What is 12 * 3 - 4?", "32", True),
        ("arithmetic", "What is 12 * 3 - 4?", "12 * 3 - 4 = 32", True),
        ("arithmetic", "What is 12 * 3 - 4?", "It is 31", False),
        ("arithmetic", "Tell me a joke", "ha", None),
        ("code", "complete", "    return a + b", True),
        ("code", "complete", "for x in items:", True),
        ("code", "complete", "return a +", False),
        ("smalltalk", "hi", "hello", None),
    ],
)
def test_verifiers(kind: str, request_: str, answer: str, right: bool | None) -> None:
    assert verify(kind, request_, answer) is right


def test_helpers_read_answers() -> None:
    completion = {"choices": [{"message": {"content": "x"},
                               "logprobs": {"content": [{"logprob": -1.0}, {"logprob": -3.0}]}}]}  # fmt: skip
    assert mean_logprob(completion) == -2.0
    assert mean_logprob({"choices": [{"message": {"content": "x"}}]}) is None
    assert normalised("3 + 4 = 7") == "7" and normalised("Hello, World") == "hello world"
    assert parses_as_code("```python\nx = 1\n```") and not parses_as_code("")
