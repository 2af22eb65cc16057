"""An OpenAI-compatible server whose answers are scripted by the last user message, run as a
process of its own: the remote backend (vLLM, TGI, another gateway) the gateway's tests need
to misbehave on cue.

    python tests/orchestrate/scripted_backend.py PORT_FILE

writes the port it listens on to PORT_FILE. The last user message says what to do:

    TOOL     call the calculator natively (tool_calls) with {"expression": "6 * 7"}; once a tool
             message is in the conversation, answer "The tool said: <its content>"
    HERMES   the same as TOOL, the call written in the text as <tool_call>{...}</tool_call>
    GRAPH    call graph_lookup for Circle's bases, then retrieve "convert centimetres to
             metres", then answer with both results
    BADARGS  call the calculator with arguments it refuses
    LOOP     call the calculator every time, never answering
    ECHO     answer with the messages it received, as JSON
    SLOW     stream 40 chunks, 0.2 s apart (to be killed mid-stream)
    HANG     stream one chunk, then send nothing more
    TGIERROR stream one chunk, then an error as TGI sends it: {"error": "<text>"}
    FAIL     answer 500
    anything else: "scripted answer"
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, StreamingResponse

app = FastAPI()


def completion(content: str | None, tool_calls: list[dict[str, Any]] | None = None) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def tool_call(name: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": "call_" + uuid.uuid4().hex[:8],
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
    ]


def calculator_call(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    return tool_call("calculator", arguments)


def chunk(text: str | None, finish: str | None = None) -> str:
    delta = {"content": text} if text is not None else {}
    body = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


@app.get("/v1/models")
async def models() -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})


@app.post("/v1/chat/completions")
async def chat(request: Request) -> Any:
    body = await request.json()
    messages = body["messages"]
    said = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if "FAIL" in said:
        return JSONResponse({"error": {"message": "scripted failure"}}, status_code=500)
    if body.get("stream"):
        return StreamingResponse(stream(said), media_type="text/event-stream")
    tool_results = [m for m in messages if m["role"] == "tool"]
    if "LOOP" in said:
        return JSONResponse(completion(None, calculator_call({"expression": "1 + 1"})))
    if "BADARGS" in said:
        return JSONResponse(completion(None, calculator_call({"expr": 5})))
    if "HERMES" in said:
        if tool_results:
            return JSONResponse(completion(f"The tool said: {tool_results[-1]['content']}"))
        call = {"name": "calculator", "arguments": {"expression": "2 + 2"}}
        return JSONResponse(completion(f"<tool_call>{json.dumps(call)}</tool_call>"))
    if "GRAPH" in said:
        if len(tool_results) == 0:
            return JSONResponse(
                completion(
                    None, tool_call("graph_lookup", {"name": "Circle", "relation": "inherits"})
                )
            )
        if len(tool_results) == 1:
            return JSONResponse(
                completion(
                    None, tool_call("retrieve", {"query": "convert centimetres to metres", "k": 1})
                )
            )
        return JSONResponse(
            completion(json.dumps([json.loads(m["content"]) for m in tool_results]))
        )
    if "TOOL" in said:
        if tool_results:
            return JSONResponse(completion(f"The tool said: {tool_results[-1]['content']}"))
        return JSONResponse(completion(None, calculator_call({"expression": "6 * 7"})))
    if "ECHO" in said:
        return JSONResponse(completion(json.dumps(messages)))
    return JSONResponse(completion("scripted answer"))


async def stream(said: str) -> Any:
    yield chunk("")
    if "HANG" in said:
        yield chunk("first")
        await asyncio.sleep(3600)
    if "TGIERROR" in said:
        yield chunk("first")
        yield f"data: {json.dumps({'error': 'scripted string error'})}\n\n"
        return
    count = 40 if "SLOW" in said else 3
    for number in range(count):
        yield chunk(f"piece{number} ")
        if "SLOW" in said:
            await asyncio.sleep(0.2)
    yield chunk(None, "stop")
    yield "data: [DONE]\n\n"


def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    with open(sys.argv[1], "w") as out:
        out.write(str(sock.getsockname()[1]))
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
