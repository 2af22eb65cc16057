"""The audit log's hash chain: an untouched log verifies; an edited, removed, reordered or
cut-off record, or a line that is not JSON, is found and named by its line."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from quark.governance.audit import GENESIS, AuditLog, canonical, record_hash, verify


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """An audit log of five records, as a registration, a decision and a promotion write them."""
    path = tmp_path / "registry" / "audit.jsonl"
    audit = AuditLog(path)
    audit.append("registration", version=1, run_dir="/runs/a")
    audit.append("decision", candidate="version 1", passed=True, rules=[{"rule": "required"}])
    audit.append("promotion", version=1, archived=None)
    audit.append("registration", version=2, run_dir="/runs/b")
    audit.append("decision", candidate="version 2", passed=False, rules=[])
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def found(path: Path) -> list[tuple[int, int | None]]:
    return [(problem.line, problem.record) for problem in verify(path)]


def test_an_untouched_log_verifies_and_its_records_chain(log: Path) -> None:
    assert verify(log) == []
    records = AuditLog(log).records()
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["kind"] for r in records][:3] == ["registration", "decision", "promotion"]
    assert records[0]["prev"] == GENESIS
    assert records[1]["rules"] == [{"rule": "required"}]
    for record in records:
        assert record["hash"] == record_hash(record)
    head = json.loads((log.parent / "audit.head.json").read_text())
    assert head == {"records": 5, "hash": records[-1]["hash"]}


def test_an_edited_field_of_a_middle_record_is_found(log: Path) -> None:
    lines = lines_of(log)
    record = json.loads(lines[2])
    record["version"] = 2  # a promotion of another version than was decided
    lines[2] = canonical(record)
    write_lines(log, lines)
    problems = verify(log)
    assert (3, 2) in found(log)
    assert "edited" in str(problems[0]) and str(problems[0]).startswith("line 3 (record 2)")


def test_an_edit_with_its_hash_recomputed_is_found_by_the_next_record(log: Path) -> None:
    lines = lines_of(log)
    record = json.loads(lines[1])
    record["passed"] = False
    record["hash"] = record_hash(record)
    lines[1] = canonical(record)
    write_lines(log, lines)
    assert found(log) == [(3, 2)]


def test_a_removed_middle_record_is_found(log: Path) -> None:
    lines = lines_of(log)
    del lines[1]
    write_lines(log, lines)
    problems = verify(log)
    # record 2 now follows record 0, and does not chain to it; nothing after it is blamed
    assert [(p.line, p.record) for p in problems] == [(2, 2), (2, 2)]
    assert "record 1 before it was removed" in str(problems[0])


def test_a_removed_last_record_is_found_by_the_head(log: Path) -> None:
    write_lines(log, lines_of(log)[:-1])
    problems = verify(log)
    assert len(problems) == 1
    assert problems[0].record is None and "last records were removed" in problems[0].what


def test_a_removed_head_is_found(log: Path) -> None:
    (log.parent / "audit.head.json").unlink()
    assert "missing" in verify(log)[0].what


def test_two_swapped_records_are_found(log: Path) -> None:
    lines = lines_of(log)
    lines[1], lines[2] = lines[2], lines[1]
    write_lines(log, lines)
    problems = verify(log)
    assert (2, 2) in found(log) and (3, 1) in found(log)
    assert any("reordered" in str(problem) for problem in problems)


def test_a_line_that_is_not_json_is_found(log: Path) -> None:
    lines = lines_of(log)
    lines[3] = lines[3][:-5]
    write_lines(log, lines)
    assert (4, None) in found(log)


def test_appending_after_a_verified_log_continues_the_chain(log: Path) -> None:
    AuditLog(log).append("promotion", version=2)
    assert verify(log) == []
    assert AuditLog(log).records()[-1]["seq"] == 5


def test_the_chain_keys_cannot_be_set_by_a_payload(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seq"):
        AuditLog(tmp_path / "audit.jsonl").append("decision", seq=7)


def append_many(path: str, count: int) -> None:
    audit = AuditLog(Path(path))
    for number in range(count):
        audit.append("decision", writer=multiprocessing.current_process().name, n=number)


def test_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=append_many, args=(str(path), 40)) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0
    assert verify(path) == []
    assert len(AuditLog(path).records()) == 160
