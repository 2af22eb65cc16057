"""The index on disk with real FAISS, bm25s and all-MiniLM-L6-v2: every dense kind and search
mode, incremental adds that retire changed chunks, and embedder mismatches refused."""

from __future__ import annotations

import dataclasses
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from quark.core.errors import ConfigError
from quark.core.schemas.retrieve import EmbedderSchema, IndexSchema
from quark.retrieve.building import Corpus, chunk_corpus, write_index
from quark.retrieve.embedders import Embedder, load_embedder
from quark.retrieve.store import RetrievalIndex, fused_scores, terms

from ..serve import conftest as serve_models
from ..serve.conftest import TinyModels
from .test_graph import DOCUMENTS

tiny_models = serve_models.tiny_models  # the session's tiny models, trained once

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def index_spec(kind: str, **changes: object) -> object:
    spec = OmegaConf.structured(IndexSchema(kind=kind))
    return OmegaConf.merge(spec, changes)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(OmegaConf.structured(EmbedderSchema(max_tokens=128)))


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    documents = list(DOCUMENTS)
    for name in ("json/decoder.py", "json/encoder.py", "textwrap.py"):
        documents.append((name, (STDLIB / name).read_text()))
    return Corpus(documents, len(documents))


def build(tmp: Path, corpus: Corpus, embedder: Embedder | None, spec: object,
          earlier: RetrievalIndex | None = None) -> RetrievalIndex:  # fmt: skip
    chunks = chunk_corpus(corpus, embedder, 96, 16)
    write_index(tmp, corpus, chunks, embedder, spec, earlier, progress=False)
    return RetrievalIndex.load(tmp)


def test_the_minilm_embedder_gives_unit_vectors_with_a_stable_fingerprint(
    embedder: Embedder,
) -> None:
    vectors = embedder.encode(["a cat sat on the mat", "a kitten rested on a rug", "tax law"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    # batched and one at a time agree (the length-sorted batches are put back in order)
    assert np.allclose(embedder.encode(["tax law"])[0], vectors[2], atol=1e-5)
    assert len(embedder.fingerprint) == 64


def test_flat_and_hnsw_agree_and_every_mode_finds_the_unit(
    tmp_path: Path, corpus: Corpus, embedder: Embedder
) -> None:
    flat = build(tmp_path / "flat", corpus, embedder, index_spec("flat"))
    hnsw = build(tmp_path / "hnsw", corpus, embedder, index_spec("hnsw"))
    assert flat.modes == ["dense", "bm25", "hybrid", "graph"]
    query = "Which method adds up what the items in a customer's basket cost?"
    top_flat = [h.chunk_id for h in flat.search(query, "dense", 5, embedder)]
    assert top_flat == [h.chunk_id for h in hnsw.search(query, "dense", 5, embedder)]
    for mode in ("dense", "hybrid", "graph"):
        assert flat.search(query, mode, 3, embedder)[0].chunk.name == "shop.basket.Basket.total", (
            mode
        )
    assert (
        flat.search("textwrap dedent common leading whitespace", "bm25", 1)[0].chunk.name
        == "textwrap.dedent"
    )
    # the graph mode answers a relation the text does not state
    related = {
        h.chunk.name for h in flat.search("What does `Basket.total` call?", "graph", 3, embedder)
    }
    assert {"shop.prices.price_of", "shop.basket.Basket.fee"} <= related
    hit = flat.search(query, "dense", 1, embedder)[0]
    assert 0 < hit.score <= 1 and hit.to_json()["path"] == "shop/basket.py"


def test_ivfpq_trains_on_enough_chunks_and_refuses_too_few(
    tmp_path: Path, corpus: Corpus, embedder: Embedder
) -> None:
    small = build(
        tmp_path / "ivfpq", corpus, embedder, index_spec("ivfpq", ivfpq={"nbits": 4, "m": 48})
    )
    assert small.dense.ntotal == len(small.chunks) and small.meta["dense"] == "ivfpq"
    hits = small.search(
        "Which method adds up what the items in a basket cost?", "dense", 5, embedder
    )
    assert "shop.basket.Basket.total" in {h.chunk.name for h in hits}
    with pytest.raises(ConfigError, match=r"ivfpq needs at least 256 chunks to train .* has \d+"):
        build(tmp_path / "too_few", corpus, embedder, index_spec("ivfpq"))


def test_adding_documents_keeps_the_index_and_retires_changed_chunks(
    tmp_path: Path, corpus: Corpus, embedder: Embedder
) -> None:
    first = build(tmp_path / "first", corpus, embedder, index_spec("flat"))
    changed = dict(DOCUMENTS)["shop/prices.py"].replace("return 3", "return 4")
    update = Corpus([("shop/prices.py", changed), ("notes.txt", "Refunds take five days.")], 2)
    second = build(tmp_path / "second", update, embedder, index_spec("flat"), earlier=first)
    assert len(second.chunks) == len(first.chunks) + 2  # price_of's new text and the note
    retired = [second.chunks[i] for i in second.retired]
    assert [c.name for c in retired] == ["shop.prices.price_of"] and "return 3" in retired[0].text
    assert second.dense.ntotal == len(second.chunks)
    names = [h.chunk.text for h in second.search("how long do refunds take", "hybrid", 3, embedder)]
    assert names[0] == "Refunds take five days."
    found = second.search("Look the item's price up", "hybrid", 10, embedder)
    assert all(h.chunk_id not in second.retired for h in found)
    assert any("return 4" in h.chunk.text for h in found)
    # the graph keeps the earlier documents and points at the live chunk
    assert second.graph.nodes["shop.prices.price_of"]["chunks"] == [len(first.chunks)]
    assert "shop.basket.Basket.total" in second.graph


def test_a_query_embedder_other_than_the_index_s_is_refused(
    tmp_path: Path, corpus: Corpus, embedder: Embedder
) -> None:
    index = build(tmp_path / "flat", corpus, embedder, index_spec("flat"))
    other = dataclasses.replace(embedder, dimension=128, fingerprint="f" * 64, path=Path("/m"))
    with pytest.raises(
        ConfigError,
        match=r"was built with the sentence_transformers embedder .*\(384 dimensions.* query embedder is sentence_transformers at /m \(128 dimensions",
    ):
        index.check_embedder(other)
    sparse = build(tmp_path / "bm25", corpus, None, index_spec("bm25"))
    assert sparse.modes == ["bm25", "graph"] and sparse.dense is None
    with pytest.raises(ConfigError, match="BM25-only index"):
        sparse.check_embedder(embedder)


def test_bm25_terms_split_identifiers_and_fusion_sums_reciprocal_ranks() -> None:
    assert terms("JSONDecoder.raw_decode(s)") == [
        "jsondecoder", "json", "decoder", "raw_decode", "raw", "decode",
    ]  # fmt: skip
    scores = dict(fused_scores([[1, 2], [2, 3]], rrf_k=10, weights=[1.0, 0.5]))
    assert scores == pytest.approx({1: 1 / 11, 2: 1 / 12 + 0.5 / 11, 3: 0.5 / 12})


def test_a_quark_model_embeds_by_mean_pooling_its_last_hidden_states(
    tiny_models: TinyModels,
) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    spec = OmegaConf.create(
        {"name": "quark_model", "kind": "quark_model", "path": str(tiny_models.base),
         "batch_size": 2, "max_tokens": None, "device": "cpu"}
    )  # fmt: skip
    embedder = load_embedder(spec)
    texts = ["item2 has value 3", "colour of item4 is red and blue", "x"]
    vectors = embedder.encode(texts)
    assert vectors.shape == (3, 64) and embedder.max_tokens == 512
    model = AutoModel.from_pretrained(tiny_models.base).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    for text, vector in zip(texts, vectors, strict=True):
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            mean = model(input_ids=ids).last_hidden_state[0].mean(0)
        assert np.allclose(vector, (mean / mean.norm()).numpy(), atol=1e-5)  # padding ignored


def test_moved_or_renamed_units_are_embedded_again_with_their_new_spans(
    tmp_path: Path, corpus: Corpus, embedder: Embedder
) -> None:
    first = build(tmp_path / "first", corpus, embedder, index_spec("flat"))
    moved = "\n\n" + dict(DOCUMENTS)["shop/prices.py"].replace("class Priced", "class Valued")
    second = build(
        tmp_path / "second", Corpus([("shop/prices.py", moved)], 1), embedder, index_spec("flat"),
        earlier=first,
    )  # fmt: skip
    live = [c for i, c in enumerate(second.chunks) if i not in second.retired]
    by_name = {c.name: c for c in live if c.path == "shop/prices.py"}
    assert "shop.prices.Priced" not in by_name and "shop.prices.Valued" in by_name
    # price_of's text is the same, but it moved two lines down: the old chunk is retired
    assert by_name["shop.prices.price_of"].start_line == 10
    assert len([c for c in live if c.name == "shop.prices.price_of"]) == 1
    assert second.graph.nodes["shop.prices.price_of"]["chunks"] == [
        second.chunks.index(by_name["shop.prices.price_of"])
    ]


def test_the_fingerprint_covers_every_weights_shard_and_config(tmp_path: Path) -> None:
    from quark.retrieve.embedders import fingerprint

    model = tmp_path / "model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "model-00001-of-00002.safetensors").write_bytes(b"one")
    (model / "model-00002-of-00002.safetensors").write_bytes(b"two")
    (model / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    before = fingerprint("quark_model", 8, model)
    (model / "model-00002-of-00002.safetensors").write_bytes(b"TWO")
    changed_weights = fingerprint("quark_model", 8, model)
    (model / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    changed_pooling = fingerprint("quark_model", 8, model)
    assert len({before, changed_weights, changed_pooling}) == 3
    for shard in model.glob("*.safetensors"):
        shard.unlink()
    with pytest.raises(ConfigError, match=r"holds no weights"):
        fingerprint("quark_model", 8, model)
