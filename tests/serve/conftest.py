"""Tiny Llamas trained in-process for a few seconds (a regular little language, and chat turns
in the finetune step's template), saved as a Hugging Face model with and without a chat
template and as an ONNX export, and an in-process server for them on a loopback port."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from ..export.conftest import sentences

TEMPLATE = (
    "{%- for message in messages -%}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endfor -%}{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
WINDOW = 64


def chat_turns(count: int) -> list[str]:
    """Questions about the little language, answered and closed with <|end|>."""
    colours = ("red", "blue", "green")
    return [
        f"<|user|>colour of item{i % 7}?<|end|><|assistant|>item{i % 7} is {colours[i % 3]}<|end|>"
        for i in range(count)
    ]


@dataclass
class TinyModels:
    base: Path  # HF model directory, no chat template
    chat: Path  # the same weights, tokenizer with the chat template, stop at <|end|>


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    from transformers import AutoTokenizer

    from quark.data.tokenizer import save_hf_tokenizer, train_tokenizer
    from quark.models.llama import build_llama

    root = tmp_path_factory.mktemp("serve_models")
    base, chat = root / "base", root / "chat"
    spec = SimpleNamespace(
        vocab_size=400, min_frequency=2, bos_token="<|bos|>", eos_token="<|eos|>",
        pad_token="<|pad|>",
    )  # fmt: skip
    texts = [t for pair in zip(sentences(0, 30), chat_turns(30), strict=True) for t in pair]
    tokenizer = train_tokenizer(texts, spec)
    save_hf_tokenizer(tokenizer, base, spec, model_max_length=512)
    ids = np.concatenate(
        [tokenizer.encode(s).ids for s in sentences(0, 30)]
        + [tokenizer.encode("".join(chat_turns(400))).ids]
    )
    count = len(ids) // (WINDOW + 1)
    windows = torch.from_numpy(ids[: count * (WINDOW + 1)].reshape(count, WINDOW + 1))
    torch.manual_seed(0)
    model = build_llama(
        vocab_size=384, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=192, max_seq_len=512, tie_embeddings=False,
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(120):
            picked = torch.randint(
                len(windows), (8,), generator=torch.Generator().manual_seed(step)
            )
            model(input_ids=windows[picked], labels=windows[picked]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(base)
    shutil.copytree(base, chat)
    hf_tokenizer = AutoTokenizer.from_pretrained(str(base))
    hf_tokenizer.chat_template = TEMPLATE
    hf_tokenizer.save_pretrained(str(chat))
    generation = json.loads((chat / "generation_config.json").read_text())
    end, eos = hf_tokenizer.convert_tokens_to_ids(["<|end|>", "<|eos|>"])
    generation["eos_token_id"] = [end, eos]
    (chat / "generation_config.json").write_text(json.dumps(generation))
    return TinyModels(base, chat)


@pytest.fixture(scope="session")
def onnx_dir(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base model as quark.export.onnx writes it (no chat template)."""
    from transformers import AutoModelForCausalLM

    from quark.export import copy_model_files, quiet_exporters
    from quark.export.onnx import write_onnx

    quiet_exporters()
    out = tmp_path_factory.mktemp("serve_onnx") / "onnx"
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype=torch.float32)
    write_onnx(model, out / "model.onnx")
    copy_model_files(tiny_models.base, out)
    return out


@dataclass
class Serving:
    url: str
    engine: object  # quark.serve.engine.Engine
    name: str


@contextlib.contextmanager
def serving(
    directory: Path,
    api_key: str | None = None,
    guard: Any = None,
    retrieval: Any = None,
    **limits: int,
) -> Iterator[Serving]:
    """The model in `directory` served in this process on a free loopback port, behind
    `guard` and with `retrieval` (quark.serve.rag.Retrieval) when given."""
    from quark.serve.api import build_app
    from quark.serve.backends import load_model
    from quark.serve.engine import Engine
    from quark.serve.protocol import Limits
    from quark.serve.server import Server, bind

    torch.set_num_threads(1)
    model = load_model(directory, "tiny", "cpu", threads=1)
    engine = Engine(model, limits.pop("max_batch_size", 8), limits.pop("max_prefill_tokens", 2048))
    settings = {"max_tokens": 400, "max_prompt_tokens": 200, "max_request_bytes": 20_000}
    settings |= {"max_waiting": 64} | limits
    app = build_app(model, engine, Limits(**settings), api_key, guard, retrieval=retrieval)
    server = Server(app, bind("127.0.0.1", 0))
    engine.start()
    server.start()
    try:
        yield Serving(server.url, engine, "tiny")
    finally:
        server.stop()
        engine.stop()
