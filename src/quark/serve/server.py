"""The server's life: uvicorn in a background thread on a socket bound up front (so port 0
picks a free port we can name before the first request), stopped on demand, on Ctrl-C or
SIGTERM, or after a time limit; and the streaming client of the demo."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from typing import Any, Literal, TextIO

from quark.core.errors import ConfigError

# seconds a stopping server lets requests in flight finish before it cancels them
GRACEFUL_SECONDS = 5


class Server:
    """`app` served by uvicorn in a thread of this process, on `sock` (see `bind`)."""

    def __init__(
        self, app: Any, sock: socket.socket, lifespan: Literal["on", "off"] = "off"
    ) -> None:
        """`lifespan`: "on" runs the app's startup and shutdown (the gateway closes its
        clients there)."""
        import uvicorn

        self.socket = sock
        self.host, self.port = str(sock.getsockname()[0]), int(sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_config=None,  # Hydra has configured logging: uvicorn's lines go through it
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
            lifespan=lifespan,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="quark-serve-http"
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(GRACEFUL_SECONDS + 5)
        self.socket.close()

    def wait(self, max_seconds: float | None) -> str:
        """Serve until Ctrl-C or SIGTERM, `max_seconds`, or the server ends; says which.
        Call from the main thread (signal handlers)."""
        stop = threading.Event()
        reason = ["stopped"]

        def on_signal(number: int, frame: Any) -> None:
            reason[0] = signal.Signals(number).name
            stop.set()

        handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not stop.is_set() and self.thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return "max_seconds"
                stop.wait(0.5 if left is None else min(0.5, left))
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
        return reason[0] if stop.is_set() else "the HTTP server ended"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: a free port), or bad input naming the key."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        key = "step.port" if exc.errno == 98 else "step.host"  # EADDRINUSE
        raise ConfigError(
            key,
            f"cannot listen on {host}:{port} ({exc.strerror})",
            "a free port (0 picks one) on an address of this machine, e.g. 127.0.0.1",
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def stream_completion(
    url: str,
    prompt: str,
    max_tokens: int,
    api_key: str | None,
    out: TextIO = sys.stdout,
    temperature: float = 0.0,
    seed: int | None = None,
) -> dict[str, float]:
    """Send `prompt` as a streaming /v1/completions request (sampled at `temperature` with
    `seed`; 0 is greedy), write the text as it arrives to `out`, and return what the client
    saw: tokens, seconds, time to the first text."""
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a request line would split the text
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    tokens = 0
    out.write(prompt)
    with httpx.stream(
        "POST", f"{url}/v1/completions", json=body, headers=headers, timeout=None
    ) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"the server answered {response.status_code}: {response.text}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if choice["text"]:
                    first = first or time.perf_counter() - started
                    out.write(choice["text"])
                    out.flush()
    seconds = time.perf_counter() - started
    out.write("\n")
    out.flush()
    return {
        "demo_tokens": float(tokens),
        "demo_seconds": seconds,
        "demo_first_text_s": first or seconds,
        "demo_tokens_per_s": tokens / seconds if seconds else 0.0,
    }
