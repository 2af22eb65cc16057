"""A run's whole ancestry, every input re-verified: what `quark lineage RUN` shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quark.core.files import files_under, sha256_file, sha256_json
from quark.core.run import MANIFEST, read_manifest

# what re-verifying an input found
UNCHANGED, CHANGED, MISSING = "unchanged", "changed", "missing"


@dataclass
class LineageNode:
    """One run (or plain input) in a lineage tree, with the inputs it read as children.

    `check` is what re-verifying this input found against the sha256 its reader recorded
    (unchanged, changed, missing); None for the root, which nothing read.
    """

    path: str
    kind: str
    role: str | None = None
    step: str | None = None
    status: str | None = None
    config_hash: str | None = None
    recorded_sha256: str | None = None
    check: str | None = None
    started_at: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] | None = None
    inputs: list[LineageNode] = field(default_factory=list)

    def changed(self) -> list[LineageNode]:
        """Every input below (and including) this node that changed or went missing, once each
        (a run read by two runs of the tree appears twice in it)."""
        found = [self] if self.check in (CHANGED, MISSING) else []
        for child in self.inputs:
            found.extend(child.changed())
        return list({node.path: node for node in found}.values())

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["inputs"] = [child.to_json() for child in self.inputs]
        return data


def lineage(run_dir: Path, max_depth: int = 16) -> LineageNode:
    """The ancestry tree of run `run_dir`: its inputs, theirs, and so on, each checked."""
    return _node(Path(run_dir), None, max_depth, set())


def _node(path: Path, record: dict[str, Any] | None, depth: int, seen: set[Path]) -> LineageNode:
    record = record or {}
    node = LineageNode(
        path=str(path),
        kind=str(record.get("kind") or ("run" if (path / MANIFEST).is_file() else "directory")),
        role=record.get("role"),
        recorded_sha256=record.get("sha256"),
        check=verify_input(path, record) if record else None,
    )
    if not (path / MANIFEST).is_file():
        return node
    manifest = read_manifest(path)
    node.kind = "run"
    node.step = manifest.get("step")
    node.status = manifest.get("status")
    node.config_hash = manifest.get("config_hash")
    node.started_at = manifest.get("started_at")
    node.versions = dict(manifest.get("versions") or {})
    node.git = manifest.get("git")
    resolved = path.resolve()
    if depth <= 0 or resolved in seen:
        return node
    for item in manifest.get("inputs", []):
        child = Path(str(item.get("path", "")))
        node.inputs.append(_node(child, item, depth - 1, seen | {resolved}))
    return node


def verify_input(path: Path, record: dict[str, Any]) -> str:
    """unchanged, changed or missing: `path` now against the sha256 `record` holds for it.

    A run is checked through its outputs (each against its own manifest, and their digest
    against the record); a corpus through its listed files; a file or directory by its content.
    """
    wanted = record.get("sha256")
    kind = str(record.get("kind") or "")
    try:
        if kind.startswith("corpus:"):
            root = path if path.is_dir() else None
            files = [root / name if root else Path(name) for name in record.get("files", [])]
            names = list(record.get("files", []))
            digest = sha256_json([(n, sha256_file(f)) for n, f in zip(names, files, strict=True)])
        elif (path / MANIFEST).is_file():
            outputs = read_manifest(path).get("outputs", [])
            pairs = [(o["path"], sha256_file(path / o["path"])) for o in outputs]
            if any(digest != o["sha256"] for (_, digest), o in zip(pairs, outputs, strict=True)):
                return CHANGED
            digest = sha256_json(pairs)
        elif path.is_file():
            digest = sha256_file(path)
        elif path.is_dir():
            digest = sha256_json(
                [(str(f.relative_to(path)), sha256_file(f)) for f in files_under(path)]
            )
        else:
            return MISSING
    except FileNotFoundError:
        return MISSING
    except OSError:
        return CHANGED
    return UNCHANGED if digest == wanted else CHANGED
