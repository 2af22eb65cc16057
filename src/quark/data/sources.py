"""Raw documents from each kind of source, streamed one at a time in a fixed order.

Kinds: `stdlib_code` (this Python's standard library, the embedded default), `text_files`
(globs), `jsonl` (a named text field), `parquet` (a named column), `hf_dataset` (a dataset
saved with `save_to_disk`, or a hub name when online).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError, QuarkError, one_line
from quark.core.files import sha256_file, sha256_json

TEST_DIRS = {"test", "tests", "idle_test"}


@dataclass
class Document:
    source: str
    id: str
    text: str
    # bytes that could not be decoded as UTF-8 (replaced by U+FFFD)
    undecodable_bytes: int = 0


@dataclass
class SourceStats:
    name: str
    files: list[str] = field(default_factory=list)
    documents: int = 0
    bytes: int = 0
    undecodable_bytes: int = 0


def stdlib_files() -> list[Path]:
    """The standard library's .py files, test directories excluded, in a fixed (sorted) order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in root.rglob("*.py"):
        parts = set(path.relative_to(root).parts[:-1])
        if parts & TEST_DIRS or "site-packages" in parts or "dist-packages" in parts:
            continue
        files.append(path)
    return sorted(files, key=lambda p: str(p.relative_to(root)))


def decode(data: bytes) -> tuple[str, int]:
    """Text and the number of undecodable bytes (each replaced by U+FFFD)."""
    text = data.decode("utf-8", errors="replace")
    if text.isascii():
        return text, 0
    valid = data.decode("utf-8", errors="ignore")
    return text, len(data) - len(valid.encode("utf-8"))


def read_source(spec: Any, stats: SourceStats) -> Iterator[Document]:
    """Documents of one source config (`data.sources[i]`), counting into `stats`."""
    kind = str(spec.type)
    if kind == "stdlib_code":
        yield from _files(stdlib_files(), stats, root=Path(sysconfig.get_paths()["stdlib"]))
    elif kind == "text_files":
        yield from _files(matching_files(spec, stats.name), stats, root=None)
    elif kind == "jsonl":
        yield from _jsonl(matching_files(spec, stats.name), str(spec.text_field), stats)
    elif kind == "parquet":
        yield from _parquet(matching_files(spec, stats.name), str(spec.text_field), stats)
    elif kind == "hf_dataset":
        yield from _hf_dataset(spec, stats)
    else:  # the schema allows only the kinds above
        raise QuarkError(f"{stats.name}.type: unknown source kind '{kind}'")


def matching_files(spec: Any, key: str) -> list[Path]:
    """Files matching a source's `paths` globs, sorted per glob; an error for a glob matching none."""
    patterns = list(spec.paths or [])
    if not patterns:
        raise QuarkError(
            f"{key}.paths: empty; give one or more files or globs, e.g. {key}.paths='[corpus/*.txt]'"
        )
    files: list[Path] = []
    seen: set[Path] = set()  # real paths: a file reached twice (a symlinked folder) is read once
    for pattern in patterns:
        matched = sorted(
            Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True)
        )
        matched = [p for p in matched if p.is_file()]
        if not matched:
            raise ConfigError(
                f"{key}.paths", f"'{pattern}' matches no file",
                "files, or globs matching files (** recurses), e.g. corpus/*.txt",
            )  # fmt: skip
        for path in matched:
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                files.append(path)
    return files


def _read_bytes(path: Path) -> bytes:
    """A file's bytes; a .gz file's decompressed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise QuarkError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if path.suffix == ".gz":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise QuarkError(f"{path}: not a readable gzip file ({exc})") from None
    return data


def _files(files: list[Path], stats: SourceStats, root: Path | None) -> Iterator[Document]:
    for path in files:
        data = _read_bytes(path)
        text, bad = decode(data)
        name = str(path.relative_to(root)) if root else str(path)
        stats.files.append(name)
        stats.documents += 1
        stats.bytes += len(data)
        stats.undecodable_bytes += bad
        yield Document(stats.name, name, text, bad)


def _jsonl(files: list[Path], text_field: str, stats: SourceStats) -> Iterator[Document]:
    for path in files:
        stats.files.append(str(path))
        if not os.access(path, os.R_OK):
            raise QuarkError(f"{path}: unreadable (permission denied)")
        # streamed line by line (a corpus may not fit in memory); a .gz file decompressed
        opened = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
        with opened as handle:
            try:
                yield from _jsonl_records(path, handle, text_field, stats)
            except (OSError, EOFError) as exc:  # a damaged gzip stream
                raise QuarkError(f"{path}: not a readable gzip file ({exc})") from None


def _jsonl_records(
    path: Path, handle: Any, text_field: str, stats: SourceStats
) -> Iterator[Document]:
    for number, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        line, bad = decode(raw)
        try:
            record = json.loads(line)
        except ValueError:
            raise ConfigError(
                f"{stats.name}.paths", f"{path}:{number}: not valid JSON (cut short, or not JSON "
                "lines)", f"JSON lines, each an object with a '{text_field}' field",
            ) from None  # fmt: skip
        if not isinstance(record, dict):
            raise ConfigError(
                f"{stats.name}.paths", f"{path}:{number}: a JSON {type(record).__name__}, not an "
                "object", f"JSON lines, each an object with a '{text_field}' field",
            )  # fmt: skip
        if text_field not in record:
            raise no_text_field(stats, f"{path}:{number}", text_field, list(record))
        stats.documents += 1
        stats.bytes += len(raw)
        stats.undecodable_bytes += bad
        yield Document(stats.name, f"{path}:{number}", str(record[text_field]), bad)


def no_text_field(
    stats: SourceStats, where: str, text_field: str, fields: list[str]
) -> ConfigError:
    """A record or table without the source's text field: on `<source>.text_field`, naming
    the fields it has."""
    return ConfigError(
        f"{stats.name}.text_field",
        f"'{text_field}' is not a field of {where} (its fields: {', '.join(map(str, fields)) or 'none'})",
        "a field every record of the source has",
    )


def _parquet(files: list[Path], text_field: str, stats: SourceStats) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise QuarkError("parquet sources need pyarrow: pip install 'quark[data]'") from None
    for path in files:
        stats.files.append(str(path))
        try:
            reader = pq.ParquetFile(path)
        except Exception as exc:
            raise ConfigError(
                f"{stats.name}.paths", f"{path}: not a readable parquet file ({exc})",
                f"parquet files with a '{text_field}' column",
            ) from None  # fmt: skip
        if text_field not in reader.schema_arrow.names:
            raise no_text_field(stats, str(path), text_field, reader.schema_arrow.names)
        row = 0
        for batch in reader.iter_batches(columns=[text_field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                row += 1
                text = "" if value is None else str(value)
                stats.documents += 1
                stats.bytes += len(text.encode())
                yield Document(stats.name, f"{path}#{row}", text)


def _hf_dataset(spec: Any, stats: SourceStats) -> Iterator[Document]:
    from quark.models.hf import hub_offline

    name = str(spec.name_or_path or "")
    if not name:
        raise QuarkError(
            f"{stats.name}.name_or_path: not set; give a directory saved with save_to_disk or a hub name"
        )
    try:
        import datasets
    except ImportError:
        raise QuarkError(
            "hf_dataset sources need the datasets package: pip install 'quark[data]'"
        ) from None
    local = Path(name).expanduser()
    if local.exists():
        try:
            loaded = datasets.load_from_disk(str(local))
        except Exception as exc:
            raise ConfigError(
                f"{stats.name}.name_or_path", f"{local}: not a dataset saved with save_to_disk "
                f"({one_line(str(exc))})", "a directory Dataset.save_to_disk wrote, or a hub name",
            ) from None  # fmt: skip
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise QuarkError(f"{local}: no split '{spec.split}' (splits: {', '.join(loaded)})")
            loaded = loaded[spec.split]
    elif hub_offline():
        raise QuarkError(
            f"{stats.name}.name_or_path: '{name}' is not a local directory and the hub is off "
            "(HF_HUB_OFFLINE); save the dataset with save_to_disk, or set HF_HUB_OFFLINE=0 to download"
        )
    else:
        loaded = datasets.load_dataset(name, split=str(spec.split), streaming=True)
    stats.files.append(name)
    text_field = str(spec.text_field)
    for index, record in enumerate(loaded):
        if text_field not in record:
            raise no_text_field(stats, f"{name}#{index}", text_field, list(record))
        text = str(record[text_field])
        stats.documents += 1
        stats.bytes += len(text.encode())
        yield Document(stats.name, f"{name}#{index}", text)


def source_records(sources: Any) -> dict[str, Path | dict[str, Any]]:
    """The input record of each source (`data.sources.N`): a corpus's file list and content
    hash, or a saved dataset's directory; a hub dataset has none."""
    found: dict[str, Path | dict[str, Any]] = {}
    for index, source in enumerate(sources):
        key = f"data.sources.{index}"
        if source.type == "stdlib_code":
            root = Path(sysconfig.get_paths()["stdlib"])
            found[key] = corpus_record(key, "stdlib_code", root, stdlib_files())
        elif source.type == "hf_dataset":
            if source.name_or_path and Path(str(source.name_or_path)).expanduser().exists():
                found[key] = Path(str(source.name_or_path)).expanduser()
        else:
            found[key] = corpus_record(key, str(source.type), None, matching_files(source, key))
    return found


def corpus_record(key: str, kind: str, root: Path | None, files: list[Path]) -> dict[str, Any]:
    """One input record for a whole corpus: its file list and a hash of every file's content."""
    if not files:
        raise QuarkError(f"{key}: empty corpus (no files)")
    hashed = []
    total = 0
    for file in files:
        try:
            digest = sha256_file(file)
        except OSError as exc:
            raise QuarkError(f"{file}: unreadable ({exc.strerror or exc})") from None
        name = str(file.relative_to(root)) if root else str(file)
        hashed.append((name, digest))
        total += file.stat().st_size
    return {
        "path": str(root) if root else key,
        "kind": f"corpus:{kind}",
        "sha256": sha256_json(hashed),
        "bytes": total,
        "files": [n for n, _ in hashed],
    }
