"""The audit log: an append-only JSONL file whose records are hash-chained, so that an edited,
removed, reordered or cut-off record is found by `verify` (and `quark audit verify`).

Each line is the canonical JSON (sorted keys, no spaces) of one record:

    {"seq": 0, "time": "...", "kind": "decision", ...payload, "prev": "<sha256 of the line
     before, or 64 zeros>", "hash": "<sha256 of this record's canonical JSON without hash>"}

The chain alone cannot show that records were cut off the end, so a head file beside the log
(audit.head.json for audit.jsonl) holds the number of records and the last hash.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.errors import QuarkError
from quark.core.files import kept_file_problem, write_json_atomic

GENESIS = "0" * 64
CHAIN_KEYS = ("seq", "time", "kind", "prev", "hash")


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record_hash(record: dict[str, Any]) -> str:
    """The hash a record carries: of its canonical JSON without the hash itself."""
    return sha256_text(canonical({k: v for k, v in record.items() if k != "hash"}))


def head_path(log: Path) -> Path:
    """audit.head.json beside audit.jsonl."""
    return Path(log).with_suffix(".head.json")


class AuditLog:
    """Appends hash-chained records to one JSONL file; several processes may append at once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, kind: str, **payload: Any) -> dict[str, Any]:
        """Write one record of `kind` with `payload` at the end of the log; returns it."""
        from quark.core.run import now_iso

        clash = [key for key in payload if key in CHAIN_KEYS]
        if clash:
            raise ValueError(f"audit record payload may not set {clash}: the chain sets them")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The lock is on the log itself: a second process waits, then chains onto this record.
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0)
                lines = handle.read().splitlines()
                last = lines[-1] if lines else None
                record: dict[str, Any] = {
                    "seq": self._next_seq(last),
                    "time": now_iso(),
                    "kind": kind,
                    **payload,
                    "prev": sha256_text(last) if last is not None else GENESIS,
                }
                record["hash"] = record_hash(record)
                handle.write(canonical(record) + "\n")
                handle.flush()
                os.fsync(handle.fileno())  # on disk before the head counts it
                # the head is written while the lock is held, so it always names the last record
                write_json_atomic(
                    head_path(self.path), {"records": record["seq"] + 1, "hash": record["hash"]}
                )
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return record

    def records(self) -> list[dict[str, Any]]:
        """Every record, oldest first (unchecked: `verify` says whether the chain holds)."""
        if not self.path.is_file():
            return []
        found = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            try:
                found.append(json.loads(line))
            except ValueError:
                raise QuarkError(
                    f"{self.path}: line {number} is not JSON; run quark audit verify {self.path}"
                ) from None
        return found

    def _next_seq(self, last: str | None) -> int:
        if last is None:
            return 0
        try:
            return int(json.loads(last)["seq"]) + 1
        except (ValueError, KeyError, TypeError):
            raise QuarkError(
                f"{self.path}: its last line is not an audit record, so nothing can be chained "
                f"to it; run quark audit verify {self.path}"
            ) from None


def append_problem(path: Path) -> str | None:
    """What keeps a record from being appended to the audit log at `path`, or None (a missing
    log is started): a directory, a link to nothing, bytes that are not text, a last line that
    is not a record to chain onto. Whether the chain holds is `verify`'s to say."""
    path = Path(path)
    problem = kept_file_problem(path)
    if problem or not path.exists():
        return problem
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        return "is not text (undecodable bytes)"
    except OSError as exc:
        return f"is unreadable ({exc.strerror or exc})"
    try:
        AuditLog(path)._next_seq(lines[-1] if lines else None)
    except QuarkError:
        return "ends with a line that is not an audit record (quark audit verify says more)"
    return None


@dataclass
class Problem:
    """Something in the log that the chain says was changed: at `line` (1-based) of the file,
    in the record with sequence number `record` where one was readable."""

    line: int
    record: int | None
    what: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (
            f" (record {self.record})" if self.record is not None else ""
        )
        return f"{where}: {self.what}"


def verify(path: Path) -> list[Problem]:
    """What breaks the chain of the log at `path`; empty when it is intact.

    Raises:
        QuarkError: `path` does not exist, or is not an audit log (no line is an audit record
            and there is no head file beside it).
    """
    path = Path(path)
    if path.is_dir():
        raise QuarkError(f"{path}: a directory, not an audit log (registry/audit.jsonl)")
    if not path.is_file():
        raise QuarkError(f"{path}: no such audit log")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    head = _read_head(path)
    parsed = [_parse(line) for line in lines]
    if head is None and not any(record is not None and "hash" in record for record in parsed):
        raise QuarkError(f"{path}: not a Quark audit log (no hash-chained records, no head file)")
    problems: list[Problem] = []
    previous_line: str | None = None
    highest = -1  # the highest sequence number so far: each record should follow it
    for number, (line, record) in enumerate(zip(lines, parsed, strict=True), start=1):
        if record is None:
            problems.append(Problem(number, None, "not a JSON record"))
            highest += 1  # it held a record: the next one should follow that one
        else:
            problems.extend(_check_record(number, highest, record, previous_line))
            seq = record.get("seq")
            highest = max(highest, seq) if isinstance(seq, int) else highest + 1
        previous_line = line
    problems.extend(_check_head(path, head, len(lines), parsed))
    return problems


def _check_record(
    number: int, highest: int, record: dict[str, Any], previous_line: str | None
) -> list[Problem]:
    seq = record.get("seq")
    label = seq if isinstance(seq, int) else None
    problems = []
    if record.get("hash") != record_hash(record):
        problems.append(Problem(number, label, "content does not match its hash: edited"))
    if not isinstance(seq, int):
        problems.append(Problem(number, None, "has no sequence number"))
    elif seq <= highest:
        problems.append(
            Problem(
                number, label, f"comes after record {highest}: records were reordered or repeated"
            )
        )
    elif seq > highest + 1:
        missing = (
            f"record {highest + 1} before it was"
            if seq == highest + 2
            else f"records {highest + 1}-{seq - 1} before it were"
        )
        problems.append(Problem(number, label, f"{missing} removed"))
    wanted_prev = sha256_text(previous_line) if previous_line is not None else GENESIS
    if record.get("prev") != wanted_prev:
        before = f"line {number - 1}" if previous_line is not None else "the start of the log"
        problems.append(
            Problem(
                number,
                label,
                f"does not chain to {before}: a record before it was edited, removed or moved",
            )
        )
    return problems


def _check_head(
    path: Path, head: dict[str, Any] | None, count: int, parsed: list[dict[str, Any] | None]
) -> list[Problem]:
    """Whether the log still ends where its head file says: the chain cannot show a cut tail."""
    name = head_path(path).name
    if head is None:
        return [Problem(count, None, f"{name} is missing: records cut off the end would not show")]
    if not head:
        return [
            Problem(count, None, f"{name} is unreadable: records cut off the end would not show")
        ]
    last = parsed[-1] if parsed else None
    seq = last.get("seq") if last is not None else -1
    ends_at = seq + 1 if isinstance(seq, int) else None
    recorded = head.get("records")
    if recorded == ends_at and head.get("hash") == (last or {}).get("hash"):
        return []
    if isinstance(recorded, int) and ends_at is not None and recorded > ends_at:
        what = f"{name} says the log ends with record {recorded - 1}, it ends with {ends_at - 1}: its last records were removed"
    elif isinstance(recorded, int) and ends_at is not None and recorded < ends_at:
        what = (
            f"{name} says the log ends with record {recorded - 1}, it ends with {ends_at - 1}: "
            "records were added without the log's lock, or a write was interrupted"
        )
    else:
        what = f"{name} names another last record: the last record was replaced"
    return [Problem(count, None, what)]


def _parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _read_head(path: Path) -> dict[str, Any] | None:
    head = head_path(path)
    if not head.is_file():
        return None
    try:
        data = json.loads(head.read_text())
    except (OSError, ValueError):
        return {}  # present but unreadable: compared, it matches nothing
    return data if isinstance(data, dict) else {}
