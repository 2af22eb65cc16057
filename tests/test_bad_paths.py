"""A damaged path ends cleanly: for every step's path-like keys, an empty, truncated, wrong-kind
or unreadable file or directory ends with one line on stderr naming the key, what is wrong and
what is allowed, exit status 2, no traceback, and no run marked completed.

The rows run in this process through launch.py's own entry (Hydra's main wrapped by
`reported_by_exit_cleanly`, then `exit_cleanly`): what `python launch.py` runs, at a tenth of
the cost. CLI_ROWS run a few of them as `python launch.py` too, and compare the lines.

Inputs are made by hand in tmp_path: run directories as their files and the manifest that
records them (quark.core.run), models as config, weights header and tokenizer; nothing is
trained. We run as root, where chmod does not stop reads: "unreadable" is bytes no decoder
reads, or a symbolic link to nothing.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import shutil
import sqlite3
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from quark.core import errors
from quark.core.files import sha256_file, sha256_json

from .conftest import REPO, launcher

# ---------------------------------------------------------------------------------------------
# Damage: each takes the path it damages and returns it.


def cut(path: Path) -> Path:
    """`path` cut to 3/5 of its bytes (inside a line or a JSON value), as a copy or a download
    that stopped leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 5])
    return path


def cut_tail(path: Path) -> Path:
    """`path` without its last bytes: a weights file whose header is whole and tensors not."""
    path.write_bytes(path.read_bytes()[:-4])
    return path


def garble(path: Path) -> Path:
    """`path` holding bytes no text decoder reads."""
    path.write_bytes(b"\xff\xfe\x00garbage")
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def dangle(path: Path) -> Path:
    """`path` a symbolic link to nothing."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(path.parent / f"{path.name}.gone")
    return path


def as_dir(path: Path) -> Path:
    """A directory where the file `path` was."""
    path.unlink(missing_ok=True)
    path.mkdir()
    return path


def as_file(path: Path) -> Path:
    """A file where the directory `path` was (or would be)."""
    if path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a directory\n")
    return path


def broken(directory: Path, name: str, damage: Callable[[Path], Path]) -> Path:
    """`directory` with its file `name` damaged."""
    damage(directory / name)
    return directory


def empty_dir(tmp: Path) -> Path:
    path = tmp / "empty"
    path.mkdir()
    return path


# ---------------------------------------------------------------------------------------------
# Inputs that look valid until damaged.

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 64,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 32,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"


@functools.cache
def tokenizer_json() -> str:
    """A word-level tokenizer of 64 tokens, the chat markers among them."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tokenizer = Tokenizer(WordLevel({f"t{i}": i for i in range(58)}, unk_token="t0"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.add_special_tokens(["<|bos|>", "<|eos|>", "<|pad|>", "<|end|>", "<|user|>", "<|assistant|>"])  # fmt: skip
    return tokenizer.to_str()


def safetensors_bytes() -> bytes:
    """A safetensors file of one small tensor (8 float32 zeros)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(32)


def write_files(directory: Path, files: dict[str, bytes | str]) -> Path:
    for name, content in files.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return directory


def model_files(chat: bool = False, classifier: bool = False) -> dict[str, bytes | str]:
    """A Hugging Face model directory's files: a causal LM, or a text classifier."""
    config = dict(LLAMA_CONFIG)
    if classifier:
        config |= {"architectures": ["LlamaForSequenceClassification"], "pad_token_id": 0,
                   "id2label": {"0": "benign", "1": "unsafe"}}  # fmt: skip
    tokenizer_config = {"eos_token": "<|eos|>", "pad_token": "<|pad|>"}
    tokenizer_config |= {"chat_template": CHAT_TEMPLATE} if chat else {}
    return {
        "config.json": json.dumps(config),
        "model.safetensors": safetensors_bytes(),
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": json.dumps(tokenizer_config),
    }


def model_dir(tmp: Path, name: str = "model", **kinds: bool) -> Path:
    return write_files(tmp / name, model_files(**kinds))


def onnx_dir(tmp: Path, external: bool = False) -> Path:
    """A plain ONNX export directory (model.onnx beside config.json and the tokenizer): two
    MatMuls over initializers, their data in model.onnx.data with `external`."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.ones((16, 16), np.float32), f"w{i}") for i in range(2)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w0"], ["h"]), helper.make_node("MatMul", ["h", "w1"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        weights,
    )  # fmt: skip
    directory = write_files(
        tmp / "onnx", {k: v for k, v in model_files().items() if k != "model.safetensors"}
    )
    onnx.save_model(helper.make_model(graph), str(directory / "model.onnx"), save_as_external_data=external,
                    location="model.onnx.data", size_threshold=0)  # fmt: skip
    return directory


def run_dir(
    tmp: Path, step: str, files: dict[str, bytes | str], status: str = "completed", config: str = ""
) -> Path:
    """A run of `step` holding `files`, with the manifest a step writes (quark.core.run): each
    file recorded as an output with its sha256, and the config it ran with."""
    directory = write_files(tmp / f"{step}-run", files)
    outputs = [{"path": n, "sha256": sha256_file(directory / n), "bytes": 0} for n in sorted(files)]
    manifest = {
        "manifest_version": 1, "step": step, "experiment": "demo", "status": status,
        "error": None, "started_at": "2026-01-01T00:00:00.000+00:00", "run_dir": str(directory),
        "config_hash": "0" * 64, "inputs": [], "outputs": outputs, "metrics": {},
        "outputs_digest": sha256_json([(o["path"], o["sha256"]) for o in outputs]),
    }  # fmt: skip
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if config:
        (directory / "config.yaml").write_text(config)
    return directory


def recorded(run: Path) -> Path:
    """`run` with its manifest's hashes made to match its files: a run that completed with a
    bad file in it, which the manifest cannot tell."""
    manifest = json.loads((run / "manifest.json").read_text())
    for output in manifest["outputs"]:
        output["sha256"] = sha256_file(run / output["path"])
    outputs = [(o["path"], o["sha256"]) for o in manifest["outputs"]]
    manifest["outputs_digest"] = sha256_json(outputs)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def model_run(tmp: Path, step: str = "finetune", status: str = "completed") -> Path:
    files = {f"hf/{n}": c for n, c in model_files(chat=step != "pretrain").items()}
    return run_dir(tmp, step, files, status)


def shards_files() -> dict[str, bytes | str]:
    """Token shards of one document of 8 tokens (uint16) per split, their index, the tokenizer."""
    files: dict[str, bytes | str] = {"tokenizer/tokenizer.json": tokenizer_json()}
    index = {"format_version": 1, "dtype": "uint16", "vocab_size": 64, "eos_id": 59, "splits": {}}
    for split in ("train", "val"):
        shard = {"name": f"{split}_00000", "tokens": 8, "documents": 1}
        index["splits"][split] = {"tokens": 8, "documents": 1, "shards": [shard]}
        files |= {f"shards/{split}_00000.bin": bytes(16), f"shards/{split}_00000.idx": bytes(8)}
    return files | {"shards/index.json": json.dumps(index)}


def data_run(tmp: Path, status: str = "completed") -> Path:
    """A data run of a corpus: token shards and the tokenizer they were made with."""
    config = "data:\n  kind: corpus\n  sources:\n  - type: text_files\n    paths: [nothing/*.txt]\n"
    return run_dir(tmp, "data", shards_files(), status, config=config)


def shards_dir(tmp: Path) -> Path:
    """A data run's files without its manifest (a copy of one)."""
    return write_files(tmp / "data", shards_files())


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


PAIRS = jsonl([{"prompt": f"What is {i} + 1?", "response": str(i + 1)} for i in range(6)])
PREFERENCES = jsonl([{"prompt": f"{i} + 1?", "chosen": str(i + 1), "rejected": "0"} for i in range(6)])  # fmt: skip
LABELLED = jsonl([{"text": f"request {i}", "label": ("benign", "unsafe")[i % 2]} for i in range(6)])


def splits(records: str = PAIRS) -> dict[str, bytes | str]:
    return {"train.jsonl": records, "val.jsonl": records, "test.jsonl": records}


def pairs_run(tmp: Path) -> Path:
    """A data run of a generated task set."""
    return run_dir(tmp, "data", splits(), config="data:\n  kind: arithmetic_sft\n")


def pairs_dir(tmp: Path, records: str = PAIRS) -> Path:
    """A user's directory of train, val and test splits."""
    return write_files(tmp / "pairs", splits(records))


def retrieve_run(tmp: Path) -> Path:
    index = {"dense": None, "params": {}, "embedder": None, "chunks": 1, "retired": []}
    return run_dir(
        tmp, "retrieve",
        {"index/index.json": json.dumps(index), "chunks.jsonl": "{}\n",
         "graph/graph.json": json.dumps({"nodes": [], "edges": []})},
    )  # fmt: skip


def tokenizer_dir(tmp: Path) -> Path:
    files = {"tokenizer.json": tokenizer_json(), "tokenizer_config.json": "{}"}
    return write_files(tmp / "tokenizer", files)


def sentence_transformers_dir(tmp: Path) -> Path:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]  # fmt: skip
    return write_files(tmp / "minilm", {**model_files(), "modules.json": json.dumps(modules)})


def sqlite_file(path: Path) -> Path:
    """A SQLite database of a few pages, as the gateway keeps its memory in."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        db.executemany("INSERT INTO notes (text) VALUES (?)", [("x" * 500,)] * 20)
    return path


def checkpoint(tmp: Path) -> Path:
    """A torch.save archive (a zip), as Lightning writes checkpoints."""
    import zipfile

    path = tmp / "last.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00." * 100)
    return path


def text_corpus(tmp: Path) -> str:
    corpus = write_files(tmp / "corpus", {"a.txt": "plain text of a document, long enough " * 4})
    return f"data.sources.0.paths=[{corpus}/*.txt]"


def parquet_file(tmp: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a document " * 20] * 50}), tmp / "corpus.parquet")
    return tmp / "corpus.parquet"


def saved_dataset(tmp: Path) -> Path:
    import datasets

    datasets.disable_progress_bars()
    datasets.Dataset.from_dict({"text": ["a document " * 20] * 5}).save_to_disk(tmp / "dataset")
    return tmp / "dataset"


# ---------------------------------------------------------------------------------------------
# Command lines: each step from valid inputs, but for the overrides a row gives.


def named(overrides: tuple[str, ...], key: str) -> bool:
    return any(o.startswith(f"{key}=") for o in overrides)


def plan(path: Path) -> list[str]:
    return ["step=plan", "model=hf", f"model.name_or_path={path}"]


def data(tmp: Path, *overrides: str) -> list[str]:
    """step=data of a little text corpus."""
    return ["step=data", "data=text_files", text_corpus(tmp), *overrides]


# training steps stop after one step, should a row get that far
ONE_STEP = ["step.max_steps=1", "step.val_every_n_steps=1", "step.eval_samples=1"]


def finetune(tmp: Path, *overrides: str) -> list[str]:
    init = [] if named(overrides, "step.init_from") else [f"step.init_from={model_dir(tmp)}"]
    data = [] if named(overrides, "step.data_dir") else [f"step.data_dir={pairs_dir(tmp)}"]
    return ["step=finetune", *ONE_STEP, *init, *data, *overrides]


def align(tmp: Path, *overrides: str, records: str = PREFERENCES) -> list[str]:
    chat = model_dir(tmp, "chat", chat=True)
    init = [] if named(overrides, "step.init_from") else [f"step.init_from={chat}"]
    data = [] if named(overrides, "step.data_dir") else [f"step.data_dir={pairs_dir(tmp, records)}"]
    return ["step=align", *ONE_STEP, *init, *data, *overrides]


def retrieve(tmp: Path, *overrides: str) -> list[str]:
    """step=retrieve of a little text corpus (BM25 unless a row names an embedder)."""
    index = [] if any(o.startswith("embedder=") for o in overrides) else ["index=bm25"]
    return ["step=retrieve", *index, "data=text_files", text_corpus(tmp), "step.include=[]",
            *overrides]  # fmt: skip


def gateway(*backends: str, extra: tuple[str, ...] = ()) -> list[str]:
    """step=orchestrate with the calculator and `backends`, serving a second at most."""
    listed = ", ".join(("{name: calculator, tool: calculator}", *backends))
    return ["step=orchestrate", "step.port=0", "step.max_seconds=1", "router=rules",
            "router.rules=[]", f"step.backends=[{listed}]", *extra]  # fmt: skip


def backend(model: Path, **more: Path) -> str:
    return "{" + ", ".join(f"{k}: '{v}'" for k, v in {"name": "m", "model_dir": model, **more}.items()) + "}"  # fmt: skip


def optimize(tmp: Path, *overrides: str) -> list[str]:
    model = [] if named(overrides, "step.model_dir") else [f"step.model_dir={model_dir(tmp)}"]
    data = [] if named(overrides, "step.data_dir") else [f"step.data_dir={data_run(tmp)}"]
    return ["step=optimize", "export=hf", *model, *data, *overrides]


def evaluate(tmp: Path, *overrides: str) -> list[str]:
    """step=evaluate of perplexity on one window, unless a row names other tasks."""
    chat = model_dir(tmp, "chat", chat=True)
    model = [] if named(overrides, "step.model_dir") else [f"step.model_dir={chat}"]
    data = [] if named(overrides, "step.data_dir") else [f"step.data_dir={data_run(tmp)}"]
    return ["step=evaluate", "step.tasks=[perplexity]", "step.seq_len=8", "step.val_samples=1",
            *model, *data, *overrides]  # fmt: skip


def improve(tmp: Path, *overrides: str) -> list[str]:
    model = [] if named(overrides, "step.model_dir") else [f"step.model_dir={model_run(tmp)}"]
    pairs = [] if named(overrides, "step.pairs_dir") else [f"step.pairs_dir={pairs_run(tmp)}"]
    return ["step=improve", "step.failures.high_loss_windows=0", *model, *pairs, *overrides]


def serve(tmp: Path, *overrides: str) -> list[str]:
    """step=serve, serving a second at most."""
    model = [] if named(overrides, "step.model_dir") else [f"step.model_dir={model_dir(tmp)}"]
    return ["step=serve", "step.port=0", "step.max_seconds=1", *model, *overrides]


# ---------------------------------------------------------------------------------------------
# The table: step, key, damage, and the command line it builds in a fresh directory.


@dataclass(frozen=True)
class Row:
    step: str
    key: str
    damage: str
    build: Callable[[Path], list[str]]

    @property
    def id(self) -> str:
        return f"{self.step}-{self.key}-{self.damage}"


ROWS = [
    # plan: model=hf's config.json
    Row("plan", "model.name_or_path", "truncated-config", lambda t: plan(broken(model_dir(t), "config.json", cut))),
    Row("plan", "model.name_or_path", "undecodable-config", lambda t: plan(broken(model_dir(t), "config.json", garble))),
    Row("plan", "model.name_or_path", "empty-config-file", lambda t: plan(empty(model_dir(t) / "config.json"))),
    Row("plan", "model.name_or_path", "config-is-a-directory", lambda t: plan(broken(model_dir(t), "config.json", as_dir))),
    Row("plan", "model.name_or_path", "empty-dir", lambda t: plan(empty_dir(t))),
    Row("plan", "model.name_or_path", "dangling-symlink", lambda t: plan(dangle(model_dir(t)))),
    # data: each kind of source, the tokenizer it reuses, the guard's classifier, rag_qa's index
    Row("data", "data.sources.0.paths", "empty-dir", lambda t: ["step=data", "data=text_files", f"data.sources.0.paths=[{empty_dir(t)}/*.txt]"]),
    Row("data", "data.sources.0.paths", "directory-not-file", lambda t: ["step=data", "data=text_files", f"data.sources.0.paths=[{empty_dir(t)}]"]),
    Row("data", "data.sources.0.paths", "dangling-symlink", lambda t: ["step=data", "data=text_files", f"data.sources.0.paths=[{dangle(t / 'a.txt')}]"]),
    Row("data", "data.sources.0.paths", "truncated-jsonl", lambda t: ["step=data", "data=jsonl", f"data.sources.0.paths=[{cut(write_files(t, {'c.jsonl': jsonl([{'text': c * 80} for c in 'xyz'])}) / 'c.jsonl')}]"]),
    Row("data", "data.sources.0.paths", "undecodable-jsonl", lambda t: ["step=data", "data=jsonl", f"data.sources.0.paths=[{garble(t / 'c.jsonl')}]"]),
    Row("data", "data.sources.0.paths", "truncated-parquet", lambda t: ["step=data", "data=parquet", f"data.sources.0.paths=[{cut(parquet_file(t))}]"]),
    Row("data", "data.sources.0.paths", "empty-parquet", lambda t: ["step=data", "data=parquet", f"data.sources.0.paths=[{empty(t / 'c.parquet')}]"]),
    Row("data", "data.sources.0.name_or_path", "empty-dir", lambda t: ["step=data", "data=hf_dataset", f"data.sources.0.name_or_path={empty_dir(t)}"]),
    Row("data", "data.sources.0.name_or_path", "truncated-state", lambda t: ["step=data", "data=hf_dataset", f"data.sources.0.name_or_path={broken(saved_dataset(t), 'state.json', cut)}"]),
    Row("data", "data.sources.0.name_or_path", "file-not-dir", lambda t: ["step=data", "data=hf_dataset", f"data.sources.0.name_or_path={as_file(t / 'dataset')}"]),
    Row("data", "data.tokenizer.path", "truncated-tokenizer", lambda t: data(t, f"data.tokenizer.path={broken(tokenizer_dir(t), 'tokenizer.json', cut)}")),
    Row("data", "data.tokenizer.path", "undecodable-tokenizer", lambda t: data(t, f"data.tokenizer.path={broken(tokenizer_dir(t), 'tokenizer.json', garble)}")),
    Row("data", "data.tokenizer.path", "truncated-tokenizer-config", lambda t: data(t, f"data.tokenizer.path={broken(tokenizer_dir(t), 'tokenizer_config.json', cut)}")),
    Row("data", "data.tokenizer.path", "empty-dir", lambda t: data(t, f"data.tokenizer.path={empty_dir(t)}")),
    Row("data", "data.tokenizer.path", "dangling-symlink", lambda t: data(t, f"data.tokenizer.path={dangle(tokenizer_dir(t))}")),
    Row("data", "safety.classifier.path", "truncated-config", lambda t: data(t, "safety=classifier", f"safety.classifier.path={broken(model_dir(t, classifier=True), 'config.json', cut)}")),
    Row("data", "safety.classifier.path", "a-data-run", lambda t: data(t, "safety=classifier", f"safety.classifier.path={data_run(t)}")),
    Row("data", "data.rag.index", "truncated-manifest", lambda t: ["step=data", "data=rag_qa", f"data.rag.index={broken(retrieve_run(t), 'manifest.json', cut)}"]),
    Row("data", "data.rag.index", "empty-dir", lambda t: ["step=data", "data=rag_qa", f"data.rag.index={empty_dir(t)}"]),
    Row("data", "data.rag.index", "wrong-step-run", lambda t: ["step=data", "data=rag_qa", f"data.rag.index={model_run(t, 'pretrain')}"]),
    # pretrain: the data run of token shards, the checkpoint it resumes, model=hf
    Row("pretrain", "step.data_dir", "empty-dir", lambda t: ["step=pretrain", f"step.data_dir={empty_dir(t)}"]),
    Row("pretrain", "step.data_dir", "file-not-dir", lambda t: ["step=pretrain", f"step.data_dir={as_file(t / 'data')}"]),
    Row("pretrain", "step.data_dir", "dangling-symlink", lambda t: ["step=pretrain", f"step.data_dir={dangle(data_run(t))}"]),
    Row("pretrain", "step.data_dir", "task-set-run", lambda t: ["step=pretrain", f"step.data_dir={pairs_run(t)}"]),
    Row("pretrain", "step.data_dir", "truncated-manifest", lambda t: ["step=pretrain", f"step.data_dir={broken(data_run(t), 'manifest.json', cut)}"]),
    Row("pretrain", "step.data_dir", "failed-run", lambda t: ["step=pretrain", f"step.data_dir={data_run(t, status='failed')}"]),
    Row("pretrain", "step.data_dir", "truncated-shard-in-run", lambda t: ["step=pretrain", f"step.data_dir={broken(data_run(t), 'shards/train_00000.bin', cut)}"]),
    Row("pretrain", "step.data_dir", "undecodable-index-plain-dir", lambda t: ["step=pretrain", f"step.data_dir={broken(shards_dir(t), 'shards/index.json', garble)}"]),
    Row("pretrain", "step.data_dir", "truncated-shard-plain-dir", lambda t: ["step=pretrain", f"step.data_dir={broken(shards_dir(t), 'shards/train_00000.bin', cut)}"]),
    Row("pretrain", "step.resume", "truncated-checkpoint", lambda t: ["step=pretrain", f"step.resume={cut(checkpoint(t))}"]),
    Row("pretrain", "step.resume", "empty-checkpoint", lambda t: ["step=pretrain", f"step.resume={empty(t / 'last.ckpt')}"]),
    Row("pretrain", "step.resume", "empty-dir", lambda t: ["step=pretrain", f"step.data_dir={data_run(t)}", f"step.resume={empty_dir(t)}"]),
    Row("pretrain", "step.resume", "dangling-symlink", lambda t: ["step=pretrain", f"step.resume={dangle(checkpoint(t))}"]),
    Row("pretrain", "model.name_or_path", "truncated-config", lambda t: ["step=pretrain", "model=hf", f"model.name_or_path={broken(model_dir(t), 'config.json', cut)}"]),
    # finetune: the model it starts from, its pairs, a tokenizer replacing the model's, a checkpoint
    Row("finetune", "step.init_from", "empty-dir", lambda t: finetune(t, f"step.init_from={empty_dir(t)}")),
    Row("finetune", "step.init_from", "file-not-dir", lambda t: finetune(t, f"step.init_from={as_file(t / 'start')}")),
    Row("finetune", "step.init_from", "dangling-symlink", lambda t: finetune(t, f"step.init_from={dangle(model_dir(t, 'start'))}")),
    Row("finetune", "step.init_from", "truncated-config", lambda t: finetune(t, f"step.init_from={broken(model_dir(t, 'start'), 'config.json', cut)}")),
    Row("finetune", "step.init_from", "undecodable-config", lambda t: finetune(t, f"step.init_from={broken(model_dir(t, 'start'), 'config.json', garble)}")),
    Row("finetune", "step.init_from", "truncated-tokenizer", lambda t: finetune(t, f"step.init_from={broken(model_dir(t, 'start'), 'tokenizer.json', cut)}")),
    Row("finetune", "step.init_from", "truncated-safetensors", lambda t: finetune(t, f"step.init_from={broken(model_dir(t, 'start'), 'model.safetensors', cut_tail)}")),
    Row("finetune", "step.init_from", "empty-safetensors", lambda t: finetune(t, f"step.init_from={broken(model_dir(t, 'start'), 'model.safetensors', empty)}")),
    Row("finetune", "step.init_from", "undecodable-safetensors", lambda t: finetune(t, f"step.init_from={broken(model_dir(t, 'start'), 'model.safetensors', garble)}")),
    Row("finetune", "step.init_from", "a-data-run", lambda t: finetune(t, f"step.init_from={data_run(t)}")),
    Row("finetune", "step.init_from", "truncated-manifest", lambda t: finetune(t, f"step.init_from={broken(model_run(t, 'pretrain'), 'manifest.json', cut)}")),
    Row("finetune", "step.init_from", "failed-run", lambda t: finetune(t, f"step.init_from={model_run(t, 'pretrain', status='failed')}")),
    Row("finetune", "step.init_from", "truncated-weights-in-run", lambda t: finetune(t, f"step.init_from={broken(model_run(t, 'pretrain'), 'hf/model.safetensors', cut)}")),
    Row("finetune", "step.init_from", "truncated-weights-recorded-in-run", lambda t: finetune(t, f"step.init_from={recorded(broken(model_run(t, 'pretrain'), 'hf/model.safetensors', cut_tail))}")),
    Row("finetune", "step.data_dir", "empty-dir", lambda t: finetune(t, f"step.data_dir={empty_dir(t)}")),
    Row("finetune", "step.data_dir", "undecodable-train", lambda t: finetune(t, f"step.data_dir={broken(pairs_dir(t), 'train.jsonl', garble)}")),
    Row("finetune", "step.data_dir", "truncated-train", lambda t: finetune(t, f"step.data_dir={broken(pairs_dir(t), 'train.jsonl', cut)}")),
    Row("finetune", "step.data_dir", "empty-val", lambda t: finetune(t, f"step.data_dir={broken(pairs_dir(t), 'val.jsonl', empty)}")),
    Row("finetune", "step.data_dir", "split-is-a-directory", lambda t: finetune(t, f"step.data_dir={broken(pairs_dir(t), 'val.jsonl', as_dir)}")),
    Row("finetune", "step.tokenizer", "empty-dir", lambda t: finetune(t, f"step.tokenizer={empty_dir(t)}")),
    Row("finetune", "step.tokenizer", "truncated-tokenizer", lambda t: finetune(t, f"step.tokenizer={broken(tokenizer_dir(t), 'tokenizer.json', cut)}")),
    Row("finetune", "step.tokenizer", "dangling-symlink", lambda t: finetune(t, f"step.tokenizer={dangle(tokenizer_dir(t))}")),
    Row("finetune", "step.resume", "truncated-checkpoint", lambda t: finetune(t, f"step.resume={cut(checkpoint(t))}")),
    # align: the starting model, DPO's reference, the records, GRPO's reward model, extra texts
    Row("align", "step.init_from", "truncated-manifest", lambda t: align(t, f"step.init_from={broken(model_run(t), 'manifest.json', cut)}")),
    Row("align", "step.init_from", "empty-safetensors", lambda t: align(t, f"step.init_from={broken(model_dir(t, 'start', chat=True), 'model.safetensors', empty)}")),
    Row("align", "step.reference", "a-data-run", lambda t: align(t, f"step.reference={data_run(t)}")),
    Row("align", "step.reference", "truncated-config", lambda t: align(t, f"step.reference={broken(model_dir(t, 'ref'), 'config.json', cut)}")),
    Row("align", "step.data_dir", "undecodable-train", lambda t: align(t, f"step.data_dir={broken(pairs_dir(t, PREFERENCES), 'train.jsonl', garble)}")),
    Row("align", "step.data_dir", "truncated-val", lambda t: align(t, f"step.data_dir={broken(pairs_dir(t, PREFERENCES), 'val.jsonl', cut)}")),
    Row("align", "step.data_dir", "file-not-dir", lambda t: align(t, f"step.data_dir={as_file(t / 'prefs')}")),
    Row("align", "align.reward_model_dir", "empty-dir", lambda t: align(t, "align=grpo", "align.reward=reward_model", f"align.reward_model_dir={empty_dir(t)}", records=PAIRS)),
    Row("align", "align.reward_model_dir", "truncated-config", lambda t: align(t, "align=grpo", "align.reward=reward_model", f"align.reward_model_dir={broken(model_dir(t, 'rm', classifier=True), 'config.json', cut)}", records=PAIRS)),
    Row("align", "align.reward_model_dir", "empty-safetensors", lambda t: align(t, "align=grpo", "align.reward=reward_model", f"align.reward_model_dir={broken(model_dir(t, 'rm', classifier=True), 'model.safetensors', empty)}", records=PAIRS)),
    Row("align", "align.extra_train.0", "directory-not-file", lambda t: align(t, "align=safety_classifier", f"align.extra_train=[{empty_dir(t)}]", records=LABELLED)),
    Row("align", "align.extra_train.0", "undecodable", lambda t: align(t, "align=safety_classifier", f"align.extra_train=[{garble(t / 'extra.jsonl')}]", records=LABELLED)),
    # retrieve: the data run it indexes, the run it adds to, the embedder
    Row("retrieve", "step.data_dir", "empty-dir", lambda t: retrieve(t, f"step.data_dir={empty_dir(t)}")),
    Row("retrieve", "step.data_dir", "truncated-manifest", lambda t: retrieve(t, f"step.data_dir={broken(data_run(t), 'manifest.json', cut)}")),
    Row("retrieve", "step.data_dir", "truncated-config", lambda t: retrieve(t, f"step.data_dir={broken(data_run(t), 'config.yaml', cut)}")),
    Row("retrieve", "step.data_dir", "wrong-step-run", lambda t: retrieve(t, f"step.data_dir={model_run(t, 'pretrain')}")),
    Row("retrieve", "step.add_to", "empty-dir", lambda t: retrieve(t, f"step.add_to={empty_dir(t)}")),
    Row("retrieve", "step.add_to", "truncated-manifest", lambda t: retrieve(t, f"step.add_to={broken(retrieve_run(t), 'manifest.json', cut)}")),
    Row("retrieve", "step.add_to", "undecodable-index-recorded-in-run", lambda t: retrieve(t, f"step.add_to={recorded(broken(retrieve_run(t), 'index/index.json', garble))}")),
    Row("retrieve", "embedder.path", "truncated-modules", lambda t: retrieve(t, "embedder=sentence_transformers", f"embedder.path={broken(sentence_transformers_dir(t), 'modules.json', cut)}")),
    Row("retrieve", "embedder.path", "empty-safetensors", lambda t: retrieve(t, "embedder=sentence_transformers", f"embedder.path={broken(sentence_transformers_dir(t), 'model.safetensors', empty)}")),
    Row("retrieve", "embedder.path", "file-not-dir", lambda t: retrieve(t, "embedder=sentence_transformers", f"embedder.path={as_file(t / 'minilm')}")),
    Row("retrieve", "embedder.path", "quark-model-a-data-run", lambda t: retrieve(t, "embedder=quark_model", f"embedder.path={data_run(t)}")),
    Row("retrieve", "embedder.path", "quark-model-truncated-safetensors", lambda t: retrieve(t, "embedder=quark_model", f"embedder.path={broken(model_dir(t), 'model.safetensors', cut_tail)}")),
    # orchestrate: in-process backends' models and retrieval, the tools' index, its SQLite files
    Row("orchestrate", "step.backends.1.model_dir", "truncated-config", lambda t: gateway(backend(broken(model_dir(t), "config.json", cut)))),
    Row("orchestrate", "step.backends.1.model_dir", "a-data-run", lambda t: gateway(backend(data_run(t)))),
    Row("orchestrate", "step.backends.1.model_dir", "empty-safetensors", lambda t: gateway(backend(broken(model_dir(t), "model.safetensors", empty)))),
    Row("orchestrate", "step.backends.1.retrieval", "empty-dir", lambda t: gateway(backend(model_dir(t, chat=True), retrieval=empty_dir(t)))),
    Row("orchestrate", "step.tools.index", "truncated-manifest", lambda t: gateway(extra=(f"step.tools.index={broken(retrieve_run(t), 'manifest.json', cut)}",))),
    Row("orchestrate", "step.tools.index", "wrong-step-run", lambda t: gateway(extra=(f"step.tools.index={data_run(t)}",))),
    Row("orchestrate", "step.memory.path", "truncated-sqlite", lambda t: gateway(extra=(f"step.memory.path={cut(sqlite_file(t / 'memory.sqlite'))}",))),
    Row("orchestrate", "step.memory.path", "undecodable", lambda t: gateway(extra=(f"step.memory.path={garble(t / 'memory.sqlite')}",))),
    Row("orchestrate", "step.memory.path", "directory-not-file", lambda t: gateway(extra=(f"step.memory.path={empty_dir(t)}",))),
    Row("orchestrate", "step.outcomes", "truncated-sqlite", lambda t: gateway(extra=(f"step.outcomes={cut(sqlite_file(t / 'outcomes.sqlite'))}",))),
    Row("orchestrate", "step.outcomes", "dangling-symlink", lambda t: gateway(extra=(f"step.outcomes={dangle(t / 'outcomes.sqlite')}",))),
    Row("orchestrate", "router.reward_model_dir", "empty-dir", lambda t: [*gateway("{name: calc2, tool: calculator}"), "router=ensemble", "router.members=[calculator,calc2]", "router.aggregate=reward", f"router.reward_model_dir={empty_dir(t)}"]),
    # optimize: the model it exports, the data run it validates the export on
    Row("optimize", "step.model_dir", "truncated-safetensors", lambda t: optimize(t, f"step.model_dir={broken(model_dir(t, 'start'), 'model.safetensors', cut_tail)}")),
    Row("optimize", "step.model_dir", "shard-missing", lambda t: optimize(t, f"step.model_dir={write_files(model_dir(t, 'start'), {'model.safetensors.index.json': json.dumps({'weight_map': {'w': 'model-00001-of-00002.safetensors'}})})}")),
    Row("optimize", "step.model_dir", "a-data-run", lambda t: optimize(t, f"step.model_dir={data_run(t)}")),
    Row("optimize", "step.data_dir", "truncated-index-plain-dir", lambda t: optimize(t, f"step.data_dir={broken(shards_dir(t), 'shards/index.json', cut)}")),
    Row("optimize", "step.data_dir", "truncated-tokenizer-plain-dir", lambda t: optimize(t, f"step.data_dir={broken(shards_dir(t), 'tokenizer/tokenizer.json', cut)}")),
    Row("optimize", "step.data_dir", "truncated-manifest", lambda t: optimize(t, f"step.data_dir={broken(data_run(t), 'manifest.json', cut)}")),
    # evaluate: the model, the data of each task, lm-eval's task directory, the baseline
    Row("evaluate", "step.model_dir", "empty-dir", lambda t: evaluate(t, f"step.model_dir={empty_dir(t)}")),
    Row("evaluate", "step.model_dir", "truncated-config", lambda t: evaluate(t, f"step.model_dir={broken(model_dir(t, 'start'), 'config.json', cut)}")),
    Row("evaluate", "step.model_dir", "undecodable-tokenizer", lambda t: evaluate(t, f"step.model_dir={broken(model_dir(t, 'start'), 'tokenizer.json', garble)}")),
    Row("evaluate", "step.model_dir", "truncated-safetensors", lambda t: evaluate(t, f"step.model_dir={broken(model_dir(t, 'start'), 'model.safetensors', cut_tail)}")),
    Row("evaluate", "step.model_dir", "a-data-run", lambda t: evaluate(t, f"step.model_dir={data_run(t)}")),
    Row("evaluate", "step.model_dir", "truncated-onnx", lambda t: evaluate(t, f"step.model_dir={broken(onnx_dir(t), 'model.onnx', cut)}")),
    Row("evaluate", "step.model_dir", "undecodable-onnx", lambda t: evaluate(t, f"step.model_dir={broken(onnx_dir(t), 'model.onnx', garble)}")),
    Row("evaluate", "step.model_dir", "truncated-onnx-external-data", lambda t: evaluate(t, f"step.model_dir={broken(onnx_dir(t, external=True), 'model.onnx.data', cut)}")),
    Row("evaluate", "step.model_dir", "truncated-manifest", lambda t: evaluate(t, f"step.model_dir={broken(model_run(t), 'manifest.json', cut)}")),
    Row("evaluate", "step.model_dir", "running-run", lambda t: evaluate(t, f"step.model_dir={model_run(t, status='running')}")),
    Row("evaluate", "step.data_dir", "truncated-index-plain-dir", lambda t: evaluate(t, f"step.data_dir={broken(shards_dir(t), 'shards/index.json', cut)}")),
    Row("evaluate", "step.data_dir", "failed-run", lambda t: evaluate(t, f"step.data_dir={data_run(t, status='failed')}")),
    Row("evaluate", "step.exact_match.data_dir", "undecodable-split", lambda t: evaluate(t, "step.tasks=[exact_match]", f"step.exact_match.data_dir={broken(pairs_dir(t), 'test.jsonl', garble)}")),
    Row("evaluate", "step.exact_match.data_dir", "truncated-split", lambda t: evaluate(t, "step.tasks=[exact_match]", f"step.exact_match.data_dir={broken(pairs_dir(t), 'test.jsonl', cut)}")),
    Row("evaluate", "step.exact_match.data_dir", "split-is-a-directory", lambda t: evaluate(t, "step.tasks=[exact_match]", f"step.exact_match.data_dir={broken(pairs_dir(t), 'test.jsonl', as_dir)}")),
    Row("evaluate", "step.lm_eval.include_path", "file-not-dir", lambda t: evaluate(t, "step.lm_eval.tasks=[quark_arithmetic]", f"step.lm_eval.include_path={as_file(t / 'tasks')}")),
    Row("evaluate", "step.regression.baseline", "truncated-json", lambda t: evaluate(t, f"step.regression.baseline={cut(write_files(t, {'b.json': json.dumps({'perplexity': 3.5, 'loss': 1.2})}) / 'b.json')}")),
    Row("evaluate", "step.regression.baseline", "undecodable-yaml", lambda t: evaluate(t, f"step.regression.baseline={garble(t / 'b.yaml')}")),
    Row("evaluate", "step.regression.baseline", "empty-dir", lambda t: evaluate(t, f"step.regression.baseline={empty_dir(t)}")),
    Row("evaluate", "step.regression.baseline", "truncated-manifest", lambda t: evaluate(t, f"step.regression.baseline={broken(model_run(t), 'manifest.json', cut)}")),
    Row("evaluate", "step.regression.baseline", "dangling-symlink", lambda t: evaluate(t, f"step.regression.baseline={dangle(t / 'b.json')}")),
    Row("evaluate", "step.red_team.data_dir", "undecodable-train", lambda t: evaluate(t, "step.tasks=[red_team]", "safety=rules", f"step.red_team.data_dir={broken(pairs_dir(t, LABELLED), 'train.jsonl', garble)}")),
    Row("evaluate", "step.rag.index", "truncated-manifest", lambda t: evaluate(t, "step.tasks=[rag]", f"step.rag.index={broken(retrieve_run(t), 'manifest.json', cut)}")),
    Row("evaluate", "step.rag.index", "a-data-run", lambda t: evaluate(t, "step.tasks=[rag]", f"step.rag.index={data_run(t)}")),
    # improve: the model, its task set, the retrieve run, the governance group's files
    Row("improve", "step.model_dir", "truncated-manifest", lambda t: improve(t, f"step.model_dir={broken(model_run(t), 'manifest.json', cut)}")),
    Row("improve", "step.model_dir", "a-data-run", lambda t: improve(t, f"step.model_dir={pairs_run(t)}")),
    Row("improve", "step.pairs_dir", "undecodable-train-recorded-in-run", lambda t: improve(t, f"step.pairs_dir={recorded(broken(pairs_run(t), 'train.jsonl', garble))}")),
    Row("improve", "step.pairs_dir", "empty-dir", lambda t: improve(t, f"step.pairs_dir={empty_dir(t)}")),
    Row("improve", "step.retrieval", "empty-dir", lambda t: improve(t, "step.failures.high_loss_windows=1", f"step.retrieval={empty_dir(t)}")),
    Row("improve", "step.retrieval", "truncated-manifest", lambda t: improve(t, "step.failures.high_loss_windows=1", f"step.retrieval={broken(retrieve_run(t), 'manifest.json', cut)}")),
    Row("improve", "governance.audit_log", "directory-not-file", lambda t: improve(t, f"governance.audit_log={empty_dir(t)}")),
    Row("improve", "governance.audit_log", "undecodable", lambda t: improve(t, f"governance.audit_log={garble(t / 'audit.jsonl')}")),
    Row("improve", "governance.audit_log", "truncated-last-record", lambda t: improve(t, f"governance.audit_log={cut(write_files(t, {'audit.jsonl': jsonl([{'seq': 0, 'kind': 'gate'}])}) / 'audit.jsonl')}")),
    Row("improve", "governance.registry.uri", "truncated-sqlite", lambda t: improve(t, f"governance.registry.uri=sqlite:///{cut(sqlite_file(t / 'mlflow.db'))}")),
    Row("improve", "governance.approval.file", "directory-not-file", lambda t: improve(t, "governance=strict", f"governance.approval.file={empty_dir(t)}")),
    # serve: the model, the retrieval index, the guard's classifier
    Row("serve", "step.model_dir", "empty-safetensors", lambda t: serve(t, f"step.model_dir={broken(model_dir(t, 'start'), 'model.safetensors', empty)}")),
    Row("serve", "step.model_dir", "truncated-tokenizer", lambda t: serve(t, f"step.model_dir={broken(model_dir(t, 'start'), 'tokenizer.json', cut)}")),
    Row("serve", "step.model_dir", "failed-run", lambda t: serve(t, f"step.model_dir={model_run(t, status='failed')}")),
    Row("serve", "step.model_dir", "a-data-run", lambda t: serve(t, f"step.model_dir={data_run(t)}")),
    Row("serve", "step.retrieval.index", "empty-dir", lambda t: serve(t, f"step.retrieval.index={empty_dir(t)}")),
    Row("serve", "step.retrieval.index", "truncated-manifest", lambda t: serve(t, f"step.retrieval.index={broken(retrieve_run(t), 'manifest.json', cut)}")),
    Row("serve", "step.retrieval.index", "a-data-run", lambda t: serve(t, f"step.retrieval.index={data_run(t)}")),
    Row("serve", "safety.classifier.path", "undecodable-config", lambda t: serve(t, "safety=classifier", f"safety.classifier.path={broken(model_dir(t, 'clf', classifier=True), 'config.json', garble)}")),
    Row("serve", "safety.classifier.path", "truncated-tokenizer", lambda t: serve(t, "safety=classifier", f"safety.classifier.path={broken(model_dir(t, 'clf', classifier=True), 'tokenizer.json', cut)}")),
    Row("serve", "safety.classifier.path", "truncated-safetensors", lambda t: serve(t, "safety=classifier", f"safety.classifier.path={broken(model_dir(t, 'clf', classifier=True), 'model.safetensors', cut_tail)}")),
]  # fmt: skip

# run as `python launch.py` too: the command prints the line the in-process entry does
CLI_ROWS = (
    "finetune-step.init_from-truncated-safetensors",
    "evaluate-step.model_dir-truncated-manifest",
    "orchestrate-step.memory.path-truncated-sqlite",
    "retrieve-step.add_to-empty-dir",
)


# ---------------------------------------------------------------------------------------------
# The harness: launch.py's own entry, in this process.


@pytest.fixture(scope="module")
def entry() -> ModuleType:
    """launch.py as a module: `launch` is Hydra's main wrapped by `reported_by_exit_cleanly`."""
    spec = importlib.util.spec_from_file_location("quark_launch_entry", REPO / "launch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Hydra configures the root logger for each run: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def launch_here(
    entry: ModuleType, args: list[str], outputs: Path, monkeypatch: pytest.MonkeyPatch
) -> int:
    """`python launch.py ARGS` run in this process, as launch.py's __main__ runs it; its exit
    status (what it printed is the caller's capsys's)."""
    monkeypatch.setenv("QUARK_OUTPUT_DIR", str(outputs))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # as exit_cleanly sets it
    # Hydra looks for conf/ beside the task function's file, as for a script run as __main__
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")
    monkeypatch.delenv("QUARK_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["launch.py", *entry.with_default_pipeline(args)])
    monkeypatch.setattr(errors, "_task_failures", [])
    with pytest.raises(SystemExit) as exited:
        errors.exit_cleanly(entry.launch)
    return int(exited.value.code or 0)


def refusal(status: int, stderr: str, key: str, outputs: Path) -> str:
    """The one line a clean refusal of `key` printed; it failed the test if there is another
    line, another status, or a run under `outputs` marked completed."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {key}: "), lines[0]
    for manifest in outputs.rglob("manifest.json"):
        assert json.loads(manifest.read_text())["status"] != "completed", manifest
    return lines[0]


def refused_here(
    row: Row,
    tmp: Path,
    entry: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    outputs, inputs = tmp / "outputs", tmp / "inputs"
    inputs.mkdir(parents=True)
    args = row.build(inputs)
    capsys.readouterr()  # what making the inputs printed
    status = launch_here(entry, args, outputs, monkeypatch)
    return refusal(status, capsys.readouterr().err, row.key, outputs)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_a_damaged_path_is_refused_in_one_line_naming_its_key(
    row: Row,
    entry: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restored_logging: None,
) -> None:
    refused_here(row, tmp_path, entry, monkeypatch, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("row", [r for r in ROWS if r.id in CLI_ROWS], ids=lambda r: r.id)
def test_the_command_line_prints_the_same_line(
    row: Row,
    entry: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restored_logging: None,
) -> None:
    # directories of one length: a message may quote a position in a file holding the path
    here, there = tmp_path / "in_process", tmp_path / "subprocess"
    line_here = refused_here(row, here, entry, monkeypatch, capsys)
    (there / "inputs").mkdir(parents=True)
    done = launcher(there / "outputs", {"HF_HUB_OFFLINE": "1"})(*row.build(there / "inputs"))
    line = refusal(done.returncode, done.stderr, row.key, there / "outputs")
    assert line.replace(str(there), "<tmp>") == line_here.replace(str(here), "<tmp>")
