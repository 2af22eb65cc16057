"""Content hashes and atomic writes (what manifests are built from), and the check of a SQLite
file a step keeps across runs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(path: Path) -> list[Path]:
    """`path` itself if it is a file, else every file below it, sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def sha256_json(data: Any) -> str:
    """Hash of a JSON-able value, independent of key order."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def kept_file_problem(path: Path) -> str | None:
    """What keeps `path` from being a file a step keeps and creates when it is missing: a link
    to nothing, or something that is not a file; None when it is a file or is not there yet."""
    if not path.exists():
        return "is a link to nothing" if path.is_symlink() else None
    return None if path.is_file() else "is not a file"


def sqlite_problem(path: Path) -> str | None:
    """What keeps `path` from being the SQLite database a step keeps (and creates when it is
    missing), or None: a link to nothing, a directory, a file that is not a database or one cut
    short. Opened read-only: nothing is created or changed."""
    import sqlite3
    from urllib.parse import quote

    path = Path(path)
    problem = kept_file_problem(path)
    if problem or not path.exists():
        return problem
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        ) as db:
            found = db.execute("PRAGMA quick_check").fetchone()
    except sqlite3.Error as exc:
        return f"is not a readable SQLite database ({exc})"
    if not found or found[0] != "ok":
        return f"is a damaged SQLite database ({found[0] if found else 'no answer'})"
    return None
