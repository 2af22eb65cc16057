"""Function calling at the gateway: the built-in tools a request names are offered to the model,
run by the gateway when the model calls them, and their results fed back, until the model
answers in text, within a step and a time budget.

A backend takes the tools one of two ways (step.backends.*.tool_calls):

    native  OpenAI's `tools` parameter, calls returned as message.tool_calls (vLLM with a tool
            parser, OpenAI itself, a gateway in front of either)
    prompt  the tools described in a system message, a call written in the text as
            <tool_call>{"name": ..., "arguments": {...}}</tool_call> (the Hermes format many
            open models are tuned on); results go back as tool messages

A call of a tool the client defined itself is not the gateway's to run: the answer goes back
to the client with its tool_calls, as OpenAI's API does.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

from quark.orchestrate.backends import ModelBackend

TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


class ToolLoopError(Exception):
    """A loop that cannot finish: the status and code the gateway answers with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class ToolLoop:
    def __init__(self, tools: dict[str, Any], max_steps: int, max_seconds: float) -> None:
        self.tools = tools  # name -> quark.orchestrate.tools.Tool
        self.max_steps = max_steps
        self.max_seconds = max_seconds

    def is_builtin(self, entry: Any) -> bool:
        """Whether a `tools` entry of a request names one of the gateway's tools."""
        if not isinstance(entry, dict) or entry.get("type") != "function":
            return False
        return str((entry.get("function") or {}).get("name")) in self.tools

    async def run(
        self, backend: ModelBackend, request: dict[str, Any], offered: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The final answer and every call the gateway ran: {name, arguments, result}."""
        from quark.orchestrate.tools import ToolError, run_tool

        names = [str(entry["function"]["name"]) for entry in offered]
        specs = [self.tools[name].spec() for name in names]
        native = backend.spec.tool_calls == "native"
        messages = list(request["messages"])
        if native:
            request = {**request, "tools": [*request.get("tools", []), *specs]}
        else:
            messages = with_tool_prompt(messages, specs)
        deadline = time.monotonic() + self.max_seconds
        made: list[dict[str, Any]] = []
        for _step in range(self.max_steps + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout(backend)
            try:
                answer = await asyncio.wait_for(
                    backend.chat({**request, "messages": messages}), left
                )
            except asyncio.TimeoutError:
                raise self._timeout(backend) from None
            message = (answer.get("choices") or [{}])[0].get("message") or {}
            calls = tool_calls_of(message, native)
            if not calls:
                return answer, made
            if any(call["function"]["name"] not in names for call in calls):
                return answer, made  # the client's own tool: the client runs it
            if _step == self.max_steps:
                break
            messages.append(
                {"role": "assistant", "content": message.get("content") or "",
                 **({"tool_calls": calls} if native else {})}
            )  # fmt: skip
            for call in calls:
                name, arguments = call["function"]["name"], call["function"]["arguments"]
                try:
                    result = await run_tool(self.tools[name], arguments)
                except ToolError as exc:
                    raise ToolLoopError(
                        502, "tool_arguments_invalid",
                        f"backend '{backend.name}' called {name} with arguments the tool "
                        f"refuses: {exc}",
                    ) from None  # fmt: skip
                made.append({"name": name, "arguments": arguments, "result": result})
                content = json.dumps(result, ensure_ascii=False, default=str)
                if native:
                    messages.append(
                        {"role": "tool", "tool_call_id": call["id"], "content": content}
                    )
                else:
                    messages.append(
                        {"role": "tool", "content": f"<tool_response>{content}</tool_response>"}
                    )
        raise ToolLoopError(
            502, "tool_loop_limit",
            f"backend '{backend.name}' still called tools after {self.max_steps} rounds "
            "(step.tools.max_steps); the loop was stopped",
        )  # fmt: skip

    def _timeout(self, backend: ModelBackend) -> ToolLoopError:
        return ToolLoopError(
            504, "tool_loop_timeout",
            f"the tool loop with backend '{backend.name}' ran past {self.max_seconds:g} s "
            "(step.tools.max_seconds)",
        )  # fmt: skip


def with_tool_prompt(
    messages: list[dict[str, Any]], specs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`messages` with the tools described in the system message (Hermes' format)."""
    described = "\n".join(json.dumps(spec["function"], ensure_ascii=False) for spec in specs)
    prompt = (
        "You may call these tools:\n<tools>\n" + described + "\n</tools>\n"
        'To call one, answer with <tool_call>{"name": <tool>, "arguments": {...}}</tool_call>; '
        "its result comes back in a tool message."
    )
    if messages and messages[0].get("role") in ("system", "developer"):
        return [{**messages[0], "content": f"{messages[0].get('content') or ''}\n\n{prompt}"},
                *messages[1:]]  # fmt: skip
    return [{"role": "system", "content": prompt}, *messages]


def tool_calls_of(message: dict[str, Any], native: bool) -> list[dict[str, Any]]:
    """The tool calls in a model's message, in OpenAI's form whichever way they came."""
    if native:
        return list(message.get("tool_calls") or [])
    calls = []
    for found in TOOL_CALL.finditer(str(message.get("content") or "")):
        try:
            call = json.loads(found.group(1))
        except ValueError:
            call = {"name": "?", "arguments": found.group(1)}
        arguments = call.get("arguments", {})
        calls.append(
            {
                "id": "call_" + uuid.uuid4().hex[:24],
                "type": "function",
                "function": {
                    "name": str(call.get("name")),
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    return calls
