"""The ONNX Runtime backend: an ONNX export (quark.export.onnx, its key/value-cache graph)
served through the same API and scheduler, batched, to the greedy tokens torch gives; and the
int8 export served too. The model has no chat template: chat completions are refused."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch

from .conftest import Serving, TinyModels, serving
from .test_batching import complete_all

PROMPTS = ["item2 has value", "item5 has", "item0 has value 0 and colour red item1", "item"]


@pytest.fixture(scope="module")
def server(onnx_dir: Path) -> Iterator[Serving]:
    with serving(onnx_dir, max_batch_size=3) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Serving) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def torch_greedy(model_dir: Path, prompt: str, new_tokens: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quark.export.decoding import TorchDecoder

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokens = TorchDecoder(model).generate(tokenizer.encode(prompt), new_tokens)
    return tokenizer.decode(tokens, skip_special_tokens=True)


def test_completions_whole_and_streamed_match_torch(
    server: Serving, client: openai.OpenAI, tiny_models: TinyModels
) -> None:
    assert httpx.get(f"{server.url}/health").json()["runtime"].startswith("onnxruntime")
    whole = client.completions.create(
        model="tiny",
        prompt=PROMPTS[0],
        max_tokens=16,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert whole.choices[0].text == torch_greedy(tiny_models.base, PROMPTS[0], 16)
    chunks = client.completions.create(
        model="tiny", prompt=PROMPTS[0], max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    chunks = list(chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


def test_batches_up_to_max_batch_size_with_unbatched_outputs(server: Serving) -> None:
    alone = [asyncio.run(complete_all(server.url, [p]))[0] for p in PROMPTS]
    together = asyncio.run(complete_all(server.url, PROMPTS + PROMPTS[:1]))
    assert together == alone + alone[:1]
    counts = httpx.get(f"{server.url}/health").json()
    assert counts["max_decode_batch"] == 3, counts  # 5 requests, 3 slots


def test_chat_without_a_chat_template_is_refused(server: Serving, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="no chat template") as refused:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "no_chat_template"
    answer = client.completions.create(model="tiny", prompt="item1", max_tokens=2)
    assert answer.choices[0].finish_reason in ("length", "stop")


def test_int8_export_serves(onnx_dir: Path, tmp_path: Path) -> None:
    from quark.export.onnx_int8 import quantize_onnx

    int8 = tmp_path / "onnx_int8"
    shutil.copytree(onnx_dir, int8)
    quantize_onnx(onnx_dir / "model.onnx", int8 / "model.onnx", "int8")
    with serving(int8) as running:
        body = {"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0, "ignore_eos": True}
        answer = httpx.post(f"{running.url}/v1/completions", json=body, timeout=60).json()
    assert answer["usage"]["completion_tokens"] == 8 and answer["choices"][0]["text"].strip()
