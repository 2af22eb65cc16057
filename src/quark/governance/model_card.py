"""A model card in Markdown, written from the manifests of a model's run and its ancestors: what
the model is, the data and training it came from, how it measured, what it is for, its limits.

Nothing in it is typed by hand except the intended use and the limits: every fact about data,
training and lineage is read from manifest.json and config.yaml of the runs it names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.core.files import write_text_atomic
from quark.core.run import MANIFEST, read_manifest

if TYPE_CHECKING:
    from quark.governance.policy import Decision

# how far back the lineage is followed (a model trained on a model ... on data)
MAX_DEPTH = 8
# what the Model section says of the architecture, from the saved model's config.json
MODEL_KEYS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "intermediate_size", "max_position_embeddings",
)  # fmt: skip
# what the Training section says of each training run, from its config.yaml
STEP_KEYS = ("max_steps", "seq_len", "packing")
TRAINER_KEYS = ("strategy", "devices", "num_nodes", "precision", "micro_batch_size")


def write_model_card(
    path: Path,
    run_dir: Path,
    *,
    evaluation: dict[str, float] | None,
    safety: dict[str, float] | None,
    decision: Decision | None,
    intended_use: str,
    limits: list[str],
) -> Path:
    """Write the card of the model in `run_dir` to `path` (atomically); returns `path`."""
    run_dir = Path(run_dir).resolve()
    manifest = read_manifest(run_dir)
    tree = _lineage(run_dir, None, MAX_DEPTH, set())
    runs = list(_walk(tree))
    title = f"{manifest.get('experiment') or '?'} / {manifest.get('step') or '?'} / {run_dir.name}"
    parts = [
        f"# Model card: {title}",
        _model_section(run_dir, manifest),
        _data_section(runs),
        _training_section(runs),
        _evaluation_section(evaluation, decision),
        _metrics_section("Safety", safety, "No safety evaluation recorded."),
        f"## Intended use\n\n{intended_use.strip() or 'Not stated.'}",
        "## Limits\n\n" + ("\n".join(f"- {limit}" for limit in limits) or "None stated."),
        "## Lineage\n\n" + "\n".join(_lineage_lines(tree, 0)),
    ]
    path = Path(path)
    write_text_atomic(path, "\n\n".join(parts) + "\n")
    return path


class _Node:
    """A run or plain input in the lineage: its record in the reader's manifest (None for the
    model's own run), its manifest and config when it is a run, and its inputs."""

    def __init__(self, path: Path, record: dict[str, Any] | None) -> None:
        self.path = path
        self.record = record or {}
        self.manifest: dict[str, Any] | None = None
        self.config: dict[str, Any] = {}
        self.inputs: list[_Node] = []

    @property
    def step(self) -> str | None:
        return (self.manifest or {}).get("step") or self.record.get("step")


def _lineage(path: Path, record: dict[str, Any] | None, depth: int, seen: set[Path]) -> _Node:
    node = _Node(path, record)
    if not (path / MANIFEST).is_file():
        return node
    node.manifest = read_manifest(path)
    node.config = _config(path)
    if depth <= 0 or path.resolve() in seen:
        return node
    for item in node.manifest.get("inputs", []):
        if item.get("path"):
            child = Path(str(item["path"]))
            node.inputs.append(_lineage(child, item, depth - 1, seen | {path.resolve()}))
    return node


def _walk(node: _Node, reader: _Node | None = None) -> Iterator[tuple[_Node, _Node | None]]:
    """(node, the run that read it) for the tree, depth first, each path once."""
    seen: set[Path] = set()

    def visit(node: _Node, reader: _Node | None) -> Iterator[tuple[_Node, _Node | None]]:
        if node.path.resolve() not in seen:
            seen.add(node.path.resolve())
            yield node, reader
        for child in node.inputs:
            yield from visit(child, node)

    return visit(node, reader)


def _config(run_dir: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_section(run_dir: Path, manifest: dict[str, Any]) -> str:
    lines = [
        f"- Run: `{run_dir}` ({manifest.get('step')}, {manifest.get('status')}, "
        f"started {manifest.get('started_at')})",
    ]
    # the saved model's own config: a fine-tuned model's architecture is its base model's,
    # not what the run's `model` group says
    architecture = _json(run_dir / "hf" / "config.json")
    described = ", ".join(
        f"{k}={architecture[k]}" for k in MODEL_KEYS if architecture.get(k) is not None
    )
    if described:
        lines.append(f"- Architecture: {described}")
    if (run_dir / "hf").is_dir():
        lines.append(f"- Weights: `{run_dir / 'hf'}` (Hugging Face format)")
    lines.append(f"- Outputs digest: `{manifest.get('outputs_digest')}`")
    lines.append(f"- Config hash: `{manifest.get('config_hash')}`")
    versions = manifest.get("versions") or {}
    if versions:
        lines.append("- Software: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    git = manifest.get("git") or {}
    if git.get("commit"):
        dirty = " (uncommitted changes)" if git.get("dirty") else ""
        lines.append(f"- Code: git {git['commit']}{dirty}")
    return "## Model\n\n" + "\n".join(lines)


def _data_section(runs: list[tuple[_Node, _Node | None]]) -> str:
    lines = []
    for node, reader in runs:
        read_by = f", read by {reader.step} as {node.record.get('role')}" if reader else ""
        if node.step == "data" and node.manifest is not None:
            digest = _short(node.manifest.get("outputs_digest"))
            lines.append(
                f"- Data run `{node.path}` (outputs sha256 {digest}{read_by})"
                + _metric_text(node.manifest.get("metrics") or {})
            )
            for source in node.manifest.get("inputs", []):
                files = source.get("files")
                count = f", {len(files)} files" if isinstance(files, list) else ""
                lines.append(
                    f"  - {source.get('kind')} `{source.get('path')}`{count} "
                    f"(sha256 {_short(source.get('sha256'))})"
                )
        elif (
            node.manifest is None
            and "data" in str(node.record.get("role"))
            and (reader is None or reader.step != "data")  # a data run's sources: listed above
        ):
            lines.append(
                f"- {node.record.get('kind')} `{node.path}` "
                f"(sha256 {_short(node.record.get('sha256'))}{read_by})"
            )
    return "## Data\n\n" + ("\n".join(lines) or "No data run in the model's lineage.")


def _training_section(runs: list[tuple[_Node, _Node | None]]) -> str:
    from quark.core.step_registry import model_steps

    trainers = model_steps()
    blocks = []
    for node, _reader in runs:
        if node.step not in trainers or node.manifest is None:
            continue
        step_config = node.config.get("step") or {}
        trainer = node.config.get("trainer") or {}
        chosen = [(k, step_config.get(k)) for k in STEP_KEYS]
        chosen.append(("lr", (step_config.get("optim") or {}).get("lr")))
        chosen += [(k, trainer.get(k)) for k in TRAINER_KEYS]
        settings = ", ".join(f"{k}={v}" for k, v in chosen if v is not None)
        lines = [f"### {node.step}: `{node.path}`", ""]
        if settings:
            lines.append(f"- Settings: {settings}")
        overrides = node.manifest.get("overrides") or []
        if overrides:
            lines.append("- Overrides: " + " ".join(f"`{o}`" for o in overrides))
        lines.append(f"- Duration: {node.manifest.get('duration_s')} s")
        lines.append("")
        lines.append(_table(node.manifest.get("metrics") or {}))
        blocks.append("\n".join(lines))
    return "## Training\n\n" + ("\n\n".join(blocks) or "No training run in the model's lineage.")


def _evaluation_section(evaluation: dict[str, float] | None, decision: Decision | None) -> str:
    text = _metrics_section("Evaluation", evaluation, "Not evaluated.")
    if decision is None:
        return text
    verdict = "passed" if decision.passed else "refused"
    against = decision.incumbent or "no production model"
    rows = ["| rule | measured | threshold | result |", "| --- | --- | --- | --- |"]
    rows += [
        f"| {_cell(r.rule)} | {_cell(r.measured)} | {_cell(r.threshold)} | "
        f"{'pass' if r.passed else 'FAIL'} |"
        for r in decision.rules
    ]
    return (
        f"{text}\n\n### Promotion gate\n\n{decision.candidate} against {against}: {verdict}.\n\n"
        + "\n".join(rows)
    )


def _metrics_section(title: str, metrics: dict[str, float] | None, absent: str) -> str:
    return f"## {title}\n\n" + (_table(metrics) if metrics else absent)


def _lineage_lines(node: _Node, depth: int) -> list[str]:
    indent = "  " * depth
    if node.manifest is not None:
        label = (
            f"{node.step} `{node.path}` ({node.manifest.get('status')}, config "
            f"{_short(node.manifest.get('config_hash'))}, outputs sha256 "
            f"{_short(node.manifest.get('outputs_digest'))})"
        )
    else:
        label = f"{node.record.get('kind') or 'input'} `{node.path}` (sha256 {_short(node.record.get('sha256'))})"
    if node.record.get("role"):
        label += f" as {node.record['role']}"
    lines = [f"{indent}- {label}"]
    for child in node.inputs:
        lines.extend(_lineage_lines(child, depth + 1))
    return lines


def _table(metrics: dict[str, Any]) -> str:
    rows = ["| metric | value |", "| --- | --- |"]
    rows += [f"| {_cell(str(k))} | {_value(v)} |" for k, v in metrics.items()]
    return "\n".join(rows)


def _metric_text(metrics: dict[str, Any]) -> str:
    return (": " + ", ".join(f"{k}={_value(v)}" for k, v in metrics.items())) if metrics else ""


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _short(digest: Any) -> str:
    return str(digest)[:12] if digest else "?"
