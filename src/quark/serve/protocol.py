"""The OpenAI API's request bodies as the server accepts them, and its error shape.

Every refused request gets OpenAI's error object, {"error": {"message", "type", "param",
"code"}}, with a 4xx status and a message that says what was wrong and what is allowed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

# parameters of OpenAI's API this server does not implement: refused unless left at the value
# that means "off", so nobody silently gets something other than what they asked for
UNSUPPORTED = {
    "echo": False,
    "logprobs": None,
    "top_logprobs": None,
    "best_of": None,
    "suffix": None,
    "logit_bias": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "tools": None,
    "functions": None,
    "response_format": None,
}


# the most alternatives a chat request may ask for at each position (OpenAI allows 20)
MAX_TOP_LOGPROBS = 20


@dataclass
class Limits:
    """What one request may ask for (conf/step/serve.yaml)."""

    max_tokens: int  # the most completion tokens a request may ask for
    max_prompt_tokens: int  # the longest prompt, in tokens
    max_request_bytes: int
    max_waiting: int  # requests queued for a free slot before new ones are turned away


class APIError(Exception):
    """A refused request: HTTP status and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """The fields completions and chat completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    # not in OpenAI's API (vLLM's): 0 or -1 keep every token
    top_k: int = Field(0, ge=-1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = Field(None, max_length=4)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # not in OpenAI's API (vLLM's): generate through end-of-sequence tokens
    ignore_eos: bool = False
    user: str | None = None

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    # what this kind of request implements of UNSUPPORTED (chat: logprobs)
    supported: ClassVar[frozenset[str]] = frozenset()

    def check_supported(self, body: dict[str, Any]) -> None:
        for name, off in UNSUPPORTED.items():
            if name in self.supported:
                continue
            if body.get(name, off) not in (off, None):
                raise APIError(
                    400,
                    f"{name} is not supported by this server; leave it out",
                    param=name,
                    code="unsupported_parameter",
                )


class CompletionRequest(SamplingRequest):
    # a string, strings, token ids, or lists of token ids: one choice (n choices) each
    prompt: str | list[str] | list[int] | list[list[int]]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class RetrievalOption(BaseModel):
    """Not in OpenAI's API (Quark's): answer from a retrieve run's index (step.retrieval)."""

    model_config = ConfigDict(extra="forbid")

    index: str | None = None  # the served index's name; null: it
    k: int | None = Field(None, ge=1, le=50)
    mode: Literal["dense", "bm25", "hybrid", "graph"] | None = None


class ChatRequest(SamplingRequest):
    supported: ClassVar[frozenset[str]] = frozenset({"logprobs", "top_logprobs"})

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    # each completion token's log-probability under the model, and the top_logprobs likeliest
    # tokens at its position (OpenAI's chat form)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    # true: the server's defaults; an object: index, k, mode
    retrieval: RetrievalOption | None = None

    @field_validator("retrieval", mode="before")
    @classmethod
    def _retrieval_switch(cls, value: Any) -> Any:
        """`true` asks for the server's defaults, `false` for none."""
        if value is True:
            return {}
        return None if value is False else value


class EmbeddingsRequest(BaseModel):
    """OpenAI's /v1/embeddings body."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str] = Field(min_length=1)
    model: str | None = None
    # base64: the float32 vector's little-endian bytes (what the official client asks for)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class RetrieveRequest(BaseModel):
    """Quark's /v1/retrieve body: ranked chunks for a query."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    k: int | None = Field(None, ge=1, le=100)
    mode: Literal["dense", "bm25", "hybrid", "graph"] | None = None
    index: str | None = None


Parsed = TypeVar("Parsed", bound=BaseModel)


async def read_request(request: Request, kind: type[Parsed], limits: Limits) -> Parsed:
    """The JSON body of `request` as `kind`, read no further than max_request_bytes."""
    data = await read_json(request, limits.max_request_bytes, "step.max_request_bytes")
    try:
        parsed = kind.model_validate(data)
    except ValidationError as exc:
        raise APIError(400, *validation_message(exc)) from None
    if isinstance(parsed, SamplingRequest):
        parsed.check_supported(data)
    return parsed


async def read_json(request: Request, limit: int, key: str) -> dict[str, Any]:
    """The JSON object `request` carries, read no further than `limit` bytes (`key` sets it)."""
    too_large = APIError(
        413,
        f"the request body is larger than this server's limit of {limit} bytes ({key})",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    return data


def openai_errors(app: Any) -> None:
    """Every refusal of `app` (ours, and Starlette's 404/405) as OpenAI's error object."""
    from starlette.exceptions import HTTPException

    @app.exception_handler(APIError)
    async def refused(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return APIError(exc.status_code, f"{request.url.path}: {exc.detail}", code=code).response()


def authorizer(api_key: str | None, keys: str) -> Any:
    """A check that a request carries `api_key` as its bearer token (none when it is None);
    `keys` names where the key is set, for the refusal's message."""
    import hmac

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise APIError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>' with "
                f"the server's key ({keys})",
                code="invalid_api_key",
            )

    return authorize


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """One message for pydantic's errors, and the parameter it names."""
    errors = exc.errors()
    first = errors[0]
    top = str(first["loc"][0]) if first["loc"] else None
    alternatives = [e for e in errors if e["loc"][:1] == first["loc"][:1]]
    if len(alternatives) > 1:  # a union: every branch failed, name the value instead
        shown = json.dumps(first["input"])[:80]
        return f"{top}: {shown} is not one of the accepted forms of {top}", top
    param = ".".join(str(part) for part in first["loc"]) or None
    return f"{param}: {first['msg']}", param
