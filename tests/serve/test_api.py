"""The OpenAI API over HTTP on a loopback port, as the official `openai` client speaks it:
completions and chat completions, streamed and whole; sampling parameters; bad requests
refused with OpenAI's error object while the server keeps serving; the API key enforced."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from .conftest import Serving, TinyModels, serving

KEY = "sk-quark-test"
PROMPT = "item3 has value"


@pytest.fixture(scope="module")
def server(tiny_models: TinyModels) -> Iterator[Serving]:
    with serving(tiny_models.chat, api_key=KEY) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Serving) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def post(server: Serving, path: str, body: object = None, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"} | dict(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_models_and_health(server: Serving, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert health["runtime"].startswith("torch") and health["active"] == 0


def test_completion_whole_and_streamed_agree(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0)
    [choice] = whole.choices
    assert choice.finish_reason == "length" and choice.text.strip()
    assert whole.usage is not None and whole.usage.completion_tokens == 12
    chunks = list(
        client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=12, temperature=0, stream=True
        )
    )
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # arrives in pieces
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_whole_and_streamed_stop_at_end_of_message(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "colour of item4?"}]
    whole = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=30, temperature=0
    )
    [choice] = whole.choices
    assert choice.message.role == "assistant"
    # it learned the turns' shape: a short answer, then <|end|> (not the 30-token budget)
    assert choice.message.content and choice.finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens < 30
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=30, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_logprobs_are_the_models_own_whole_and_streamed(
    server: Serving, client: openai.OpenAI, tiny_models: TinyModels
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    messages = [{"role": "user", "content": "colour of item5?"}]
    whole = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0, logprobs=True,
        top_logprobs=2,
    )  # fmt: skip
    [choice] = whole.choices
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    # greedy: each token is its position's likeliest, and the first alternative is itself
    assert all(e.top_logprobs[0].token == e.token for e in entries)
    assert all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in entries)
    # the first token's log-probability as the model computes it
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.chat)
    model = AutoModelForCausalLM.from_pretrained(tiny_models.chat, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer.encode(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        expected = torch.log_softmax(model(ids).logits[0, -1].double(), -1).max().item()
    assert entries[0].logprob == pytest.approx(expected, abs=1e-4)
    streamed = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=8, temperature=0, logprobs=True, stream=True
    )
    pieces = [
        entry.logprob
        for chunk in streamed
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content
        for entry in chunk.choices[0].logprobs.content
    ]
    assert pieces == pytest.approx([e.logprob for e in entries], abs=1e-6)
    refused = post(server, "/v1/chat/completions", {"messages": messages, "top_logprobs": 21})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "top_logprobs"


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        out = client.completions.create(
            model="tiny",
            prompt=PROMPT,
            max_tokens=24,
            temperature=1.5,
            top_p=0.95,
            seed=seed,
            extra_body={"top_k": 50},  # not in OpenAI's API: the client passes it through
        )
        return out.choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_stop_strings_cut_the_output(client: openai.OpenAI) -> None:
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0)
    text = full.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), text
    for stream in (False, True):
        got = client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=20, temperature=0, stop=[stop], stream=stream
        )
        if stream:
            pieces = list(got)
            cut = "".join(c.choices[0].text for c in pieces if c.choices)
            finish = pieces[-1].choices[0].finish_reason
        else:
            cut, finish = got.choices[0].text, got.choices[0].finish_reason
        assert cut == text[: text.index(stop)] and finish == "stop"


def test_api_key_is_enforced(server: Serving) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = httpx.post(
            f"{server.url}/v1/completions", json={"prompt": PROMPT}, headers=headers
        )
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        ({"prompt": PROMPT, "max_tokens": 401}, 400, "max_tokens", "more than the 400"),
        ({"prompt": "item3 " * 300}, 400, "prompt", "more than the 200"),
        ({"prompt": PROMPT, "max_tokens": 0}, 400, "max_tokens", "greater than or equal to 1"),
        ({"prompt": PROMPT, "temperature": 3}, 400, "temperature", "less than or equal to 2"),
        ({"prompt": PROMPT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "stop"),
        ({"max_tokens": 4}, 400, "prompt", "Field required"),
        ({"prompt": {"a": 1}}, 400, "prompt", "accepted forms"),
        ({"prompt": [5, 9999]}, 400, "prompt", "token ids"),
        ({"prompt": ""}, 400, "prompt", "empty"),
        ({"prompt": PROMPT, "logprobs": 3}, 400, "logprobs", "not supported"),
        ({"prompt": PROMPT, "model": "gpt-4"}, 404, "model", "does not exist"),
        ([1, 2], 400, None, "JSON object"),
    ],
)
def test_bad_requests_get_openai_errors(
    server: Serving, body: object, status: int, param: str | None, says: str
) -> None:
    answer = post(server, "/v1/completions", body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and says in error["message"]


def test_malformed_oversized_and_unknown_requests_then_still_serving(
    server: Serving, client: openai.OpenAI
) -> None:
    broken = post(
        server,
        "/v1/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    huge = post(server, "/v1/completions", {"prompt": "x" * 30_000})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    chat = post(server, "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]})
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages.0.role"
    missing = post(server, "/v1/nothing", {})
    assert missing.status_code == 404 and "error" in missing.json()
    with pytest.raises(openai.BadRequestError, match="more than the 400"):
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=500)
    ok = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=3, temperature=0)
    assert ok.choices[0].finish_reason == "length"
    assert httpx.get(f"{server.url}/health").json()["active"] == 0
