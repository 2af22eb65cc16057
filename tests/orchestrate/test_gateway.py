"""The gateway over real backend processes on loopback, spoken to with the official `openai`
client: routing to models and tools, streaming passed through, fallbacks and the circuit
breaker, a backend killed or stalled mid-stream, the tool loop, memory, cascade, ensemble and
the bandit's feedback; every fault a clear OpenAI error while the gateway keeps serving."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from .conftest import Process, chat_backend, free_port_url, gateway, scripted, start_scripted
from .test_tools import bm25_run

__all__ = ["bm25_run", "chat_backend", "scripted"]  # fixtures, used by name

ARITHMETIC = "What is 12 * 3 - 4?"


class HashingEmbedder:
    """Character n-gram hashing: a real, deterministic embedding that needs no model."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vectorizer = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=512)

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.vectorizer.transform(texts).toarray(), np.float32)


@pytest.fixture(scope="module")
def classifier() -> Any:
    from quark.orchestrate.kinds import labelled_requests
    from quark.orchestrate.router import KindClassifier

    train = [r for r in labelled_requests(60, seed=0) if r.split == "train"]
    return KindClassifier.train(HashingEmbedder(), [r.text for r in train], [r.kind for r in train])


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)


def ask(url: str, text: str, model: str = "auto", **extra: Any) -> Any:
    return client(url).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=12,
        temperature=0, **extra,
    )  # fmt: skip


def route_of(answer: Any) -> dict[str, Any]:
    return dict((answer.model_extra or {})["route"])


def test_routes_by_kind_to_tools_and_models_and_streams_through(
    tmp_path: Path, chat_backend: Process, classifier: Any
) -> None:
    backends = [
        {"name": "calculator", "tool": "calculator", "skills": ["arithmetic"]},
        {"name": "chat", "url": chat_backend.url, "skills": ["smalltalk", "docs", "code"]},
    ]
    with gateway(tmp_path, backends, classifier=classifier) as running:
        listed = [m.id for m in client(running.url).models.list()]
        assert listed == ["auto", "calculator", "chat"]
        sums = ask(running.url, ARITHMETIC)
        assert sums.model == "calculator" and sums.choices[0].message.content == "12 * 3 - 4 = 32"
        route = route_of(sums)
        assert route["kind"] == "arithmetic" and route["verified"] is True
        assert "classifier" in route["reason"]
        hello = ask(running.url, "Hi there! How was your weekend?")
        assert hello.model == "chat" and route_of(hello)["kind"] == "smalltalk"
        # streamed through chunk by chunk: the same text as the backend gives whole
        whole = ask(running.url, "colour of item2?", model="chat")
        pieces = list(ask(running.url, "colour of item2?", model="chat", stream=True))
        texts = [
            p.choices[0].delta.content for p in pieces if p.choices and p.choices[0].delta.content
        ]
        assert len(texts) > 1 and "".join(texts) == whole.choices[0].message.content
        assert (pieces[0].model_extra or {})["route"]["backend"] == "chat"
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            ask(running.url, "hello", model="gpt-9")
        logged = [json.loads(line) for line in running.decisions.read_text().splitlines()]
        assert [r.get("backend") for r in logged] == ["calculator", "chat", "chat", "chat", None]
        assert all(r["reason"] for r in logged[:-1])
        assert logged[-1]["model"] == "gpt-9" and logged[-1]["error"] == "model_not_found"


def test_a_refusing_backend_is_passed_over_then_taken_out_and_probed_back(
    tmp_path: Path, chat_backend: Process
) -> None:
    dead = free_port_url()
    backends = [
        {"name": "dead", "url": dead, "model": "x", "skills": ["smalltalk"], "retries": 1},
        {"name": "chat", "url": chat_backend.url, "skills": ["smalltalk"]},
    ]
    rules = {"name": "rules", "rules": [{"pattern": ".", "backend": "dead"}]}
    with gateway(tmp_path, backends, router=rules, breaker=(1, 30.0)) as running:
        health_url = running.url.removesuffix("/v1") + "/health"
        first = ask(running.url, "hello")
        assert first.model == "chat"
        assert route_of(first)["fell_back_from"][0]["backend"] == "dead"
        dead_health = httpx.get(health_url).json()["backends"]["dead"]
        # one request, tried twice (a refused connection is worth a retry), one failure
        assert dead_health["requests"] == 1 and dead_health["retries"] == 1
        assert dead_health["breaker"]["state"] == "open"
        # open: passed over without a try
        assert ask(running.url, "hello again").model == "chat"
        assert httpx.get(health_url).json()["backends"]["dead"]["requests"] == 1
        with pytest.raises(openai.InternalServerError) as refused:
            ask(running.url, "hello", model="dead")
        assert refused.value.status_code == 503 and "out of rotation" in str(refused.value)
        # the cooldown passes: the next request is the probe, which fails, and it opens again
        breaker = running.fleet.backends["dead"].breaker
        breaker.opened_at -= 31.0
        with pytest.raises(openai.APIStatusError) as probed:
            ask(running.url, "hello", model="dead")
        assert probed.value.status_code == 502 and "cannot be reached" in str(probed.value)
        assert breaker.state == "open" and breaker.times_opened == 2
        # a backend that comes back is probed back in
        breaker.opened_at -= 31.0
        running.fleet.backends["dead"].base_url = chat_backend.url
        running.fleet.backends["dead"].model = "chat"
        assert ask(running.url, "hello", model="dead").model == "dead"
        assert breaker.state == "closed"


def test_when_no_backend_answers_the_fault_is_reported_not_a_tools_refusal(
    tmp_path: Path,
) -> None:
    backends = [
        {"name": "dead", "url": free_port_url(), "model": "x", "retries": 0},
        {"name": "calculator", "tool": "calculator"},
    ]
    with gateway(tmp_path, backends, router={"name": "rules", "default": "dead"}) as running:
        with pytest.raises(openai.APIStatusError) as failed:
            ask(running.url, "hello")
        assert failed.value.status_code == 502 and "cannot be reached" in str(failed.value)


def kill_mid_stream(url: str, backend: Process) -> tuple[list[str], BaseException | None]:
    """Stream SLOW through the gateway, killing the backend after two pieces of text."""
    seen: list[str] = []
    failure: BaseException | None = None
    try:
        for piece in ask(url, "SLOW please", model="scripted", stream=True):
            if piece.choices and piece.choices[0].delta.content:
                seen.append(piece.choices[0].delta.content)
                if len(seen) == 2:
                    threading.Thread(target=backend.kill).start()
    except openai.APIError as exc:
        failure = exc
    return seen, failure


def test_a_backend_killed_or_stalled_mid_stream_ends_the_stream_with_an_error(
    tmp_path: Path, chat_backend: Process
) -> None:
    victim = start_scripted(tmp_path)
    try:
        backends = [
            {"name": "scripted", "url": victim.url, "timeout_s": 1.0},
            {"name": "chat", "url": chat_backend.url},
        ]
        with gateway(tmp_path / "gw", backends) as running:
            started = time.perf_counter()
            seen, failure = kill_mid_stream(running.url, victim)
            assert len(seen) >= 2 and failure is not None, seen
            assert time.perf_counter() - started < 15  # nothing hung
            stalled = start_scripted(tmp_path)
            running.fleet.backends["scripted"].base_url = stalled.url
            started = time.perf_counter()
            with pytest.raises(openai.APIError, match="did not answer within 1 s"):
                list(ask(running.url, "HANG", model="scripted", stream=True))
            assert time.perf_counter() - started < 10
            stalled.kill()
            # the gateway keeps serving the others
            assert ask(running.url, "colour of item1?", model="chat").choices[0].message.content
    finally:
        victim.kill()


def test_built_in_tools_run_in_a_bounded_loop(tmp_path: Path, scripted: Process) -> None:
    backends = [{"name": "scripted", "url": scripted.url, "tool_calls": "native"}]
    calculator = {"type": "function", "function": {"name": "calculator"}}
    with gateway(tmp_path, backends, max_tool_steps=3) as running:
        answer = ask(running.url, "TOOL: what is six times seven?", tools=[calculator])
        assert answer.choices[0].message.content == (
            'The tool said: {"expression": "6 * 7", "value": "42"}'
        )
        [call] = route_of(answer)["tool_calls"]
        assert call["name"] == "calculator" and call["result"]["value"] == "42"
        with pytest.raises(openai.APIStatusError) as bad:
            ask(running.url, "BADARGS", tools=[calculator])
        assert bad.value.status_code == 502
        assert bad.value.body["code"] == "tool_arguments_invalid"  # type: ignore[index]
        assert "expr" in bad.value.body["message"]  # type: ignore[index]
        with pytest.raises(openai.APIStatusError) as looping:
            ask(running.url, "LOOP", tools=[calculator])
        assert looping.value.body["code"] == "tool_loop_limit"  # type: ignore[index]
        assert "after 3 rounds" in looping.value.body["message"]  # type: ignore[index]
        # a model without native function calling: the tools described in its prompt
        running.fleet.backends["scripted"].spec = replace(
            running.fleet.backends["scripted"].spec, tool_calls="prompt"
        )
        hermes = ask(running.url, "HERMES", tools=[calculator])
        assert hermes.choices[0].message.content == (
            'The tool said: <tool_response>{"expression": "2 + 2", "value": "4"}</tool_response>'
        )
        # a tool the client defined is the client's to run: its call comes back
        own = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
        handed = ask(running.url, "TOOL", tools=[own])
        assert handed.choices[0].message.tool_calls is not None


def test_retrieval_and_graph_tools_over_an_index_run(
    tmp_path: Path, scripted: Process, bm25_run: Path
) -> None:
    from quark.orchestrate.tools import load_index_tools

    tools = {tool.name: tool for tool in load_index_tools(bm25_run, 2, "bm25")}
    backends = [
        {"name": "scripted", "url": scripted.url, "tool_calls": "native"},
        {"name": "docs", "tool": "retrieve", "skills": ["docs"]},
    ]
    offered = [{"type": "function", "function": {"name": n}} for n in ("graph_lookup", "retrieve")]
    with gateway(tmp_path, backends, tools=tools) as running:
        answer = ask(running.url, "GRAPH", tools=offered)
        graph, found = json.loads(answer.choices[0].message.content or "")
        assert graph["inherits"] == ["geometry.shapes.Shape"]
        assert found[0]["name"] == "geometry.units.to_metres"
        calls = route_of(answer)["tool_calls"]
        assert [c["name"] for c in calls] == ["graph_lookup", "retrieve"]
        logged = json.loads(running.decisions.read_text().splitlines()[-1])
        assert [c["name"] for c in logged["tool_calls"]] == ["graph_lookup", "retrieve"]
        # the retrieve tool as a backend of its own: the sources answer
        sources = ask(running.url, "how do I convert centimetres to metres?", model="docs")
        assert "geometry.units.to_metres" in (sources.choices[0].message.content or "")
        assert (sources.model_extra or {})["tool_results"][0]["name"] == "retrieve"


def test_memory_keeps_the_conversation_and_the_profile_and_forgets_on_request(
    tmp_path: Path, scripted: Process
) -> None:
    backends = [{"name": "scripted", "url": scripted.url, "context_tokens": 400}]
    with gateway(tmp_path, backends) as running:
        extra = {"user": "ada", "extra_body": {"conversation": "c1"}}
        first = ask(running.url, "I prefer short answers. ECHO", **extra)
        assert route_of(first)["learned"] == ["prefers: short answers"]
        second = ask(running.url, "ECHO again", **extra)
        sent = json.loads(second.choices[0].message.content or "")
        assert sent[0]["role"] == "system" and "short answers" in sent[0]["content"]
        assert [m["content"] for m in sent[1:]] == [
            "I prefer short answers. ECHO", first.choices[0].message.content, "ECHO again",
        ]  # fmt: skip
        base = running.url.removesuffix("/v1")
        kept = httpx.get(f"{base}/v1/memory/ada").json()
        assert kept["profile"]["preferences"] == ["short answers"]
        assert len(kept["conversations"][0]["messages"]) == 4
        # a long history is fitted to the backend's window: oldest turns dropped whole
        for number in range(12):
            ask(running.url, f"turn {number} " + "words " * 20, **extra)
        fitted = json.loads(ask(running.url, "ECHO", **extra).choices[0].message.content or "")
        history = httpx.get(f"{base}/v1/memory/ada").json()["conversations"][0]["messages"]
        contents = {m["content"] for m in history}
        kept_turns = [m for m in fitted[1:] if not m["content"].startswith("Earlier in this")]
        # 28 turns were kept before this request (the history now has its 2 as well)
        assert len(history) == 30 and len(kept_turns) - 1 < 28  # older turns were dropped
        assert all(m["content"] in contents for m in kept_turns)  # none cut
        assert kept_turns[-2]["content"] == history[-3]["content"]  # the newest were kept
        deleted = httpx.delete(f"{base}/v1/memory/ada").json()["deleted"]
        assert deleted["messages"] >= 30
        assert httpx.get(f"{base}/v1/memory/ada").json()["conversations"] == []


def test_requests_of_every_shape_are_answered_or_refused_in_openais_shape(
    tmp_path: Path, scripted: Process
) -> None:
    backends = [
        {"name": "scripted", "url": scripted.url, "skills": ["smalltalk"]},
        {"name": "calculator", "tool": "calculator", "skills": ["arithmetic"]},
    ]
    with gateway(tmp_path, backends) as running:
        base = running.url.removesuffix("/v1")
        # after a client tool call: an assistant turn with no content; text parts
        turns = [
            {"role": "user", "content": [{"type": "text", "text": "ECHO"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "user", "content": "ECHO"},
        ]
        reply = client(running.url).chat.completions.create(
            model="scripted",
            messages=turns,
            user="bo",
            extra_body={"conversation": "c"},  # type: ignore[arg-type]
        )
        sent = json.loads(reply.choices[0].message.content or "")
        assert [m["content"] for m in sent] == ["ECHO", "", "42", "ECHO"]
        for body, param in (
            ({"messages": [{"role": "user"}]}, "messages.0.content"),
            ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
            ({"messages": [{"role": "user", "content": "hi"}], "tools": 5}, "tools"),
            ({"messages": [{"role": "user", "content": "hi"}], "model": ["x"]}, "model"),
        ):
            refused = httpx.post(f"{running.url}/chat/completions", json=body)
            assert refused.status_code == 400 and refused.json()["error"]["param"] == param
        # a tool answers streamed requests and completions too
        streamed = list(ask(running.url, ARITHMETIC, model="calculator", stream=True))
        text = "".join(p.choices[0].delta.content or "" for p in streamed if p.choices)
        assert text == "12 * 3 - 4 = 32"
        done = client(running.url).completions.create(model="calculator", prompt="7 * 6")
        assert done.choices[0].text == "7 * 6 = 42" and done.model == "calculator"
        # a backend's stream error in TGI's form (a string) ends the stream, not the gateway
        with pytest.raises(openai.APIError, match="failed mid-stream: scripted string error"):
            list(ask(running.url, "TGIERROR", model="scripted", stream=True))
        assert httpx.get(f"{base}/health").json()["backends"]["scripted"]["breaker"][
            "state"
        ] == "closed"  # fmt: skip
        assert ask(running.url, "hello", model="scripted").choices[0].message.content


def test_cascade_escalates_when_the_verifier_or_the_confidence_says_so(
    tmp_path: Path, chat_backend: Process, classifier: Any
) -> None:
    backends = [
        {"name": "chat", "url": chat_backend.url, "skills": ["smalltalk"]},
        {"name": "calculator", "tool": "calculator", "skills": ["arithmetic"]},
    ]
    cascade = {"name": "cascade", "order": ["chat", "calculator"]}
    with gateway(tmp_path, backends, router=cascade, classifier=classifier) as running:
        sums = ask(running.url, ARITHMETIC)
        steps = route_of(sums)["cascade"]
        assert sums.model == "calculator" and steps[0]["backend"] == "chat"
        assert steps[0]["escalated"] == "failed its verifier" and steps[1]["accepted"]
    # small talk has no verifier: the mean log-prob decides, against the threshold
    for threshold in (-50.0, 0.0):
        with gateway(tmp_path / str(threshold), backends, router=cascade | {"threshold": threshold},
                     classifier=classifier) as running:  # fmt: skip
            answer = ask(running.url, "colour of item3?")
            steps = route_of(answer)["cascade"]
            assert answer.model == "chat" and steps[0]["mean_logprob"] < 0
            if threshold < 0:
                assert steps[0]["accepted"] and len(steps) == 1
            else:  # escalated; the calculator declines: the answer it had stands
                assert steps[0]["escalated"].startswith("mean log-prob")
                assert "no arithmetic" in steps[1]["error"]


def test_ensemble_picks_by_verifier_and_majority(
    tmp_path: Path, chat_backend: Process, scripted: Process, classifier: Any
) -> None:
    backends = [
        {"name": "chat", "url": chat_backend.url},
        {"name": "scripted", "url": scripted.url},
        {"name": "calculator", "tool": "calculator"},
    ]
    members = ["chat", "scripted", "calculator"]
    verifier = {"name": "ensemble", "members": members, "aggregate": "verifier"}
    with gateway(tmp_path, backends, router=verifier, classifier=classifier,
                 ensemble_aggregate="verifier") as running:  # fmt: skip
        answer = ask(running.url, ARITHMETIC)
        chosen = route_of(answer)["ensemble"]
        assert answer.model == "calculator" and chosen["chosen_by"] == "verified"
        assert set(chosen["answers"]) == set(members)


def longest_answer(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """A reward with TRL's signature: the longer the answer, the better."""
    return [float(len(c)) for c in completions]


def test_ensemble_picks_by_a_rewards_score(tmp_path: Path, scripted: Process) -> None:
    from quark.steps.orchestrate import reward_scorer

    backends = [
        {"name": "scripted", "url": scripted.url},
        {"name": "calculator", "tool": "calculator"},
    ]
    by_reward = {"name": "ensemble", "members": ["calculator", "scripted"], "aggregate": "reward"}
    reward = reward_scorer("tests.orchestrate.test_gateway:longest_answer", None)
    with gateway(tmp_path, backends, router=by_reward, ensemble_aggregate="reward",
                 reward=reward) as running:  # fmt: skip
        answer = ask(running.url, f"{ARITHMETIC} ECHO")
        route = route_of(answer)
        assert answer.model == "scripted"  # its echo is the longer answer
        assert route["rewards"]["scripted"] > route["rewards"]["calculator"] == 15.0
        assert route["ensemble"]["chosen_by"].startswith("reward")


def test_feedback_teaches_the_bandit_which_persists(
    tmp_path: Path, scripted: Process, classifier: Any
) -> None:
    backends = [
        {"name": "a", "url": scripted.url, "skills": ["smalltalk"]},
        {"name": "b", "url": scripted.url, "skills": ["smalltalk"]},
    ]
    bandit = {"name": "bandit", "rule": "greedy"}
    with gateway(tmp_path, backends, router=bandit, classifier=classifier) as running:
        base = running.url.removesuffix("/v1")
        for _ in range(6):
            answer = ask(running.url, "Hello! How are you today?")
            good = answer.model == "b"
            posted = httpx.post(f"{base}/v1/feedback", json={"id": answer.id, "good": good})
            assert posted.status_code == 200 and posted.json()["backend"] == answer.model
        assert "greedy" in route_of(answer)["reason"]
        unknown = httpx.post(f"{base}/v1/feedback", json={"id": "nope", "good": True})
        assert unknown.status_code == 404 and "error" in unknown.json()
    # the next gateway on the same state file starts from what was learned
    with gateway(tmp_path, backends, router=bandit, classifier=classifier) as running:
        assert ask(running.url, "Hello! How are you today?").model == "b"
