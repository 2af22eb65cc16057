"""The `quark` command: `quark runs` lists what ran, where, how it ended, and its key metrics;
`quark lineage RUN` shows what a run came from, every input re-verified; `quark convert` turns
a training checkpoint of any strategy into a Hugging Face directory; `quark audit` verifies and
lists the governance audit log, and signs a person's approval of a candidate model."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from quark.core.errors import QuarkError, debug_enabled, report, skip_the_last_garbage_collection


def main(argv: Sequence[str] | None = None) -> int:
    skip_the_last_garbage_collection()
    parser = argparse.ArgumentParser(prog="quark", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    runs = commands.add_parser("runs", help="list run directories and how they ended")
    runs.add_argument(
        "--outputs",
        default=os.environ.get("QUARK_OUTPUT_DIR", "outputs"),
        help="output directory (default: ./outputs)",
    )
    runs.add_argument("--experiment", "-e", help="only this experiment")
    runs.add_argument("--step", "-s", help="only this step")
    runs.add_argument(
        "--status",
        choices=("running", "completed", "failed", "interrupted"),
        help="only runs that ended so",
    )
    runs.add_argument(
        "--limit", "-n", type=int, default=50, help="newest N runs (default 50; 0 for all)"
    )
    runs.add_argument("--json", action="store_true", help="print JSON for scripts")
    lineage = commands.add_parser(
        "lineage",
        help="the ancestry of a run: every input, its inputs, ..., each re-verified by sha256",
    )
    lineage.add_argument("run", type=Path, help="a run directory (holding manifest.json)")
    lineage.add_argument("--json", action="store_true", help="print JSON for scripts")
    convert = commands.add_parser(
        "convert",
        help="write a checkpoint (one process, DDP, FSDP2 or DeepSpeed) as a Hugging Face directory",
    )
    convert.add_argument(
        "source", type=Path, help="a run directory (its checkpoints/last.ckpt) or a checkpoint"
    )
    convert.add_argument("--out", type=Path, required=True, help="new Hugging Face directory")
    convert.add_argument(
        "--config", type=Path, help="the run's config.yaml (default: found next to the checkpoint)"
    )
    _add_audit_parser(commands)
    args = parser.parse_args(argv)
    try:
        commands_run = {
            "runs": list_runs,
            "lineage": show_lineage,
            "convert": convert_checkpoint,
            "audit": audit,
        }
        return commands_run[args.command](args)
    except Exception as exc:
        if debug_enabled():
            traceback.print_exc()
        return report(exc)  # one line; 2 for bad input


def _add_audit_parser(commands: Any) -> None:
    outputs = os.environ.get("QUARK_OUTPUT_DIR", "outputs")
    audit_parser = commands.add_parser(
        "audit",
        help="the governance audit log: verify its hash chain, list it, sign an approval",
    )
    actions = audit_parser.add_subparsers(dest="audit_command", required=True)
    for name, text in (
        ("verify", "check that no record was edited, removed or reordered (exit 1 if one was)"),
        ("show", "list the records of an audit log"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "log",
            nargs="?",
            type=Path,
            help="an audit log (default: every <outputs>/*/registry/audit.jsonl)",
        )
        action.add_argument(
            "--outputs", default=outputs, help="output directory (default: ./outputs)"
        )
        if name == "show":
            action.add_argument("--json", action="store_true", help="print JSON for scripts")
    approve = actions.add_parser(
        "approve",
        help="sign an approval of a candidate model with the key in QUARK_APPROVAL_KEY "
        "(governance.approval.file)",
    )
    approve.add_argument(
        "--candidate", required=True, help="the candidate's run directory, or its outputs digest"
    )
    approve.add_argument("--approver", required=True, help="your name, as the record shows it")
    approve.add_argument("--out", type=Path, required=True, help="the approval file to write")


def audit(args: argparse.Namespace) -> int:
    """quark audit verify | show | approve."""
    if args.audit_command == "approve":
        return approve_candidate(args)
    logs = [args.log] if args.log else _audit_logs(Path(args.outputs))
    if args.audit_command == "show":
        return show_audit(logs, as_json=args.json)
    return verify_audit(logs)


def verify_audit(logs: list[Path]) -> int:
    """One line per log when its chain holds, one per problem when not; exit 1 on any problem."""
    from quark.governance.audit import verify

    broken = False
    for log in logs:
        problems = verify(log)
        if problems:
            broken = True
            for problem in problems:
                print(f"audit log {log}: {problem}")
        else:
            records = len(log.read_text().splitlines())
            print(f"audit log {log}: {records} records, chain intact")
    return 1 if broken else 0


def show_audit(logs: list[Path], as_json: bool) -> int:
    from rich.markup import escape
    from rich.table import Table

    from quark.core.console import wide_console
    from quark.governance.audit import CHAIN_KEYS, AuditLog

    if as_json:
        json.dump({str(log): AuditLog(log).records() for log in logs}, sys.stdout, indent=2)
        print()
        return 0
    console = wide_console()
    for log in logs:
        if not log.is_file():
            raise QuarkError(f"{log}: no such audit log")
        table = Table(title=f"Audit log {log}", title_justify="left")
        for column in ("seq", "time", "kind", "record"):
            table.add_column(column, overflow="fold")
        for record in AuditLog(log).records():
            payload = {k: v for k, v in record.items() if k not in CHAIN_KEYS}
            table.add_row(
                str(record.get("seq")),
                _when(str(record.get("time"))),
                str(record.get("kind")),
                escape(_summary(payload)),
            )
        console.print(table)
    return 0


def approve_candidate(args: argparse.Namespace) -> int:
    from quark.core.files import write_json_atomic
    from quark.governance.approval import KEY_VARIABLE, run_digest, sign_approval

    key = os.environ.get(KEY_VARIABLE, "")
    if not key:
        raise QuarkError(
            f"{KEY_VARIABLE} is not set: it holds the key approvals are signed with "
            "(the promoting process checks them with the same key)"
        )
    candidate = Path(args.candidate).expanduser()
    if candidate.is_dir():
        digest = run_digest(candidate)
    elif len(args.candidate) == 64 and all(c in "0123456789abcdef" for c in args.candidate):
        digest = args.candidate
    else:
        raise QuarkError(
            f"--candidate {args.candidate}: neither a run directory nor a sha256 digest "
            "(a run's outputs_digest, in its manifest.json)"
        )
    write_json_atomic(args.out, sign_approval(args.approver, digest, key))
    print(
        f"{args.out}: {args.approver} approves candidate {digest[:12]}; "
        f"use it with governance.approval.file={args.out}"
    )
    return 0


def _audit_logs(outputs: Path) -> list[Path]:
    """Every experiment's audit log under `outputs`."""
    from quark.governance.registry import AUDIT_LOG, REGISTRY_DIR

    if not outputs.is_dir():
        raise QuarkError(
            f"{outputs}: no such output directory; pass --outputs DIR or name an audit log"
        )
    logs = sorted(outputs.glob(f"*/{REGISTRY_DIR}/{AUDIT_LOG}"))
    if not logs:
        raise QuarkError(
            f"{outputs}: no audit log (*/{REGISTRY_DIR}/{AUDIT_LOG}); name one, or pass --outputs"
        )
    return logs


def _summary(payload: dict[str, Any], limit: int = 160) -> str:
    """A record's payload on one line, long values cut short."""
    parts = []
    for key, value in payload.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        parts.append(f"{key}={text if len(text) <= 60 else text[:57] + '...'}")
    line = ", ".join(parts)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def list_runs(args: argparse.Namespace) -> int:
    from quark.core.runs import find_runs

    outputs = Path(args.outputs)
    if not outputs.is_dir():
        raise QuarkError(
            f"{outputs}: no such output directory; pass --outputs DIR or run a step first"
        )
    records = find_runs(outputs, experiment=args.experiment, step=args.step, status=args.status)
    if args.limit:
        records = records[-args.limit :]
    rows = [
        {
            "experiment": r.manifest.get("experiment"),
            "step": r.manifest.get("step"),
            "started_at": r.started_at,
            "status": r.status,
            "duration_s": r.manifest.get("duration_s"),
            "metrics": r.manifest.get("metrics", {}),
            "error": (r.manifest.get("error") or {}).get("message"),
            "path": str(r.path),
        }
        for r in records
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    _print_table(rows)
    return 0


def show_lineage(args: argparse.Namespace) -> int:
    """Print the ancestry tree of a run; exit 1 when any input changed since it was read."""
    from quark.core.run import MANIFEST
    from quark.lineage.ancestry import lineage

    if not (args.run / MANIFEST).is_file():
        raise QuarkError(f"{args.run}: not a Quark run directory (no {MANIFEST})")
    tree = lineage(args.run)
    changed = tree.changed()
    if args.json:
        json.dump(tree.to_json(), sys.stdout, indent=2)
        print()
    else:
        _print_lineage(tree, changed)
    return 1 if changed else 0


def convert_checkpoint(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from quark.training.export import convert_to_hf

    transformers_logging.disable_progress_bar()  # the summary below says what was written
    # conversion runs on the CPU; transformers imports DeepSpeed (through accelerate), which
    # would otherwise probe for an accelerator and say so on stdout
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    done = convert_to_hf(args.source, args.out, args.config)
    tokenizer = done["tokenizer"] or "none found (add one with tokenizer.save_pretrained)"
    print(
        f"{args.out}: {done['parameters'] / 1e6:.2f}M parameters from the {done['format']} "
        f"checkpoint {done['checkpoint']}\n"
        f"tokenizer: {tokenizer}\n"
        f"reloaded with AutoModelForCausalLM.from_pretrained: max logit difference "
        f"{done['hf_max_logit_diff']:.3g}"
    )
    return 0


def _print_table(rows: list[dict]) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    console = wide_console()
    if not rows:
        console.print("no runs found")
        return
    table = Table(title="Quark runs", title_justify="left")
    for column in ("experiment", "step", "started", "status", "duration", "metrics", "path"):
        table.add_column(column, overflow="fold")
    colours = {"completed": "green", "failed": "red", "running": "yellow", "interrupted": "magenta"}
    for row in rows:
        status = row["status"]
        detail = row["error"] if status == "failed" and row["error"] else _metrics(row["metrics"])
        table.add_row(
            row["experiment"] or "?",
            row["step"] or "?",
            _when(row["started_at"]),
            f"[{colours.get(status, 'white')}]{status}[/]",
            f"{row['duration_s']:.1f} s" if row["duration_s"] is not None else "",
            detail,
            _relative(row["path"]),
        )
    console.print(table)


def _print_lineage(tree: Any, changed: list[Any]) -> None:
    from rich.markup import escape
    from rich.tree import Tree

    from quark.core.console import wide_console

    checks = {
        "unchanged": "[green]verified[/]",
        "changed": "[red]CHANGED[/]",
        "missing": "[red]MISSING[/]",
    }

    def label(node: Any, parent: Any = None) -> str:
        head = f"[bold]{node.step}[/] " if node.step else f"[bold]{node.kind}[/] "
        parts = [head + escape(_relative(node.path))]
        if node.role:
            parts.append(f"as {node.role}")
        if node.status:
            parts.append(node.status)
        if node.check:
            parts.append(checks.get(node.check, node.check))
        if node.config_hash:
            parts.append(f"config {node.config_hash[:12]}")
        if node.recorded_sha256:
            parts.append(f"sha256 {node.recorded_sha256[:12]}")
        lines = ["  ".join(parts)]
        # versions and commit where they differ from the run that read this one
        inherited = parent.versions if parent is not None else {}
        versions = ", ".join(
            f"{k} {v}" for k, v in node.versions.items() if v and inherited.get(k) != v
        )
        if versions:
            lines.append(f"[dim]{escape(versions)}[/]")
        same_git = parent is not None and parent.git == node.git
        if node.git and node.git.get("commit") and not same_git:
            dirty = " (uncommitted changes)" if node.git.get("dirty") else ""
            lines.append(f"[dim]git {node.git['commit'][:12]}{dirty}[/]")
        return "\n".join(lines)

    def grow(branch: Any, node: Any) -> None:
        for child in node.inputs:
            grow(branch.add(label(child, node)), child)

    root = Tree(label(tree))
    grow(root, tree)
    console = wide_console()
    console.print(root)
    if changed:
        console.print(
            f"[red]{len(changed)} input(s) changed or missing since they were read:[/] "
            + ", ".join(escape(_relative(node.path)) for node in changed)
        )


def _metrics(metrics: dict[str, float], limit: int = 3) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:limit])


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


if __name__ == "__main__":
    sys.exit(main())
