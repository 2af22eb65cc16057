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
