"""step=serve: the model behind OpenAI's HTTP API, concurrent requests batched.

    python launch.py step=serve                                   # newest finetune, else pretrain run
    python launch.py step=serve step.model_dir=outputs/demo/optimize/<time>   # its ONNX export
    python launch.py step=serve step.port=0 step.api_key=secret   # a free port (logged), a key
    python launch.py step=serve step.demo_prompt='def main('      # stream one completion, stop

Loads the model (a run's hf/ export or a Hugging Face model directory in torch; an optimize
run's onnx_int8 or onnx export, or an ONNX export directory, in ONNX Runtime), starts the
scheduler that decodes every active request in one forward pass per token (quark.serve.engine)
and the HTTP server (quark.serve.api: /v1/completions, /v1/chat/completions, /v1/models,
/health) on step.host:step.port. It serves until Ctrl-C or SIGTERM (or step.max_seconds);
with step.demo_prompt it streams that prompt's completion from itself over HTTP to the console
and stops. Either way the run completes with what was served: requests, tokens, batch sizes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from quark.core.errors import ConfigError, StepFailed
from quark.core.run import MANIFEST, Run
from quark.lineage.model_files import check_weights
from quark.lineage.models import ModelLocation, find_model

log = logging.getLogger("quark")
MODEL_DIR_ALLOWED = (
    "give a pretrain, finetune or align run directory, an optimize run directory (onnx or onnx_int8 "
    "export), a Hugging Face model directory (config.json and weights), or an ONNX export "
    "directory (model.onnx)"
)
# the optimize exports serve runs
SERVED_EXPORTS = ("onnx_int8", "onnx", "hf")


@dataclass(frozen=True)
class ServeInputs:
    """What serving reads: the model."""

    model: ModelLocation
    classifier: Path | None = None  # safety=classifier's model
    retrieval: Path | None = None  # step.retrieval.index: a retrieve run

    def recorded(self) -> dict[str, Path]:
        found = {"model": self.model.source}
        found |= {"safety_classifier": self.classifier} if self.classifier else {}
        return found | ({"retrieval_index": self.retrieval} if self.retrieval else {})


def inputs(cfg: DictConfig) -> ServeInputs:
    """The model (quark.lineage: step.model_dir; else the optimize, align, finetune or pretrain run a
    pipeline handed over; else the newest finetune run, else pretrain), refused here if serve
    cannot run it."""
    from quark.safety.guard import classifier_dir

    model = find_model(cfg, "step.model_dir", MODEL_DIR_ALLOWED, SERVED_EXPORTS)
    check_weights(model.directory, "step.model_dir", MODEL_DIR_ALLOWED)
    return ServeInputs(model, classifier_dir(cfg), retrieval_index(cfg))


def retrieval_index(cfg: DictConfig) -> Path | None:
    """step.retrieval.index: a completed retrieve run whose files match its manifest."""
    from quark.core.run import verify_run

    named = cfg.step.retrieval.index
    if not named:
        return None
    path = Path(str(named)).expanduser()
    allowed = "give a completed retrieve run directory (python launch.py step=retrieve)"
    if not path.is_dir():
        problem = "does not exist" if not path.exists() else "is not a directory"
        raise ConfigError("step.retrieval.index", f"{path} {problem}", allowed)
    step = verify_run(path, "step.retrieval.index", allowed).get("step")
    if step != "retrieve":
        raise ConfigError("step.retrieval.index", f"{path} is a {step} run", allowed)
    return path


def run(cfg: DictConfig, run: Run, inputs: ServeInputs) -> dict[str, float]:
    from quark.export import quiet_exporters
    from quark.safety.guard import build_guard
    from quark.serve.api import build_app
    from quark.serve.backends import load_model
    from quark.serve.engine import Engine
    from quark.serve.guarded import HOLD_BACK_CHARACTERS
    from quark.serve.protocol import Limits
    from quark.serve.server import Server, bind, stream_completion

    quiet_exporters()  # optional-kernel notices of libraries transformers loads
    step = cfg.step
    source, directory = inputs.model.source, inputs.model.directory
    # bound before the model loads: a taken port is bad input at once; port 0 picks a free one
    sock = bind(str(step.host), int(step.port))

    # 1. The model in its runtime, and the scheduler that batches every request through it.
    try:
        threads = configure_threads(step.threads)
        name = str(step.model_name or default_name(source, directory))
        model = load_model(directory, name, torch_device(str(step.device)), threads)
        retrieval = None
        if inputs.retrieval is not None:
            from quark.serve.rag import load_retrieval

            served = step.retrieval
            budget = int(served.max_context_tokens or model.positions // 2)
            retrieval = load_retrieval(inputs.retrieval, int(served.k), str(served.mode), budget)
            log.info("serve: retrieval from %s (%d chunks, modes %s)", inputs.retrieval,
                     len(retrieval.index.chunks), ", ".join(retrieval.index.modes))  # fmt: skip
    except BaseException:
        sock.close()
        raise
    engine = Engine(model, int(step.max_batch_size), int(step.max_prefill_tokens))
    limits = Limits(
        max_tokens=int(step.max_tokens),
        max_prompt_tokens=min(int(step.max_prompt_tokens or model.positions), model.positions - 1),
        max_request_bytes=int(step.max_request_bytes),
        max_waiting=int(step.max_waiting),
    )

    # 2. The HTTP server on that socket.
    api_key = step.api_key or os.environ.get("QUARK_API_KEY") or None
    guard = build_guard(cfg.get("safety"), inputs.classifier)
    hold_back = int(cfg.safety.hold_back) if guard is not None else HOLD_BACK_CHARACTERS
    app = build_app(model, engine, limits, api_key, guard, hold_back, retrieval)
    server = Server(app, sock)
    engine.start()
    server.start()
    started = time.perf_counter()
    log.info(
        "serve: %s (%s) on %s/v1 %s%s", name, model.backend.runtime, server.url,
        "(API key required)" if api_key else "(no API key)",
        f", behind the safety guard '{cfg.safety.name}'" if guard is not None else "",
    )  # fmt: skip

    # 3. Serve: one streamed demo completion, or until Ctrl-C / SIGTERM / max_seconds.
    metrics: dict[str, float] = {}
    try:
        if step.demo_prompt is not None:
            metrics = stream_completion(
                server.url, str(step.demo_prompt), int(step.demo_max_tokens), api_key,
                temperature=float(step.demo_temperature), seed=int(cfg.seed),
            )  # fmt: skip
            reason = "demo done"
        else:
            reason = server.wait(step.max_seconds)
    finally:
        server.stop()
        engine.stop()
    seconds = time.perf_counter() - started
    log.info("serve: stopped (%s) after %.1f s", reason, seconds)
    if engine.failure is not None:
        raise StepFailed(f"serve: generation failed: {engine.failure}") from engine.failure

    # 4. What was served.
    stats = engine.stats
    steps = max(stats.decode_steps, 1)
    return {
        "requests": float(stats.finished + stats.cancelled),
        "tokens_generated": float(stats.tokens_generated),
        "max_decode_batch": float(max(stats.batch_sizes, default=0)),
        "mean_decode_batch": sum(k * v for k, v in stats.batch_sizes.items()) / steps,
        "cancelled": float(stats.cancelled),
        "served_s": seconds,
        **metrics,
    }


def configure_threads(threads: int | None) -> int:
    """Set torch's CPU threads to `threads` when given; the count every runtime gets."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def torch_device(device: str) -> str:
    """step.device as torch names it: auto is cuda when there is one, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("step.device", "cuda, but torch sees no CUDA device", "cpu, or auto")
    return device


def default_name(source: Path, directory: Path) -> str:
    """A run's step and time (e.g. finetune/2026-11-24_10-00-00), else the directory's name."""
    if (source / MANIFEST).is_file():
        return f"{source.parent.name}/{source.name}"
    return directory.name
