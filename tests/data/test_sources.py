"""Each kind of source yields its documents in a fixed order; bad sources fail clearly."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from quark.core.errors import ConfigError, QuarkError
from quark.data.sources import SourceStats, read_source, stdlib_files


def spec(**kwargs: object) -> SimpleNamespace:
    base = {
        "type": "text_files",
        "weight": 1.0,
        "paths": [],
        "text_field": "text",
        "name_or_path": None,
        "split": "train",
    }
    return SimpleNamespace(**{**base, **kwargs})


def read(source: SimpleNamespace) -> tuple[list[str], SourceStats]:
    stats = SourceStats("data.sources.0")
    return [d.text for d in read_source(source, stats)], stats


def test_stdlib_code_is_the_standard_library_without_tests() -> None:
    files = stdlib_files()
    names = {str(f) for f in files}
    assert any(n.endswith("/json/decoder.py") for n in names)
    assert not any("/test/" in n or "/tests/" in n or "/idlelib/idle_test/" in n for n in names)
    assert files == sorted(files, key=str)  # a fixed order
    assert len(files) > 500


def test_text_files_by_glob_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text("third")
    texts, stats = read(spec(paths=[f"{tmp_path}/*.txt", f"{tmp_path}/**/*.md"]))
    assert texts == ["first", "second", "third"]
    assert stats.documents == 3 and stats.bytes == len("firstsecondthird")


def test_jsonl_reads_the_named_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(json.dumps({"content": f"doc {i}", "other": 1}) for i in range(3)) + "\n\n"
    )
    texts, _ = read(spec(type="jsonl", paths=[str(path)], text_field="content"))
    assert texts == ["doc 0", "doc 1", "doc 2"]
    with pytest.raises(ConfigError) as missing:
        read(spec(type="jsonl", paths=[str(path)]))
    assert str(missing.value) == (
        f"data.sources.0.text_field: 'text' is not a field of {path}:1 (its fields: content, "
        "other); a field every record of the source has"
    )
    path.write_text('["a list"]\n')
    with pytest.raises(ConfigError, match=r"data.sources.0.paths: .*d.jsonl:1: a JSON list"):
        read(spec(type="jsonl", paths=[str(path)]))
    path.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(QuarkError, match=r"d.jsonl:2: not valid JSON"):
        read(spec(type="jsonl", paths=[str(path)]))


def test_parquet_reads_the_named_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"text": [f"row {i}" for i in range(2500)], "n": list(range(2500))}),
        tmp_path / "t.parquet",
    )
    texts, stats = read(spec(type="parquet", paths=[str(tmp_path / "t.parquet")]))
    assert texts[0] == "row 0" and texts[-1] == "row 2499" and stats.documents == 2500
    with pytest.raises(
        ConfigError,
        match=r"^data.sources.0.text_field: 'body' is not a field of .*t.parquet \(its fields: text, n\)",
    ):
        read(spec(type="parquet", paths=[str(tmp_path / "t.parquet")], text_field="body"))


def test_hf_dataset_saved_to_disk(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": ["alpha", "beta"]}).save_to_disk(str(tmp_path / "ds"))
    texts, _ = read(spec(type="hf_dataset", name_or_path=str(tmp_path / "ds")))
    assert texts == ["alpha", "beta"]
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": ["v"]})}).save_to_disk(
        str(tmp_path / "dd")
    )
    with pytest.raises(QuarkError, match="no split 'train'"):
        read(spec(type="hf_dataset", name_or_path=str(tmp_path / "dd")))


def test_a_hub_name_offline_is_one_clear_error_without_a_network_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # Quark's default: offline
    with pytest.raises(QuarkError, match="not a local directory and the hub is off"):
        read(spec(type="hf_dataset", name_or_path="someone/some-dataset"))


def test_globs_matching_nothing_and_unreadable_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(QuarkError, match="matches no file"):
        read(spec(paths=[f"{tmp_path}/*.txt"]))
    with pytest.raises(QuarkError, match="paths: empty"):
        read(spec(paths=[]))
    # a file whose read fails even for root (Linux): reading a process's memory at offset 0
    with pytest.raises(QuarkError, match="/proc/self/mem: unreadable"):
        read(spec(paths=["/proc/self/mem"]))


def test_a_file_reached_twice_through_a_symlinked_folder_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.txt").write_text("only once")
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    texts, stats = read(spec(paths=[f"{tmp_path}/**/*.txt"]))
    assert texts == ["only once"] and stats.documents == 1


def test_gzip_compressed_text_and_jsonl_are_read_as_text(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"compressed words\n"))
    texts, stats = read(spec(paths=[f"{tmp_path}/*.gz"]))
    assert texts == ["compressed words\n"] and stats.undecodable_bytes == 0
    lines = "".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(2))
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    texts, _ = read(spec(type="jsonl", paths=[str(tmp_path / "d.jsonl.gz")]))
    assert texts == ["doc 0", "doc 1"]
    (tmp_path / "broken.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(QuarkError, match=r"broken\.txt\.gz: not a readable gzip file"):
        read(spec(paths=[str(tmp_path / "broken.txt.gz")]))
