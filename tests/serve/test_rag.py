"""Retrieval in the server, with a real index (FAISS, bm25s, all-MiniLM-L6-v2) and the
official OpenAI client: a chat request that asks for retrieval gets the chunks in its prompt
and their sources in the response (whole and streamed), /v1/embeddings answers in OpenAI's
shape, /v1/retrieve ranks chunks, and what the index cannot answer is a 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from omegaconf import OmegaConf

from quark.core.schemas.retrieve import IndexSchema
from quark.retrieve.building import Corpus, chunk_corpus, write_index
from quark.serve.rag import INSTRUCTION, Retrieval, load_retrieval

from ..retrieve.test_graph import DOCUMENTS
from .conftest import Serving, TinyModels, serving

QUESTION = "How is the total of a basket added up?"


@pytest.fixture(scope="module")
def retrieval(tmp_path_factory: pytest.TempPathFactory) -> Retrieval:
    from quark.retrieve.embedders import load_embedder

    directory = tmp_path_factory.mktemp("rag") / "retrieve" / "2026-12-05_10-00-00"
    embedder = load_embedder(OmegaConf.create(
        {"name": "minilm", "kind": "sentence_transformers", "path": None, "batch_size": 16,
         "max_tokens": 128, "device": "cpu"}
    ))  # fmt: skip
    corpus = Corpus(list(DOCUMENTS), len(DOCUMENTS))
    spec = OmegaConf.structured(IndexSchema())
    write_index(
        directory, corpus, chunk_corpus(corpus, embedder, 96, 16), embedder, spec, None, False
    )
    return load_retrieval(directory, k=3, mode="hybrid", max_context_tokens=350)


@pytest.fixture(scope="module")
def served(tiny_models: TinyModels, retrieval: Retrieval) -> Iterator[Serving]:
    with serving(tiny_models.chat, retrieval=retrieval, max_prompt_tokens=500) as server:
        yield server


def client_of(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


def test_a_chat_request_with_retrieval_answers_from_the_chunks_and_names_them(
    served: Serving, retrieval: Retrieval, tiny_models: TinyModels
) -> None:
    client = client_of(served.url)
    messages = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4)
    answer = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=4, extra_body={"retrieval": {"k": 2}}
    )
    sources = answer.model_extra["sources"]
    assert [s["rank"] for s in sources] == [1, 2]
    assert (
        sources[0]["name"] == "shop.basket.Basket.total" and sources[0]["path"] == "shop/basket.py"
    )
    assert sources[0]["score"] >= sources[1]["score"] and len(sources[0]["sha256"]) == 64
    assert "sources" not in (plain.model_extra or {})
    # the prompt is the conversation behind a system message holding the numbered chunks
    from transformers import AutoTokenizer

    one = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=4, extra_body={"retrieval": {"k": 1}}
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.chat)
    [hit] = retrieval.index.search(QUESTION, "hybrid", 1, retrieval.embedder)
    context = f"{INSTRUCTION}\n\n[1] {hit.chunk.title}\n{hit.chunk.text.strip()}"
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": context}, *messages],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert one.usage.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))
    assert one.usage.prompt_tokens > plain.usage.prompt_tokens + 40


def test_streamed_answers_carry_the_sources_first_and_the_context_budget_holds(
    served: Serving, tiny_models: TinyModels
) -> None:
    with httpx.stream(
        "POST", f"{served.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 3, "stream": True,
              "retrieval": {"k": 10, "mode": "bm25"}, "stream_options": {"include_usage": True}},
    ) as response:  # fmt: skip
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    import json

    first, last = json.loads(lines[0][6:]), json.loads(lines[-1][6:])
    assert first["choices"][0]["delta"]["role"] == "assistant" and first["sources"]
    assert all("sources" not in json.loads(line[6:]) for line in lines[1:])
    # ten chunks asked for; the 350-token budget holds fewer
    assert len(first["sources"]) < 10 and last["usage"]["prompt_tokens"] <= 350 + 60


def test_embeddings_in_openai_s_shape_and_ranked_chunks(
    served: Serving, retrieval: Retrieval
) -> None:
    client = client_of(served.url)
    assert {m.id for m in client.models.list().data} == {"tiny", "minilm"}
    # the client asks for base64 unless told: both encodings give the same vectors
    result = client.embeddings.create(model="minilm", input=["a basket of items", "prices"])
    floats = client.embeddings.create(
        model="minilm", input=["a basket of items", "prices"], encoding_format="float"
    )
    assert np.allclose([d.embedding for d in result.data], [d.embedding for d in floats.data])
    assert [d.index for d in result.data] == [0, 1] and result.model == "minilm"
    assert result.usage.prompt_tokens > 0
    expected = retrieval.embedder.encode(["a basket of items", "prices"])
    assert np.allclose(np.array([d.embedding for d in result.data]), expected, atol=1e-5)
    ranked = httpx.post(
        f"{served.url}/v1/retrieve",
        json={"query": "What does `Basket.total` call?", "mode": "graph", "k": 4},
    ).json()
    assert ranked["mode"] == "graph" and ranked["index"] == retrieval.name
    names = [d["name"] for d in ranked["data"]]
    assert {"shop.prices.price_of", "shop.basket.Basket.fee"} <= set(names)
    scores = [d["score"] for d in ranked["data"]]
    assert scores == sorted(scores, reverse=True) and "def " in ranked["data"][0]["text"]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                  "retrieval": {"index": "retrieve/other"}},
         404, "the index 'retrieve/other' is not served; this server serves 'retrieve/2026-12-05_10-00-00'"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                  "retrieval": {"mode": "sparse"}}, 400, "retrieval.mode"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                  "retrieval": {"k": 0}}, 400, "retrieval.k"),
        ("/v1/embeddings", {"input": "x", "model": "bge"}, 404,
         "the model 'bge' does not exist; this server embeds with 'minilm'"),
        ("/v1/embeddings", {"input": []}, 400, "input"),
        ("/v1/retrieve", {"query": ""}, 400, "query"),
    ],
)  # fmt: skip
def test_what_the_index_cannot_answer_is_a_4xx(
    served: Serving, path: str, body: dict, status: int, says: str
) -> None:
    response = httpx.post(f"{served.url}{path}", json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]


def test_a_server_without_an_index_says_how_to_start_one(tiny_models: TinyModels) -> None:
    with serving(tiny_models.chat) as server:
        chat = httpx.post(f"{server.url}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "hi"}], "retrieval": True})  # fmt: skip
        embed = httpx.post(f"{server.url}/v1/embeddings", json={"input": "hi"})
    assert chat.status_code == 400 and embed.status_code == 404
    for response in (chat, embed):
        assert "step.retrieval.index=<a retrieve run>" in response.json()["error"]["message"]


def test_an_index_whose_embedder_changed_is_refused(retrieval: Retrieval, tmp_path: Path) -> None:
    import json
    import shutil

    from quark.core.errors import ConfigError

    directory = retrieval.index.directory
    copy = tmp_path / "retrieve" / "copy"
    shutil.copytree(directory, copy)
    meta = json.loads((copy / "index" / "index.json").read_text())
    meta["embedder"]["fingerprint"] = "0" * 64
    (copy / "index" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"step.retrieval.index: the index in .* was built with"):
        load_retrieval(copy, 3, "hybrid", 200)


def test_the_context_fits_its_budget_and_no_hits_leave_the_conversation_alone(
    retrieval: Retrieval, tiny_models: TinyModels
) -> None:
    from transformers import AutoTokenizer

    from quark.serve.rag import with_context

    tokenizer = AutoTokenizer.from_pretrained(tiny_models.chat)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    hits = retrieval.index.search(QUESTION, "hybrid", 5, retrieval.embedder)
    counts = []
    for budget in (120, 200, 400):
        shown, kept = with_context(messages, hits, tokenizer, budget)
        added = shown[0]["content"].removeprefix("Be brief.\n\n")
        assert shown[0]["content"].startswith("Be brief.\n\n") and shown[1:] == messages[1:]
        assert len(tokenizer.encode(added, add_special_tokens=False)) <= budget
        assert kept and kept == hits[: len(kept)]  # best first, none skipped
        counts.append(len(kept))
    # a larger budget holds more chunks; the smallest cuts its last chunk short
    assert counts == sorted(counts) and counts[0] < counts[-1], counts
    shown, kept = with_context(messages, hits, tokenizer, 120)
    assert not shown[0]["content"].endswith(kept[-1].chunk.text.strip())
    assert with_context(messages, [], tokenizer, 400) == (messages, [])
    # a budget the instruction alone fills: no context rather than an empty one
    assert with_context(messages, hits, tokenizer, 20) == (messages, [])
