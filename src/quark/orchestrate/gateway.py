"""The gateway's HTTP API: OpenAI's chat completions and completions in front of the fleet.

    POST /v1/chat/completions   "model": "auto" (or left out) asks the router; a backend's name
                                asks that backend. Quark's fields: "user" and "conversation"
                                keep the conversation and the user's profile (memory); tools
                                named like a built-in tool (calculator, retrieve, graph_lookup)
                                are run by the gateway in a bounded loop. The response names
                                the backend in "model" and says why under "route".
    POST /v1/completions        routed on the prompt, or to the named backend
    POST /v1/feedback           {"id": <a response id>, "good": true|false}: the outcome the
                                bandit router learns from
    GET/DELETE /v1/memory/{user}  everything kept about a user; forget it
    GET  /v1/models, /health    the backends, their circuits and counters

Errors are OpenAI's error object. A backend that fails is passed over for the next one the
router ranks (unless the request named it); a stream that breaks after text was sent ends with
an error event, as OpenAI's own streams do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from quark.orchestrate.backends import BackendError, ModelBackend
from quark.orchestrate.fleet import Fleet, ToolBackend, last_user_text
from quark.orchestrate.router import (
    Decision,
    KindBatcher,
    Router,
    answer_text,
    mean_logprob,
    normalised,
    verify,
)
from quark.orchestrate.tool_loop import ToolLoop, ToolLoopError
from quark.serve.protocol import APIError, authorizer, openai_errors, read_json

log = logging.getLogger("quark")
QUARK_FIELDS = ("conversation", "route")


@dataclass
class GatewaySettings:
    max_request_bytes: int = 1_000_000
    cascade_threshold: float = -1.5  # mean token log-prob below which the cascade escalates
    ensemble_aggregate: str = "majority"
    max_tool_steps: int = 4
    max_tool_seconds: float = 30.0
    memory_summarize: bool = True


@dataclass
class GatewayStats:
    requests: int = 0
    failed: int = 0
    fallbacks: int = 0
    by_backend: dict[str, int] = field(default_factory=dict)


class DecisionLog:
    """decisions.jsonl: one line per request: its route, reason, outcome and latency."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self.file = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def build_gateway(
    fleet: Fleet,
    router: Router,
    settings: GatewaySettings,
    *,
    api_key: str | None = None,
    memory: Any = None,
    outcomes: Any = None,
    tools: dict[str, Any] | None = None,
    reward: Any = None,
    decisions: DecisionLog | None = None,
) -> FastAPI:
    """The FastAPI app of the gateway (module docstring)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await fleet.close()  # the backends' clients, in the loop that opened them

    app = FastAPI(
        title="Quark gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    stats = GatewayStats()
    created = int(time.time())
    loop_tools = ToolLoop(tools or {}, settings.max_tool_steps, settings.max_tool_seconds)
    kinds = KindBatcher(router)
    decisions = decisions or DecisionLog(None)
    app.state.stats = stats

    openai_errors(app)
    authorize = authorizer(api_key, "step.api_key or QUARK_API_KEY")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("orchestrate: %s failed: %s: %s", request.url.path, type(exc).__name__, exc)
        return APIError(
            500, f"the gateway failed: {type(exc).__name__}: {exc}", code="gateway_error",
            kind="server_error",
        ).response()  # fmt: skip

    @app.get("/health")
    async def health() -> Response:
        backends = {name: b.health() for name, b in fleet.backends.items()}
        up = [n for n, b in fleet.backends.items() if b.breaker.available()]
        body = {
            "status": "ok" if up else "degraded",
            "router": router.strategy,
            "requests": stats.requests,
            "failed": stats.failed,
            "fallbacks": stats.fallbacks,
            "backends": backends,
        }
        return JSONResponse(body, status_code=200 if up else 503)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        authorize(request)
        cards = [{"id": "auto", "object": "model", "created": created, "owned_by": "quark"}]
        for name, backend in fleet.backends.items():
            cards.append(
                {"id": name, "object": "model", "created": created, "owned_by": "quark",
                 "skills": list(backend.spec.skills), "kind": backend.spec.kind}
            )  # fmt: skip
        return JSONResponse({"object": "list", "data": cards})

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        authorize(request)
        body = await read_json(request, settings.max_request_bytes, "step.max_request_bytes")
        rid, good = body.get("id"), body.get("good")
        if not isinstance(rid, str) or not isinstance(good, bool):
            raise APIError(400, 'give {"id": "<a response id>", "good": true|false}', param="id")
        if outcomes is None:
            raise APIError(404, "this gateway keeps no outcomes", code="no_outcomes")
        found = outcomes.feedback(rid, good)
        if found is None:
            raise APIError(404, f"no routed response has the id '{rid}'", param="id")
        decisions.write({"time": time.time(), "feedback": rid, "good": good, "backend": found[0]})
        return JSONResponse({"id": rid, "backend": found[0], "kind": found[1], "good": good})

    @app.get("/v1/memory/{user}")
    async def memory_of(user: str, request: Request) -> Response:
        authorize(request)
        return JSONResponse(kept_memory().export(user))

    @app.delete("/v1/memory/{user}")
    async def forget(user: str, request: Request) -> Response:
        authorize(request)
        return JSONResponse({"user": user, "deleted": kept_memory().forget(user)})

    def kept_memory() -> Any:
        if memory is None:
            raise APIError(404, "this gateway keeps no memory (step.memory.enabled=false)",
                           code="no_memory")  # fmt: skip
        return memory

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        authorize(request)
        body = await read_json(request, settings.max_request_bytes, "step.max_request_bytes")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise APIError(400, "prompt: give a non-empty string", param="prompt")
        if body.get("stream"):
            raise APIError(
                400, "stream: the gateway streams chat completions only; send stream=false",
                param="stream",
            )  # fmt: skip
        rid = request_id().replace("chatcmpl-", "cmpl-")
        stats.requests += 1
        decision = await route(body, prompt)
        started = time.perf_counter()
        errors: list[BackendError] = []
        for name in decision.backends:
            backend = fleet.backends[name]
            try:
                if isinstance(backend, ModelBackend):
                    answer = await backend.completion(strip_quark(body))
                else:  # a tool answers the prompt as a chat message
                    asked = {"messages": [{"role": "user", "content": prompt}]}
                    answer = as_text_completion(await backend.chat(asked))
            except BackendError as exc:
                if decision.strategy == "named" or not can_fall_back(exc):
                    stats.failed += 1
                    decisions.write(log_record(rid, decision, None, started, error=exc.message))
                    raise as_api_error(exc) from None
                errors.append(exc)
                stats.fallbacks += 1
                continue
            return JSONResponse(finished(answer, name, decision, started, rid, stats, decisions))
        stats.failed += 1
        error = most_telling(errors)
        decisions.write(log_record(rid, decision, None, started, error=error.message))
        raise as_api_error(error)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        authorize(request)
        body = await read_json(request, settings.max_request_bytes, "step.max_request_bytes")
        messages = checked_messages(body)
        client_tools = checked_tools(body)
        user, conversation = body.get("user"), body.get("conversation")
        if not (isinstance(user, str) and user):
            user = None
        if not isinstance(conversation, str):
            conversation = None
        question = last_user_text(messages)
        rid = request_id()
        stats.requests += 1

        # 1. Memory: the client's system messages, the profile, the conversation so far.
        learned: list[str] = []
        if memory is not None and user is not None:
            learned = memory.learn_from(user, question)
            earlier = memory.history(user, conversation) if conversation else []
            profile = memory.profile(user).system_prompt()
            leading = [m for m in messages if m["role"] in ("system", "developer")]
            rest = [m for m in messages if m["role"] not in ("system", "developer")]
            head = [{"role": "system", "content": profile}] if profile else []
            messages_in = [*leading, *head, *earlier, *rest]
        else:
            messages_in = messages

        # 2. The route.
        decision = await route(body, question)
        if memory is not None and user is not None and decision.kind:
            memory.count_kind(user, decision.kind)
        started = time.perf_counter()
        # built-in tools run here (unless tool_choice is "none"); the client's own go on
        choice = body.get("tool_choice")
        built_in = [t for t in client_tools if loop_tools.is_builtin(t)] if choice != "none" else []
        theirs = [t for t in client_tools if not loop_tools.is_builtin(t)]
        outbound = {k: v for k, v in strip_quark(body).items() if k not in ("tools", "tool_choice")}
        outbound["messages"] = messages
        if theirs:
            outbound["tools"] = theirs
            if choice is not None and not (
                isinstance(choice, dict) and loop_tools.is_builtin(choice)
            ):
                outbound["tool_choice"] = choice
        route_extra: dict[str, Any] = {}

        async def fitted(name: str) -> list[dict[str, Any]]:
            return fit_for(fleet.backends[name], messages_in, settings.memory_summarize)

        # 3. Streamed, single backend: passed through chunk by chunk.
        first = fleet.backends[decision.backends[0]]
        streams = isinstance(first, ModelBackend) and not built_in
        if body.get("stream") and decision.mode == "single" and streams:
            try:
                return await stream_through(
                    decision, outbound, fitted, rid, started, body, user, conversation, messages
                )
            except APIError as exc:  # refused before the stream began
                stats.failed += 1
                decisions.write(log_record(rid, decision, None, started, error=exc.message))
                raise

        # 4. Whole answers: one backend (with the tool loop), a cascade, or an ensemble.
        try:
            if decision.mode == "cascade":
                answer, name = await cascade(decision, outbound, fitted, question, route_extra)
            elif decision.mode == "ensemble":
                answer, name = await ensemble(decision, outbound, fitted, question, route_extra)
            else:
                answer, name = await single(decision, outbound, fitted, body, built_in, route_extra)
        except BackendError as exc:
            stats.failed += 1
            decisions.write(log_record(rid, decision, None, started, error=exc.message))
            raise as_api_error(exc) from None
        except ToolLoopError as exc:
            stats.failed += 1
            decisions.write(log_record(rid, decision, None, started, error=str(exc)))
            raise APIError(exc.status, str(exc), code=exc.code, kind="server_error") from None
        except APIError as exc:  # the request cannot go to the backend (its context is too long)
            stats.failed += 1
            decisions.write(log_record(rid, decision, None, started, error=exc.message))
            raise
        text = answer_text(answer)
        success = verify(decision.kind, question, text)
        if outcomes is not None and name in fleet.backends:
            outcomes.record(name, decision.kind or "unknown", success,
                            time.perf_counter() - started, request_id=rid)  # fmt: skip
        if memory is not None and user is not None and conversation:
            memory.add_messages(user, conversation, [*messages[-1:], assistant(text)])
        if learned:
            route_extra["learned"] = learned
        body_out = finished(answer, name, decision, started, rid, stats, decisions, success,
                            route_extra)  # fmt: skip
        if body.get("stream"):  # a cascade, ensemble, tool or tool loop answers whole, then streams
            return StreamingResponse(as_stream(body_out), media_type="text/event-stream")
        return JSONResponse(body_out)

    async def route(body: dict[str, Any], text: str) -> Decision:
        named = body.get("model")
        if named is not None and not isinstance(named, str):
            raise APIError(400, "model: give a backend's name, or auto", param="model")
        if named not in (None, "", "auto") and named not in fleet.backends:
            decisions.write({"time": time.time(), "model": named, "error": "model_not_found"})
            raise APIError(
                404, f"the model '{named}' does not exist; this gateway serves 'auto' and the "
                f"backends {', '.join(fleet.backends)}", param="model", code="model_not_found",
            )  # fmt: skip
        if named in (None, "", "auto"):
            found = await kinds.kind_of(text)
            up = {n for n, b in fleet.backends.items() if b.breaker.available()}
            return router.decide(text, up, found)
        # a named backend needs no classifier: the kind (for verifying) only when a rule says
        kind = router.rule_kind(text)
        return Decision("named", kind, [str(named)], f"the request named {named}")

    async def single(
        decision: Decision,
        outbound: dict[str, Any],
        fitted: Any,
        body: dict[str, Any],
        built_in: list[dict[str, Any]],
        extra: dict[str, Any],
    ) -> tuple[dict[str, Any], str]:
        errors: list[BackendError] = []
        tried: list[dict[str, str]] = []
        for name in decision.backends:
            backend = fleet.backends[name]
            began = time.perf_counter()
            try:
                request = {**outbound, "messages": await fitted(name)}
                loops = isinstance(backend, ModelBackend) and backend.spec.tool_calls != "none"
                if built_in and loops:
                    answer, calls = await loop_tools.run(backend, request, built_in)
                    extra["tool_calls"] = calls
                else:
                    answer = await backend.chat(request)
                if tried:
                    extra["fell_back_from"] = tried
                return answer, name
            except BackendError as exc:
                if decision.strategy == "named" or not can_fall_back(exc):
                    raise
                errors.append(exc)
                tried.append({"backend": name, "error": exc.message})
                stats.fallbacks += 1
                if exc.fault and outcomes is not None:  # it could not answer: a failure
                    outcomes.record(name, decision.kind or "unknown", False,
                                    time.perf_counter() - began)  # fmt: skip
                log.warning("orchestrate: %s failed (%s); falling back", name, exc.message)
        raise most_telling(errors)

    async def cascade(
        decision: Decision, outbound: dict[str, Any], fitted: Any, question: str,
        extra: dict[str, Any],
    ) -> tuple[dict[str, Any], str]:  # fmt: skip
        """The backends in order until an answer passes; when none does, the last (the
        strongest) that answered."""
        steps: list[dict[str, Any]] = []
        errors: list[BackendError] = []
        answered: tuple[dict[str, Any], str] | None = None
        for name in decision.backends:
            backend = fleet.backends[name]
            request = {**outbound, "messages": await fitted(name)}
            if isinstance(backend, ModelBackend):
                request["logprobs"] = True
            try:
                answer = await backend.chat(request)
            except BackendError as exc:
                if not can_fall_back(exc):
                    raise
                errors.append(exc)
                steps.append({"backend": name, "error": exc.message})
                continue
            answered = (answer, name)
            text = answer_text(answer)
            checked = verify(decision.kind, question, text)
            confidence = mean_logprob(answer)
            step = {"backend": name, "verified": checked, "mean_logprob": confidence}
            steps.append(step)
            if checked is True or (
                checked is None and (confidence is None or confidence >= settings.cascade_threshold)
            ):
                step["accepted"] = True
                break
            step["escalated"] = "failed its verifier" if checked is False else (
                f"mean log-prob {confidence:.2f} < {settings.cascade_threshold}"
            )  # fmt: skip
        extra["cascade"] = steps
        if answered is None:
            raise most_telling(errors)
        return answered

    async def ensemble(
        decision: Decision, outbound: dict[str, Any], fitted: Any, question: str,
        extra: dict[str, Any],
    ) -> tuple[dict[str, Any], str]:  # fmt: skip
        names = decision.backends

        async def ask(name: str) -> dict[str, Any] | BackendError:
            try:
                request = {**outbound, "messages": await fitted(name)}
                return await fleet.backends[name].chat(request)
            except BackendError as exc:
                return exc

        results = await asyncio.gather(*(ask(n) for n in names))
        answers = {n: r for n, r in zip(names, results, strict=True) if isinstance(r, dict)}
        if not answers:
            raise most_telling([r for r in results if isinstance(r, BackendError)])
        texts = {n: answer_text(a) for n, a in answers.items()}
        aggregate = settings.ensemble_aggregate
        votes: dict[str, list[str]] = {}
        for n, text in texts.items():
            votes.setdefault(normalised(text), []).append(n)
        chosen = max(votes.values(), key=len)[0]  # ties: the earliest member
        how = f"majority {len(max(votes.values(), key=len))}/{len(texts)}"
        if aggregate == "verifier":
            verified = [n for n, t in texts.items() if verify(decision.kind, question, t)]
            if verified:
                chosen, how = verified[0], "verified"
            else:
                how += " (none verified)"
        elif aggregate == "reward" and reward is not None:
            scores = await asyncio.to_thread(reward, question, list(texts.values()))
            best = max(range(len(scores)), key=lambda i: scores[i])
            chosen = list(texts)[best]
            how = f"reward {scores[best]:.3f}"
            extra["rewards"] = dict(zip(texts, (round(float(s), 4) for s in scores), strict=True))
        extra["ensemble"] = {
            "answers": texts,
            "failed": {n: r.message for n, r in zip(names, results, strict=True)
                       if isinstance(r, BackendError)},
            "chosen_by": how,
        }  # fmt: skip
        return answers[chosen], chosen

    async def stream_through(
        decision: Decision,
        outbound: dict[str, Any],
        fitted: Any,
        rid: str,
        started: float,
        body: dict[str, Any],
        user: Any,
        conversation: Any,
        messages: list[dict[str, Any]],
    ) -> Response:
        # the first chunk is awaited here, so a backend that fails before answering is passed
        # over (or refused) with a proper status, not inside a 200 stream
        tried: list[dict[str, str]] = []
        for name in decision.backends:
            backend = fleet.backends[name]
            if not isinstance(backend, ModelBackend):
                continue
            chunks = backend.stream_chat({**outbound, "messages": await fitted(name)})
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                first = None
            except BackendError as exc:
                if decision.strategy == "named" or not can_fall_back(exc):
                    raise as_api_error(exc) from None
                tried.append({"backend": name, "error": exc.message})
                stats.fallbacks += 1
                continue
            route_info = {**decision.record(), "backend": name}
            if tried:
                route_info["fell_back_from"] = tried
            return StreamingResponse(
                relay(name, first, chunks, rid, route_info, started, decision, user, conversation,
                      messages),
                media_type="text/event-stream", headers={"X-Quark-Backend": name},
            )  # fmt: skip
        raise APIError(503, "no backend could answer", code="no_backend", kind="server_error")

    async def relay(
        name: str,
        first: dict[str, Any] | None,
        chunks: AsyncIterator[dict[str, Any]],
        rid: str,
        route_info: dict[str, Any],
        started: float,
        decision: Decision,
        user: Any,
        conversation: Any,
        messages: list[dict[str, Any]],
    ) -> AsyncIterator[str]:
        text: list[str] = []
        error: str | None = "the client disconnected"  # unless the stream ends otherwise
        recorded = False

        def record() -> None:
            """The outcome, the memory and the log line, once, however the stream ended."""
            nonlocal recorded
            if recorded:
                return
            recorded = True
            answer = "".join(text)
            success = False if error else verify(decision.kind, last_user_text(messages), answer)
            if outcomes is not None:
                outcomes.record(name, decision.kind or "unknown", success,
                                time.perf_counter() - started, request_id=rid)  # fmt: skip
            if not error and memory is not None and user is not None and conversation:
                memory.add_messages(user, conversation, [*messages[-1:], assistant(answer)])
            stats.by_backend[name] = stats.by_backend.get(name, 0) + 1
            decisions.write(log_record(rid, decision, name, started, success=success, error=error))

        try:
            chunk = first
            sent_route = False
            while chunk is not None:
                chunk = {**chunk, "id": rid, "model": name}
                if not sent_route:
                    chunk["route"], sent_route = route_info, True
                for choice in chunk.get("choices") or []:
                    text.append((choice.get("delta") or {}).get("content") or "")
                yield sse(chunk)
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    chunk = None
            error = None
        except BackendError as exc:
            error = exc.message
            stats.failed += 1
            yield sse(exc.body())
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            record()  # before [DONE]: a client that leaves at once still has its line
        yield "data: [DONE]\n\n"

    return app


def fit_for(backend: Any, messages: list[dict[str, Any]], summarize: bool) -> list[dict[str, Any]]:
    """`messages` fitted to the backend's context (quark.orchestrate.memory.fit_context):
    oldest turns dropped or summarised whole, never cut mid-message."""
    from quark.orchestrate.memory import ContextTooLong, fit_context

    if isinstance(backend, ToolBackend):
        return messages
    # room for the answer: a quarter of the window
    budget = backend.context_tokens - max(backend.context_tokens // 4, 16)
    try:
        fitted, _stats = fit_context(messages, budget, backend.count_tokens, summarize=summarize)
    except ContextTooLong as exc:
        raise APIError(
            400, f"messages: {exc} (backend {backend.name})", param="messages",
            code="context_length_exceeded",
        ) from None  # fmt: skip
    return fitted


def finished(
    answer: dict[str, Any],
    name: str,
    decision: Decision,
    started: float,
    rid: str,
    stats: GatewayStats,
    decisions: DecisionLog,
    success: bool | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The backend's answer as the gateway returns it: its id, the backend as the model, and
    the route taken; logged."""
    extra = extra or {}
    route_info = {**decision.record(), "backend": name, **extra}
    if success is not None:
        route_info["verified"] = success
    stats.by_backend[name] = stats.by_backend.get(name, 0) + 1
    decisions.write(log_record(rid, decision, name, started, success=success, extra=extra))
    return {**answer, "id": rid, "model": name, "route": route_info}


def log_record(
    rid: str,
    decision: Decision,
    backend: str | None,
    started: float,
    success: bool | None = None,
    error: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    record = {
        "id": rid,
        "time": time.time(),
        **decision.record(),
        "backend": backend,
        "latency_s": round(time.perf_counter() - started, 4),
        "verified": success,
    }
    if error:
        record["error"] = error
    for key in ("tool_calls", "cascade", "fell_back_from"):
        if extra and key in extra:
            record[key] = extra[key]
    return record


def as_stream(body: dict[str, Any]) -> AsyncIterator[str]:
    """A whole chat completion as OpenAI's stream chunks: role, the text, the finish."""

    async def chunks() -> AsyncIterator[str]:
        base: dict[str, Any] = {k: body[k] for k in ("id", "created", "model") if k in body}
        base["object"] = "chat.completion.chunk"
        for choice in body.get("choices") or []:
            index = choice.get("index", 0)
            message = choice.get("message") or {}
            first = {"index": index, "delta": {"role": "assistant", "content": ""},
                     "finish_reason": None}  # fmt: skip
            yield sse({**base, "choices": [first], "route": body.get("route")})
            if message.get("content"):
                delta = {"index": index, "delta": {"content": message["content"]},
                         "finish_reason": None}  # fmt: skip
                yield sse({**base, "choices": [delta]})
            end = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
            yield sse({**base, "choices": [end]})
        yield "data: [DONE]\n\n"

    return chunks()


def checked_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's messages, each with its content as one string (text parts joined; an
    assistant's tool-call turn may have none), or a 400 naming the first bad one."""
    from quark.orchestrate.backends import content_text

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages: give a non-empty list of messages", param="messages")
    checked = []
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system", "developer", "user", "assistant", "tool",
        ):  # fmt: skip
            raise APIError(
                400, f"messages.{number}: each message needs a role (system, developer, user, "
                "assistant or tool)", param=f"messages.{number}.role",
            )  # fmt: skip
        content = message.get("content")
        empty_allowed = message["role"] == "assistant"  # a turn of tool calls only
        if not (isinstance(content, (str, list)) or (content is None and empty_allowed)):
            raise APIError(
                400, f"messages.{number}.content: give a string or a list of text parts",
                param=f"messages.{number}.content",
            )  # fmt: skip
        checked.append({**message, "content": content_text(content)})
    return checked


def checked_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("function"), dict) for t in tools
    ):
        raise APIError(
            400, 'tools: give a list of {"type": "function", "function": {"name", ...}}',
            param="tools",
        )  # fmt: skip
    return tools


def strip_quark(body: dict[str, Any]) -> dict[str, Any]:
    """The request as a backend takes it: without the gateway's own fields."""
    return {k: v for k, v in body.items() if k not in QUARK_FIELDS}


def can_fall_back(exc: BackendError) -> bool:
    """Another backend may answer when this one is at fault or declined, not when the request
    itself was refused (a 4xx other than a tool declining)."""
    return exc.fault or exc.code in ("tool_declined", "backend_unavailable")


def most_telling(errors: list[BackendError]) -> BackendError:
    """What to answer when no backend could: the first fault (a backend that is down says
    more than a tool that declined, which would read as the client's mistake)."""
    if not errors:
        return BackendError("-", 503, "no backend could answer", code="no_backend")
    faults = [e for e in errors if e.code != "tool_declined"]
    first = (faults or errors)[0]
    if first.code == "tool_declined":
        tried = ", ".join(e.backend for e in errors)
        return BackendError(first.backend, 503, f"no backend could answer (tried {tried}: "
                            f"{first.message})", code="no_backend")  # fmt: skip
    return first


def as_text_completion(answer: dict[str, Any]) -> dict[str, Any]:
    """A chat completion in the shape of a /v1/completions answer."""
    choices = [
        {"index": c.get("index", 0), "text": (c.get("message") or {}).get("content") or "",
         "finish_reason": c.get("finish_reason"), "logprobs": None}
        for c in answer.get("choices") or []
    ]  # fmt: skip
    return {**answer, "object": "text_completion", "choices": choices}


def as_api_error(exc: BackendError) -> APIError:
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    return APIError(exc.status, exc.message, code=exc.code, kind=kind)


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def request_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
