"""The schema of conf/step/serve.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field

from quark.core.schemas.fields import choice, pattern, ranged
from quark.core.schemas.retrieve import MODES


@dataclass
class ServedRetrievalSchema:
    # a retrieve run: chat requests may ask for "retrieval" (its chunks in the prompt, their
    # sources in the response), and /v1/embeddings and /v1/retrieve answer; null: none
    index: str | None = None
    k: int = ranged(4, ge=1, le=50)  # chunks a request gets unless it asks for another k
    mode: str = choice("hybrid", MODES)  # unless the request names one
    # tokens of the served model the retrieved text may fill; null: half its positions
    max_context_tokens: int | None = ranged(None, ge=16)


@dataclass
class ServeStepSchema:
    name: str = "serve"
    # a pretrain, finetune or align run directory (its hf/ export), an optimize run directory (its
    # onnx_int8, onnx or hf export), a Hugging Face model directory, or an ONNX export directory
    # (model.onnx, config.json, tokenizer); null: the newest completed finetune run of this
    # experiment, else its newest completed pretrain run
    model_dir: str | None = None
    # the id clients name the model by (/v1/models, "model" in requests); null: the name of
    # the model's directory (its run's step and timestamp for a run)
    model_name: str | None = pattern(
        None, r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$", "letters, digits, '_', '.', ':', '/', '-'"
    )
    host: str = "127.0.0.1"
    # 0: a free port, written to the log
    port: int = ranged(8000, ge=0, le=65535)
    # requests to /v1/ must send 'Authorization: Bearer <key>'; null: the environment variable
    # QUARK_API_KEY, or no key when it is unset
    api_key: str | None = None
    # sequences decoded together in one forward pass; more wait for a free slot
    max_batch_size: int = ranged(16, ge=1)
    # prompts arriving together are prefilled in one forward pass of at most this many
    # (left-padded) tokens; a longer prompt is prefilled alone
    max_prefill_tokens: int = ranged(2048, ge=1)
    # requests waiting for a slot before new ones are turned away (503)
    max_waiting: int = ranged(256, ge=1)
    # the most completion tokens one request may ask for
    max_tokens: int = ranged(512, ge=1)
    # the longest prompt in tokens; null: the model's positions less one
    max_prompt_tokens: int | None = ranged(None, ge=1)
    max_request_bytes: int = ranged(1_000_000, ge=64)
    # torch only: where the model runs; auto: cuda when available, else cpu
    device: str = choice("auto", ("auto", "cpu", "cuda"))
    # CPU threads of torch and ONNX Runtime; null: torch's default
    threads: int | None = ranged(None, ge=1)
    # stop serving after this many seconds (tests); null: until Ctrl-C or SIGTERM
    max_seconds: float | None = ranged(None, gt=0)
    # start the server, stream this prompt's completion from it over HTTP to the console, stop
    demo_prompt: str | None = None
    demo_max_tokens: int = ranged(48, ge=1)
    # the demo request's sampling temperature (0: greedy), seeded with the run's seed
    demo_temperature: float = ranged(0.6, ge=0)
    retrieval: ServedRetrievalSchema = field(default_factory=ServedRetrievalSchema)
