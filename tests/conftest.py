"""Fixtures shared by the suite: launching Quark as a user does, composing configs, tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA (run on the accelerator machine)")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    path = tmp_path / "outputs"
    path.mkdir()
    return path


# model=llama_custom sized like Mistral 7B, every size on the command line
MISTRAL_7B_SIZES = [
    "model.vocab_size=32000",
    "model.hidden_size=4096",
    "model.num_layers=32",
    "model.num_heads=32",
    "model.num_kv_heads=8",
    "model.intermediate_size=14336",
    "model.max_seq_len=8192",
]

LaunchFn = Callable[..., subprocess.CompletedProcess]


def launcher(outputs: Path, base_env: dict[str, str] | None = None) -> LaunchFn:
    """`python launch.py ARGS` from the repository root with run directories under `outputs`
    and `base_env` on top of this process's environment; for fixtures of any scope."""

    def run(
        *args: str, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess:
        merged = {
            **os.environ,
            "QUARK_OUTPUT_DIR": str(outputs),
            **(base_env or {}),
            **(env or {}),
        }
        if "QUARK_DEBUG" not in (env or {}):
            merged.pop("QUARK_DEBUG", None)  # tests see what users see: no traceback
        done = subprocess.run(
            [sys.executable, "launch.py", *args],
            cwd=REPO,
            env=merged,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"launch.py {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    return run


@pytest.fixture
def launch(outputs: Path) -> LaunchFn:
    """Run `python launch.py ARGS` from the repository root with run directories under `outputs`."""
    return launcher(outputs)


def write_item_corpus(directory: Path, files: int = 30) -> Path:
    """A regular little language in `files` text files (items, values, colours): a tiny model
    learns it in a few dozen steps, so trained-model checks have confident predictions."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        words = " ".join(
            f"item{i % 7} has value {j * i % 13} and colour {['red', 'blue', 'green'][j % 3]}"
            for j in range(40)
        )
        (directory / f"{i}.txt").write_text(words)
    return directory


# The data step over write_item_corpus(directory): launch(*ITEM_DATA, f"...paths=[dir/*.txt]")
ITEM_DATA = (
    "step=data",
    "data=text_files",
    "data.tokenizer.vocab_size=600",
    "data.dedup.near=false",
    "data.pack.val_fraction=0.2",
)


def manifests(outputs: Path) -> list[dict]:
    """Every manifest under `outputs`, oldest first."""
    found = [json.loads(p.read_text()) for p in outputs.rglob("manifest.json")]
    return sorted(found, key=lambda m: m["started_at"])


@pytest.fixture
def hf_model_dir(tmp_path: Path) -> Path:
    """A local Hugging Face model directory: config.json of a small Llama (no weights needed to plan)."""
    directory = tmp_path / "hf_model"
    directory.mkdir()
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 1000,
        "hidden_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 344,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory
