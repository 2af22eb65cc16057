"""Continuous batching, observed from outside: concurrent requests are decoded in the same
forward passes (the scheduler's batch-size counts in /health), each to exactly the greedy tokens
it gets alone and that plain incremental decoding gives; a client that leaves mid-stream frees
its slot and its generation stops."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from .conftest import Serving, TinyModels, serving

PROMPTS = [f"item{i} has value {i * 3 % 13} and colour" for i in range(7)] + ["item"]
NEW_TOKENS = 40


@pytest.fixture(scope="module")
def server(tiny_models: TinyModels) -> Iterator[Serving]:
    with serving(tiny_models.base, max_batch_size=8, max_tokens=500) as running:
        yield running


def health(server: Serving) -> dict:
    return httpx.get(f"{server.url}/health").json()


async def complete_all(url: str, prompts: list[str]) -> list[str]:
    """Each prompt's greedy completion, all requests in flight at once."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(prompt: str) -> str:
            body = {
                "prompt": prompt,
                "max_tokens": NEW_TOKENS,
                "temperature": 0,
                "ignore_eos": True,
            }
            answer = await client.post("/v1/completions", json=body)
            assert answer.status_code == 200, answer.text
            return answer.json()["choices"][0]["text"]

        return await asyncio.gather(*(one(p) for p in prompts))


def test_concurrent_requests_share_forward_passes_and_match_unbatched_greedy(
    server: Serving, tiny_models: TinyModels
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quark.export.decoding import TorchDecoder

    alone = [asyncio.run(complete_all(server.url, [p]))[0] for p in PROMPTS]
    assert health(server)["max_decode_batch"] == 1
    together = asyncio.run(complete_all(server.url, PROMPTS))
    counts = health(server)
    # most steps of the concurrent round ran several sequences in one forward pass
    assert counts["max_decode_batch"] >= 4, counts
    batched_steps = sum(v for k, v in counts["decode_batch_sizes"].items() if int(k) > 1)
    assert batched_steps >= NEW_TOKENS // 2, counts
    assert together == alone
    # and both are what plain incremental greedy decoding of the model gives
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype=torch.float32)
    reference = TorchDecoder(model)
    for prompt, text in zip(PROMPTS, together, strict=True):
        tokens = reference.generate(tokenizer.encode(prompt), NEW_TOKENS)
        assert text == tokenizer.decode(tokens, skip_special_tokens=True)


def test_a_client_that_disconnects_frees_its_slot_and_stops_generation(server: Serving) -> None:
    before = health(server)
    body = {"prompt": "item1 has", "max_tokens": 500, "temperature": 0, "ignore_eos": True,
            "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as answer:
        lines = answer.iter_lines()  # kept: a dropped iterator closes the response
        received = []
        while len(received) < 3:
            line = next(lines)
            if line.startswith("data: {"):
                received.append(json.loads(line[6:]))
        assert received[0]["choices"][0]["text"]
        assert health(server)["active"] == 1
    # the connection is closed: the slot empties within a step or so
    deadline = time.monotonic() + 10
    while (now := health(server))["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert now["active"] == 0 and now["cancelled"] == before["cancelled"] + 1
    generated = now["tokens_generated"] - before["tokens_generated"]
    assert 3 <= generated < 400, generated  # stopped early, well short of its 500
    time.sleep(0.3)
    assert health(server)["tokens_generated"] == now["tokens_generated"]  # and stays stopped


def test_a_client_that_gives_up_on_a_whole_completion_frees_its_slot(server: Serving) -> None:
    before = health(server)
    body = {"prompt": "item2 has", "max_tokens": 500, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):  # the client stops waiting and closes the connection
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=httpx.Timeout(5, read=0.1))
    deadline = time.monotonic() + 10
    while (now := health(server))["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert now["active"] == 0 and now["cancelled"] == before["cancelled"] + 1
    assert now["tokens_generated"] - before["tokens_generated"] < 400


@pytest.mark.parametrize(("backend", "budget"), [("torch", 2048), ("torch", 20), ("onnx", 2048)])
def test_prompts_arriving_together_prefill_in_padded_passes_to_the_tokens_they_get_alone(
    tiny_models: TinyModels, onnx_dir: Path, backend: str, budget: int
) -> None:
    """Prompts of 1 to 7 tokens waiting at once are prefilled together, left-padded, in as few
    passes as max_prefill_tokens allows; each still decodes to its tokens alone, one of them
    ending at once (max_tokens 1) and leaving the others' batch."""
    from transformers import AutoModelForCausalLM

    from quark.export.decoding import TorchDecoder
    from quark.serve.backends import load_model
    from quark.serve.engine import Engine, Event, Sequence
    from quark.serve.sampling import SamplingParams

    directory = onnx_dir if backend == "onnx" else tiny_models.base
    model = load_model(directory, "tiny", "cpu", threads=1)
    prompts = [model.tokenizer.encode(p) for p in PROMPTS]
    assert sorted({len(p) for p in prompts})[0] == 1 and max(len(p) for p in prompts) > 5
    budgets = [NEW_TOKENS] * len(prompts)
    budgets[2] = 1
    engine = Engine(model, max_batch_size=len(prompts), max_prefill_tokens=budget)
    ended: dict[int, Event] = {}
    sequences = [
        Sequence(
            prompt,
            SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True),
            model.tokenizer,
            lambda event: ended.__setitem__(event.index, event) if event.finish_reason else None,
            index,
        )
        for index, (prompt, tokens) in enumerate(zip(prompts, budgets, strict=True))
    ]
    engine.submit(sequences)  # all waiting before the scheduler's first turn
    engine.start()
    deadline = time.monotonic() + 60
    while len(ended) < len(prompts) and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.stop()

    longest = max(len(p) for p in prompts)
    stats = engine.stats
    assert stats.prefills == len(prompts)
    if budget >= longest * len(prompts):
        assert stats.prefill_passes == 1
    else:
        assert 1 < stats.prefill_passes < len(prompts)
    reference = TorchDecoder(
        AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype=torch.float32)
    )
    for seq, prompt, tokens in zip(sequences, prompts, budgets, strict=True):
        assert seq.generated == reference.generate(prompt, tokens), seq.index
