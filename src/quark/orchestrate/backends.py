"""The gateway's backends and how it calls them.

A backend is one of:

    model_dir   a Quark run or model directory, loaded in this process through the serve engine
                (quark.serve) and served on a loopback port of its own, so the gateway calls it
                the way it calls any other server (and a benchmark can call it directly)
    url         any OpenAI-compatible server (another `step=serve`, vLLM, TGI), on this machine
                or another: how a fleet grows past one machine
    tool        a built-in tool answering on its own (quark.orchestrate.tools): the calculator
                for arithmetic, or retrieval over an index run for documentation questions

Each model backend gets its own httpx client with a concurrency limit (requests beyond it wait
for a slot), a timeout (to connect, and between chunks of a stream), retries with exponential
backoff for faults that happen before any answer was passed on (connection refused, 429,
502-504), and a circuit breaker (quark.orchestrate.breaker).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from quark.orchestrate.breaker import CLOSED, CircuitBreaker

log = logging.getLogger("quark")

# statuses worth another try: the backend is busy or briefly gone
RETRIED_STATUSES = (429, 502, 503, 504)


@dataclass(frozen=True)
class BackendSpec:
    """One entry of step.backends (conf/step/orchestrate.yaml says what each field does)."""

    name: str
    url: str | None = None
    model_dir: str | None = None
    tool: str | None = None
    model: str | None = None
    skills: tuple[str, ...] = ()
    max_concurrency: int = 32
    timeout_s: float = 60.0
    retries: int = 2
    api_key: str | None = None
    # how the backend takes tool definitions: native (OpenAI `tools`), prompt (described in a
    # system message, called as <tool_call>{json}</tool_call> in the text) or none
    tool_calls: str = "prompt"
    # the most tokens of context it takes; null: its model's positions (in-process) or 4096
    context_tokens: int | None = None
    retrieval: str | None = None  # in-process only: a retrieve run its chat requests may use
    # chat: /chat/completions; completions: the conversation rendered as a prompt for
    # /completions (a base model with no chat template); auto: completions for an in-process
    # model without a chat template, else chat
    api: str = "auto"

    @property
    def kind(self) -> str:
        return "tool" if self.tool else "remote" if self.url else "in-process"


class BackendError(Exception):
    """A backend call that failed: the status and OpenAI error fields the gateway answers with."""

    def __init__(
        self,
        backend: str,
        status: int,
        message: str,
        code: str | None = None,
        retryable: bool = False,
        fault: bool = True,
    ) -> None:
        super().__init__(message)
        self.backend, self.status, self.message, self.code = backend, status, message, code
        self.retryable = retryable
        self.fault = fault  # the backend's fault (counts against its breaker), not the request's

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": None, "code": self.code}}


@dataclass
class BackendCounters:
    requests: int = 0
    failures: int = 0
    retries: int = 0
    in_flight: int = 0


class ModelBackend:
    """A model behind an OpenAI-compatible base URL (…/v1)."""

    def __init__(
        self,
        spec: BackendSpec,
        base_url: str,
        model: str,
        context_tokens: int,
        breaker: CircuitBreaker,
        count_tokens: Any = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.base_url = base_url.rstrip("/")
        self.model = model  # the id sent as "model"
        self.context_tokens = context_tokens
        self.breaker = breaker
        # tokens of a text in the backend's own tokenizer when the gateway has it (in-process);
        # else an estimate of four characters a token
        self.count_tokens = count_tokens or (lambda text: len(text) // 4 + 1)
        self.counters = BackendCounters()
        self.completions_only = spec.api == "completions"
        self._http: Any = None
        self._slots: asyncio.Semaphore | None = None

    def http(self) -> Any:
        """The httpx client, made in the event loop that uses it."""
        import httpx

        if self._http is None:
            headers = {"Authorization": f"Bearer {self.spec.api_key}"} if self.spec.api_key else {}
            timeout = httpx.Timeout(self.spec.timeout_s, connect=min(self.spec.timeout_s, 10.0))
            limits = httpx.Limits(max_connections=self.spec.max_concurrency * 2)
            self._http = httpx.AsyncClient(timeout=timeout, headers=headers, limits=limits)
            self._slots = asyncio.Semaphore(self.spec.max_concurrency)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def health(self) -> dict[str, Any]:
        counters = self.counters
        return {
            "kind": self.spec.kind,
            "url": self.base_url,
            "model": self.model,
            "skills": list(self.spec.skills),
            "requests": counters.requests,
            "failures": counters.failures,
            "retries": counters.retries,
            "in_flight": counters.in_flight,
            "breaker": self.breaker.snapshot(),
        }

    def _unavailable(self) -> BackendError:
        snapshot = self.breaker.snapshot()
        return BackendError(
            self.name, 503,
            f"backend '{self.name}' is out of rotation after {snapshot['failures_in_a_row']} "
            f"failures in a row (circuit open; probed again in {snapshot.get('retry_in_s', 0)} s)",
            code="backend_unavailable", fault=False,
        )  # fmt: skip

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A whole chat completion, retried with backoff while nothing was answered."""
        if self.completions_only:
            prompt = as_completion_request(body)
            answer = await self.completion(prompt)
            return as_chat_completion(answer)
        body = {**self._grounded(body), "model": self.model, "stream": False}
        return await self._with_retries(lambda: self._post_json("/chat/completions", body))

    def _grounded(self, body: dict[str, Any]) -> dict[str, Any]:
        """An in-process backend with a retrieve run answers from retrieved context (RAG)
        unless the request says otherwise."""
        if self.spec.retrieval and "retrieval" not in body:
            return {**body, "retrieval": True}
        return body

    async def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "model": self.model, "stream": False}
        return await self._with_retries(lambda: self._post_json("/completions", body))

    async def _with_retries(self, attempt: Any) -> dict[str, Any]:
        """`attempt()` admitted by the breaker, retried with backoff for faults worth another
        try while the circuit stays closed (a half-open probe gets one try); the breaker and
        the counters see one outcome per request, not per try."""
        if not self.breaker.allow():
            raise self._unavailable()
        self.counters.requests += 1
        for number in range(self.spec.retries + 1):
            self.counters.in_flight += 1
            try:
                answer: dict[str, Any] = await attempt()
            except BackendError as exc:
                await self._retry_or_raise(exc, number)
                continue
            except asyncio.CancelledError:
                self.breaker.release()
                raise
            except Exception as exc:  # an answer this gateway cannot read
                error = self._unreadable(exc)
                self._failed(error)
                raise error from None
            finally:
                self.counters.in_flight -= 1
            self.breaker.success()
            return answer
        raise AssertionError("unreachable: the last try returns or raises")

    async def _retry_or_raise(
        self, exc: BackendError, number: int, passed_on: bool = False
    ) -> None:
        """Wait before another try when `exc` is worth one (a fault before anything was passed
        on, tries left, the circuit closed: a half-open probe gets one try); else count the
        failure and raise it."""
        worth = exc.retryable and not passed_on and number < self.spec.retries
        if worth and self.breaker.state == CLOSED:
            self.counters.retries += 1
            await asyncio.sleep(backoff(number))
            return
        self._failed(exc)
        raise exc

    def _unreadable(self, exc: Exception) -> BackendError:
        return BackendError(
            self.name, 502,
            f"backend '{self.name}' sent an answer the gateway cannot read "
            f"({type(exc).__name__}: {exc})",
            code="bad_backend_response",
        )  # fmt: skip

    def _failed(self, exc: BackendError) -> None:
        if exc.fault:
            self.counters.failures += 1
            self.breaker.failure()
        else:  # the backend answered (it refused the request): it is up
            self.breaker.success()

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        http = self.http()
        assert self._slots is not None
        async with self._slots:
            try:
                response = await http.post(self.base_url + path, json=body)
            except httpx.TimeoutException as exc:
                raise self._timeout(isinstance(exc, httpx.ConnectTimeout)) from None
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise self._refused(response.status_code, response.text)
        try:
            answer: dict[str, Any] = response.json()
        except ValueError:
            raise BackendError(
                self.name, 502, f"backend '{self.name}' answered with something other than JSON",
                code="bad_backend_response",
            ) from None  # fmt: skip
        return answer

    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A streamed chat completion's chunks as they arrive. Faults before the first chunk
        are retried; after it, a BackendError is raised where the stream broke."""
        path = "/chat/completions"
        if self.completions_only:
            body, path = as_completion_request(body), "/completions"
        else:
            body = self._grounded(body)
        body = {**body, "model": self.model, "stream": True}
        if not self.breaker.allow():
            raise self._unavailable()
        self.counters.requests += 1
        for number in range(self.spec.retries + 1):
            passed_on = False
            self.counters.in_flight += 1
            try:
                async for chunk in self._stream(path, body):
                    passed_on = True
                    yield as_chat_chunk(chunk) if self.completions_only else chunk
            except BackendError as exc:
                await self._retry_or_raise(exc, number, passed_on)
                continue
            except (asyncio.CancelledError, GeneratorExit):
                self.breaker.release()
                raise
            except Exception as exc:  # a chunk this gateway cannot read
                error = self._unreadable(exc)
                self._failed(error)
                raise error from None
            finally:
                self.counters.in_flight -= 1
            self.breaker.success()
            return

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        import httpx

        http = self.http()
        assert self._slots is not None
        async with self._slots:
            try:
                async with http.stream("POST", self.base_url + path, json=body) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise self._refused(response.status_code, response.text)
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[len("data:") :].strip()
                        if data == "[DONE]":
                            return
                        chunk = json.loads(data)
                        if "error" in chunk:  # OpenAI's and vLLM's object, or TGI's string
                            error = chunk["error"]
                            said = error if not isinstance(error, dict) else error.get("message")
                            code = error.get("code") if isinstance(error, dict) else None
                            raise BackendError(
                                self.name, 502, f"backend '{self.name}' failed mid-stream: {said}",
                                code=code or "backend_failed",
                            )  # fmt: skip
                        yield chunk
            except httpx.TimeoutException as exc:
                raise self._timeout(isinstance(exc, httpx.ConnectTimeout)) from None
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None
            except ValueError as exc:
                raise BackendError(
                    self.name, 502, f"backend '{self.name}' sent a chunk that is not JSON ({exc})",
                    code="bad_backend_response",
                ) from None  # fmt: skip
        # the stream ended without [DONE]: the backend went away mid-answer
        raise BackendError(
            self.name, 502, f"backend '{self.name}' closed the stream before it finished",
            code="backend_failed",
        )  # fmt: skip

    def _timeout(self, connecting: bool) -> BackendError:
        """A timeout: worth another try while connecting; not once the backend has the request
        (it may still be generating: a retry would send it the whole generation again)."""
        return BackendError(
            self.name, 504,
            f"backend '{self.name}' did not {'accept a connection' if connecting else 'answer'} "
            f"within {self.spec.timeout_s:g} s ({self.base_url})",
            code="backend_timeout", retryable=connecting,
        )  # fmt: skip

    def _unreachable(self, exc: Exception) -> BackendError:
        return BackendError(
            self.name, 502,
            f"backend '{self.name}' cannot be reached at {self.base_url} "
            f"({type(exc).__name__}: {exc or 'connection failed'})",
            code="backend_unreachable", retryable=True,
        )  # fmt: skip

    def _refused(self, status: int, text: str) -> BackendError:
        try:
            message = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = text[:300]
        if status < 500 and status != 429:  # the request's fault: passed on as it is
            return BackendError(self.name, status, message, code=None, fault=False)
        return BackendError(
            self.name, 502 if status >= 500 else status,
            f"backend '{self.name}' answered {status}: {message}",
            code="backend_failed", retryable=status in RETRIED_STATUSES,
        )  # fmt: skip


# what a chat request and a completion request share
COMPLETION_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n", "user",
                     "stream_options", "ignore_eos")  # fmt: skip


def completion_prompt(messages: list[dict[str, Any]]) -> str:
    """A conversation as a base model continues it: the code of the last user message's last
    fenced block when it has one (a code completion request), else the messages' text."""
    import re

    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    text = content_text(last.get("content")) if last else ""
    blocks = re.findall(r"```[\w+-]*\n(.*?)(?:```|$)", text, re.DOTALL)
    if blocks and blocks[-1].strip():
        return blocks[-1].rstrip() + "\n"
    return "\n\n".join(content_text(m.get("content")) for m in messages if m.get("content"))


def content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def as_completion_request(body: dict[str, Any]) -> dict[str, Any]:
    request = {k: body[k] for k in COMPLETION_FIELDS if k in body}
    request["prompt"] = completion_prompt(body.get("messages") or [])
    request.setdefault("max_tokens", body.get("max_completion_tokens") or 64)
    return request


def as_chat_completion(answer: dict[str, Any]) -> dict[str, Any]:
    """A /completions answer in the shape of a chat completion."""
    choices = [
        {"index": c.get("index", 0), "message": {"role": "assistant", "content": c.get("text")},
         "finish_reason": c.get("finish_reason"), "logprobs": None}
        for c in answer.get("choices") or []
    ]  # fmt: skip
    return {**answer, "object": "chat.completion", "choices": choices}


def as_chat_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {"index": c.get("index", 0), "delta": {"content": c["text"]} if c.get("text") else {},
         "finish_reason": c.get("finish_reason"), "logprobs": None}
        for c in chunk.get("choices") or []
    ]  # fmt: skip
    return {**chunk, "object": "chat.completion.chunk", "choices": choices}


def backoff(attempt: int, base_s: float = 0.2, cap_s: float = 5.0) -> float:
    """Seconds before retry `attempt` (0-based): exponential with full jitter (AWS's advice)."""
    return random.uniform(0, min(cap_s, base_s * 2**attempt))


async def discover_model(base_url: str, api_key: str | None, timeout_s: float) -> str | None:
    """The first model id a server lists at /v1/models; None when it cannot be reached."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s, headers=headers) as http:
            response = await http.get(base_url.rstrip("/") + "/models")
        cards = response.json().get("data") or []
        return str(cards[0]["id"]) if cards else None
    except (httpx.HTTPError, ValueError, KeyError, AttributeError):
        return None
