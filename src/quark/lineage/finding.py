"""The run a step reads, found one way for every step and for `${quark.latest:<step>}`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError
from quark.core.run import MANIFEST, read_manifest, verify_run

# how far back through inputs a search goes (optimize -> finetune -> pretrain -> data is 3)
MAX_DEPTH = 8


def find_run(
    cfg: Any,
    steps: Sequence[str],
    *,
    key: str | None = None,
    holds: Callable[[Path], bool] | None = None,
    ancestor_of: Path | None = None,
    handed_steps: Sequence[str] | None = None,
    allowed: str = "give a run directory or path",
) -> Path | None:
    """The run (or directory) a step reads, the first found of:

    1. `cfg.<key>` when it is set: a path the user named, which must exist, and be a completed
       run whose outputs are intact if it is a run (not filtered by `holds`: the step checks
       it, so that its error names the key);
    2. the run a pipeline handed over (cfg.inputs) for the first of `handed_steps` (default:
       `steps`) whose run `holds`;
    3. the nearest ancestor of `ancestor_of` (through its manifest's inputs, breadth first)
       that is a run of one of `steps`, or a plain directory, and `holds` (the data a model
       was trained on);
    4. the newest completed run in cfg's experiment of the first of `steps` that has one
       that `holds`.

    None when nothing is found; the caller says what was wanted (`missing`).
    """
    if key is not None:
        named = _select(cfg, key)
        if named:
            path = Path(str(named)).expanduser()
            if not path.exists():
                raise ConfigError(key, f"{path} does not exist", allowed)
            if (path / MANIFEST).exists():
                verify_run(path, key, allowed)  # a run is read only once it completed, intact
            return path
    accepted = holds or (lambda _path: True)
    handed = cfg.get("inputs") or {}
    for step in steps if handed_steps is None else handed_steps:
        if handed.get(step) and accepted(Path(str(handed[step]))):
            return Path(str(handed[step]))
    if ancestor_of is not None:
        # a plain directory among the inputs (no step) counts when it holds what is wanted
        found = nearest_ancestor(
            ancestor_of, lambda path, step: step in (None, *steps) and accepted(path)
        )
        if found is not None:
            return found
    return newest_completed(cfg, steps, accepted)


def newest_completed(
    cfg: Any, steps: Sequence[str], holds: Callable[[Path], bool] | None = None
) -> Path | None:
    """The newest completed run in cfg's experiment of the first of `steps` that has one
    that `holds`."""
    from quark.core.runs import find_runs

    output_dir, experiment = cfg.paths.output_dir, str(cfg.experiment_name)
    for step in steps:
        for record in reversed(find_runs(output_dir, experiment, step, "completed")):
            if holds is None or holds(record.path):
                return record.path
    return None


def missing(cfg: Any, key: str, what: str, allowed: str) -> ConfigError:
    """The error for a run that was not named and not found."""
    return ConfigError(
        key,
        f"no completed {what} in experiment '{cfg.experiment_name}' under {cfg.paths.output_dir}",
        allowed,
    )


def ancestors(source: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, the input record naming it) for every input of run `source`, then theirs,
    breadth first, each once; plain directories and files end a branch."""
    queue, seen = [(Path(source), 0)], {Path(source).resolve()}
    while queue:
        run, depth = queue.pop(0)
        if depth >= MAX_DEPTH or not (run / MANIFEST).is_file():
            continue
        for item in read_manifest(run).get("inputs", []):
            path = Path(str(item.get("path", "")))
            if not item.get("path") or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            yield path, item
            queue.append((path, depth + 1))


def nearest_ancestor(source: Path, holds: Callable[[Path, str | None], bool]) -> Path | None:
    """The first ancestor of run `source` (breadth first) for which holds(path, step) is true."""
    for path, item in ancestors(source):
        if holds(path, item.get("step")):
            return path
    return None


def holds_shards(directory: Path) -> bool:
    """Whether `directory` is a data run of a corpus: token shards with their index."""
    return (directory / "shards" / "index.json").is_file()


def holds_split(directory: Path, split: str) -> bool:
    """Whether `directory` holds <split>.jsonl (a task set's train, val or test split)."""
    return (directory / f"{split}.jsonl").is_file()


def _select(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    return node
