"""step.backends checked with the key at fault; a chat request as a base model's prompt; tool
calls read from either form a model writes them in."""

from __future__ import annotations

from typing import Any

import pytest

from quark.core.errors import ConfigError
from quark.orchestrate.backends import (
    as_chat_chunk,
    as_chat_completion,
    as_completion_request,
    completion_prompt,
)
from quark.orchestrate.fleet import backend_specs
from quark.orchestrate.tool_loop import tool_calls_of, with_tool_prompt


@pytest.mark.parametrize(
    ("entries", "key", "says"),
    [
        ([], "step.backends", "is empty"),
        ([{"name": "a b", "tool": "calculator"}], "step.backends.0.name", "not a backend name"),
        ([{"name": "auto", "tool": "calculator"}], "step.backends.0.name", "not a backend name"),
        ([{"name": "a", "tool": "calculator"}, {"name": "a", "tool": "calculator"}],
         "step.backends.1.name", "used twice"),
        ([{"name": "a"}], "step.backends.0", "sets none of url, model_dir and tool"),
        ([{"name": "a", "url": "http://x/v1", "tool": "calculator"}], "step.backends.0",
         "sets url and tool"),
        ([{"name": "a", "tool": "shell"}], "step.backends.0.tool", "not a tool"),
        ([{"name": "a", "url": "http://x/v1", "colour": 1}], "step.backends.0.colour",
         "not a backend field"),
        ([{"name": "a", "url": "http://x/v1", "api": "grpc"}], "step.backends.0.api", "not an API"),
    ],
)  # fmt: skip
def test_bad_backends_name_the_key(entries: list[dict[str, Any]], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        backend_specs(entries)
    assert refused.value.key == key and says in str(refused.value)


def test_a_code_request_becomes_the_code_a_base_model_continues() -> None:
    asked = "Complete this Python function:\n```python\ndef add(a, b):\n    total = a + b\n```"
    assert completion_prompt([{"role": "user", "content": asked}]) == (
        "def add(a, b):\n    total = a + b\n"
    )
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "item3 is"}]
    assert completion_prompt(plain) == "Be brief.\n\nitem3 is"
    request = as_completion_request({"messages": plain, "temperature": 0, "logprobs": True})
    assert request == {"temperature": 0, "prompt": "Be brief.\n\nitem3 is", "max_tokens": 64}


def test_completions_answers_take_the_chat_shape() -> None:
    answer = {"id": "x", "choices": [{"index": 0, "text": "red", "finish_reason": "stop"}]}
    chat = as_chat_completion(answer)
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "red"}
    chunk = as_chat_chunk({"choices": [{"index": 0, "text": "re", "finish_reason": None}]})
    assert chunk["choices"][0]["delta"] == {"content": "re"}


def test_tool_calls_are_read_natively_or_from_the_text() -> None:
    native = {"tool_calls": [{"id": "c1", "type": "function",
                              "function": {"name": "calculator", "arguments": "{}"}}]}  # fmt: skip
    assert tool_calls_of(native, native=True) == native["tool_calls"]
    written = {"content": 'Let me check. <tool_call>{"name": "calculator", "arguments": '
               '{"expression": "2 + 2"}}</tool_call>'}  # fmt: skip
    [call] = tool_calls_of(written, native=False)
    assert call["function"] == {"name": "calculator", "arguments": '{"expression": "2 + 2"}'}
    assert tool_calls_of({"content": "no calls here"}, native=False) == []
    prompted = with_tool_prompt([{"role": "user", "content": "hi"}], [{"function": {"name": "c"}}])
    assert prompted[0]["role"] == "system" and "<tool_call>" in prompted[0]["content"]


def test_a_backend_with_a_retrieve_run_asks_for_retrieved_context_unless_told_not_to() -> None:
    from quark.orchestrate.backends import ModelBackend
    from quark.orchestrate.breaker import CircuitBreaker

    [grounded, plain] = backend_specs([
        {"name": "rag", "model_dir": "/m", "retrieval": "latest:retrieve"},
        {"name": "bare", "model_dir": "/m"},
    ])  # fmt: skip
    ask = {"messages": [{"role": "user", "content": "Where is dedent defined?"}]}

    def backend(spec: Any) -> ModelBackend:
        return ModelBackend(spec, "http://x/v1", spec.name, 512, CircuitBreaker(3, 10), len)

    assert backend(grounded)._grounded(ask) == {**ask, "retrieval": True}
    assert backend(grounded)._grounded({**ask, "retrieval": False})["retrieval"] is False
    assert backend(plain)._grounded(ask) == ask


def test_a_registry_alias_names_the_run_that_holds_it(tmp_path: Any) -> None:
    from pathlib import Path

    from omegaconf import OmegaConf

    from quark.governance.registry import ModelRegistry
    from quark.orchestrate.fleet import registered_run

    root = Path(__file__).parents[2]
    cfg = OmegaConf.create({
        "paths": {"output_dir": str(tmp_path)}, "experiment_name": "demo",
        "governance": OmegaConf.load(root / "conf" / "governance" / "default.yaml"),
    })  # fmt: skip
    key = "step.backends.1.model_dir"
    with pytest.raises(ConfigError, match="has no 'production' version"):
        registered_run(cfg, key, "registry:production")
    run = tmp_path / "run"
    run.mkdir()
    registry = ModelRegistry.open(cfg.governance, tmp_path, "demo")
    registry.set_alias("production", registry.register(run, lineage=[], metrics={}))
    assert registered_run(cfg, key, "registry:production") == run.resolve()
    with pytest.raises(ConfigError, match="names no alias"):
        registered_run(cfg, key, "registry:best")


def test_a_gateway_run_is_reusable_when_it_stops_by_itself() -> None:
    from omegaconf import OmegaConf

    from quark.core.step_registry import BY_NAME

    def step(**values: Any) -> Any:
        base = {"demo_prompt": None, "demo_prompts": [], "evaluate": {"enabled": False}}
        return OmegaConf.create({"step": {**base, **values}})

    gateway = BY_NAME["orchestrate"]
    assert not gateway.reusable_for(step())  # serves until stopped
    assert gateway.reusable_for(step(demo_prompts=["What is 1 + 2?"]))
    assert gateway.reusable_for(step(demo_prompt="What is 1 + 2?"))
    assert gateway.reusable_for(step(evaluate={"enabled": True}))
    assert not BY_NAME["serve"].reusable_for(step()) and BY_NAME["data"].reusable_for(step())
