"""The HTTP API: OpenAI's /v1/completions, /v1/chat/completions (streamed as server-sent
events or whole), /v1/models, and /health with the scheduler's counters."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from quark.serve.backends import ServedModel
from quark.serve.engine import Engine, Event, Sequence
from quark.serve.guarded import (
    HOLD_BACK_CHARACTERS,
    Guard,
    blocked_request,
    checked,
    refusal,
)
from quark.serve.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    EmbeddingsRequest,
    Limits,
    RetrieveRequest,
    SamplingRequest,
    authorizer,
    openai_errors,
    read_request,
)
from quark.serve.rag import Retrieval, query_of, source_record, with_context
from quark.serve.responses import Reply
from quark.serve.sampling import SamplingParams

# the most texts one /v1/embeddings request may hold (OpenAI's limit)
MAX_EMBEDDED = 2048


def build_app(
    model: ServedModel,
    engine: Engine,
    limits: Limits,
    api_key: str | None,
    guard: Guard | None = None,
    hold_back: int = HOLD_BACK_CHARACTERS,
    retrieval: Retrieval | None = None,
) -> FastAPI:
    """The FastAPI app serving `model` through `engine`; /v1/ needs `api_key` when set; with
    a `guard`, requests it blocks are refused and answers checked before they are sent
    (quark.serve.guarded); with `retrieval`, chat requests may ask for retrieved context
    (quark.serve.rag), and /v1/embeddings and /v1/retrieve answer from its index."""
    app = FastAPI(title="Quark", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    openai_errors(app)
    authorize = authorizer(api_key, "step.api_key or QUARK_API_KEY")

    @app.get("/health")
    async def health() -> Response:
        status = "ok" if engine.failure is None else "failed"
        body = {"status": status, "model": model.name, "runtime": model.backend.runtime}
        return JSONResponse({**body, **engine.health()}, status_code=200 if status == "ok" else 503)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        authorize(request)
        card = {"id": model.name, "object": "model", "created": created, "owned_by": "quark"}
        cards = [card]
        if retrieval is not None and retrieval.embedder is not None:
            cards.append({**card, "id": retrieval.embedder.name})
        return JSONResponse({"object": "list", "data": cards})

    def served_retrieval(param: str) -> Retrieval:
        if retrieval is None:
            raise APIError(
                400 if param == "retrieval" else 404,
                "this server has no retrieval index; start it with "
                "step.retrieval.index=<a retrieve run>",
                param=param, code="no_retrieval",
            )  # fmt: skip
        return retrieval

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        authorize(request)
        served = served_retrieval("input")
        req = await read_request(request, EmbeddingsRequest, limits)
        texts = req.texts()
        if len(texts) > MAX_EMBEDDED or not all(texts):
            raise APIError(400, f"input: give 1 to {MAX_EMBEDDED} non-empty strings", param="input")
        if served.embedder is None:
            raise APIError(
                404, f"the index '{served.name}' is BM25-only: this server has no embedder",
                code="no_embedder",
            )  # fmt: skip
        name = served.embedder.name
        if req.model is not None and req.model != name:
            raise APIError(
                404, f"the model '{req.model}' does not exist; this server embeds with '{name}'",
                param="model", code="model_not_found",
            )  # fmt: skip
        if req.dimensions is not None and req.dimensions != served.embedder.dimension:
            raise APIError(
                400, f"dimensions: this embedder gives {served.embedder.dimension} only",
                param="dimensions",
            )  # fmt: skip
        vectors, tokens = await served.embed(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": encoded(vector, req.encoding_format)}
            for i, vector in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": name, "usage": usage})

    @app.post("/v1/retrieve")
    async def retrieve(request: Request) -> Response:
        authorize(request)
        served = served_retrieval("query")
        req = await read_request(request, RetrieveRequest, limits)
        mode, k = served.check(req.index, req.mode, req.k)
        hits = await served.search(req.query, mode, k)
        data = [
            {**source_record(rank, hit), "text": hit.chunk.text}
            for rank, hit in enumerate(hits, start=1)
        ]
        return JSONResponse({"object": "list", "index": served.name, "mode": mode, "data": data})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        authorize(request)
        req = await read_request(request, CompletionRequest, limits)
        prompts = [token_ids(model, prompt) for prompt in prompt_list(req.prompt)]
        return await answer(request, req, prompts, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        authorize(request)
        req = await read_request(request, ChatRequest, limits)
        if not model.has_chat_template:
            raise APIError(
                400,
                f"the model {model.name} has no chat template (its tokenizer_config.json or "
                "chat_template.jinja sets none), so it cannot take chat messages; use "
                "/v1/completions, or serve a finetuned model",
                param="messages",
                code="no_chat_template",
            )
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        sources = None
        if req.retrieval is not None:
            served = served_retrieval("retrieval")
            option = req.retrieval
            mode, k = served.check(option.index, option.mode, option.k)
            hits = await served.search(query_of(messages), mode, k)
            messages, kept = with_context(
                messages, hits, model.tokenizer, served.max_context_tokens
            )
            sources = [source_record(rank, hit) for rank, hit in enumerate(kept, start=1)]
        extra = {"sources": sources} if sources is not None else {}
        return await answer(request, req, [chat_prompt(model, messages)], chat=True, extra=extra)

    async def answer(
        request: Request,
        req: SamplingRequest,
        prompts: list[list[int]],
        chat: bool,
        extra: dict[str, Any] | None = None,
    ) -> Response:
        if req.model is not None and req.model != model.name:
            raise APIError(
                404,
                f"the model '{req.model}' does not exist; this server serves '{model.name}'",
                param="model",
                code="model_not_found",
            )
        params = [sampling(req, chat, prompt) for prompt in prompts for _ in range(req.n)]
        prompts = [prompt for prompt in prompts for _ in range(req.n)]
        if engine.failure is not None:
            raise APIError(
                503, "the scheduler has failed; see the server's log", kind="server_error"
            )
        if len(engine.waiting) >= limits.max_waiting:
            raise APIError(
                503,
                f"{len(engine.waiting)} requests are waiting for a slot already; retry later",
                code="overloaded",
                kind="server_error",
            )
        if guard is not None and blocked_request(guard, [prompt_text(model, p) for p in prompts]):
            events = refusal(prompts)
        else:
            events = generate(engine, model, prompts, params)
            if guard is not None:
                events = checked(events, guard, hold_back, len(prompts))
        reply = Reply(model.name, chat, len(prompts), extra)
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(reply.stream(events, usage), media_type="text/event-stream")
        async with contextlib.aclosing(events):
            body = await unless_disconnected(request, reply.whole(events))
        # 499: nginx's "client closed request"; nobody is left to read it
        return Response(status_code=499) if body is None else JSONResponse(body)

    def sampling(req: SamplingRequest, chat: bool, prompt: list[int]) -> SamplingParams:
        if len(prompt) > limits.max_prompt_tokens:
            raise APIError(
                400,
                f"the prompt is {len(prompt)} tokens, more than the {limits.max_prompt_tokens} "
                "this server takes",
                param="messages" if chat else "prompt",
                code="context_length_exceeded",
            )
        room = model.positions - len(prompt)
        asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
        if asked is not None and asked > limits.max_tokens:
            raise APIError(
                400,
                f"max_tokens is {asked}, more than the {limits.max_tokens} this server allows",
                param="max_tokens",
            )
        if asked is not None and asked > room:
            raise APIError(
                400,
                f"the prompt ({len(prompt)} tokens) and max_tokens ({asked}) exceed the model's "
                f"{model.positions} positions; allowed: max_tokens <= {room}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        default = min(limits.max_tokens, room) if chat else min(16, room)  # as OpenAI's
        return SamplingParams(
            max_tokens=asked or default,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=max(req.top_k, 0),
            stop=req.stop_strings(),
            seed=req.seed,
            ignore_eos=req.ignore_eos,
            logprobs=(getattr(req, "top_logprobs", None) or 0)
            if getattr(req, "logprobs", False)
            else None,
        )

    return app


def encoded(vector: Any, encoding_format: str) -> Any:
    """An embedding as OpenAI sends it: a list of floats, or base64 of float32 bytes."""
    if encoding_format == "base64":
        import base64

        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def prompt_list(prompt: Any) -> list[str | list[int]]:
    """OpenAI's prompt forms as a list of prompts: text, or token ids."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt) or [""]


def token_ids(model: ServedModel, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        ids = list(model.tokenizer.encode(prompt))
    else:
        ids = list(prompt)
        vocabulary = len(model.tokenizer)
        if any(not 0 <= i < vocabulary for i in ids):
            raise APIError(400, f"prompt: token ids must lie in [0, {vocabulary})", "prompt")
    if not ids:
        raise APIError(400, "prompt: the prompt is empty; give at least one token", "prompt")
    return ids


def prompt_text(model: ServedModel, prompt: list[int]) -> str:
    """What a prompt says, without the chat template's markers: the text the guard checks."""
    return str(model.tokenizer.decode(prompt, skip_special_tokens=True))


def chat_prompt(model: ServedModel, messages: list[dict[str, str]]) -> list[int]:
    """The messages rendered by the model's chat template, ready for the assistant's turn."""
    from jinja2 import TemplateError

    try:
        text = model.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
    except TemplateError as exc:
        raise APIError(
            400, f"messages: the chat template refused them ({exc})", "messages"
        ) from None
    return list(model.tokenizer.encode(text, add_special_tokens=False))


async def generate(
    engine: Engine, model: ServedModel, prompts: list[list[int]], params: list[SamplingParams]
) -> AsyncGenerator[Event, None]:
    """The events of every choice as the scheduler produces them. Leaving early (the client
    disconnected) cancels the sequences, which frees their slots at the next step."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def emit(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: the server is gone
            loop.call_soon_threadsafe(queue.put_nowait, event)

    sequences = [
        Sequence(prompt, p, model.tokenizer, emit, index)
        for index, (prompt, p) in enumerate(zip(prompts, params, strict=True))
    ]
    engine.submit(sequences)
    running = len(sequences)
    try:
        while running:
            event = await queue.get()
            running -= event.finish_reason is not None
            yield event
    finally:
        for sequence in sequences:
            sequence.cancelled = True


async def unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """`work`'s result, or None if the client disconnects first (its request body is read, so
    the next message from the connection can only be the disconnect); `work` is cancelled."""
    task = asyncio.ensure_future(work)
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if gone:
            return None
        raise
    finally:
        watcher.cancel()
