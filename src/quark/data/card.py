"""The data card: what went in, what each rule removed, what came out (JSON, Markdown, PNG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_card(
    directory: Path, card: dict[str, Any], lengths: list[int] | None, bins: int
) -> list[Path]:
    """data_card.json, data_card.md and (given document lengths) doc_lengths.png."""
    written = [directory / "data_card.json", directory / "data_card.md"]
    (directory / "data_card.json").write_text(json.dumps(card, indent=2) + "\n")
    if lengths:
        _histogram(directory / "doc_lengths.png", lengths, bins)
        written.append(directory / "doc_lengths.png")
    (directory / "data_card.md").write_text(_markdown(card, has_plot=bool(lengths)))
    return written


def _histogram(path: Path, lengths: list[int], bins: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(lengths, bins=bins, color="#4477aa")
    axes.set_xlabel("tokens per document (with eos)")
    axes.set_ylabel("documents")
    axes.set_yscale("log")
    axes.set_title(f"Document lengths ({len(lengths):,} documents)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _markdown(card: dict[str, Any], has_plot: bool) -> str:
    lines = [f"# Data card: {card['name']}", ""]
    for note in card.get("notes", []):
        lines.append(f"> {note}")
    lines.append("")
    if "sources" in card:
        lines += [
            "## Sources",
            "",
            "| source | type | weight | files | documents | bytes | undecodable bytes |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in card["sources"]:
            lines.append(
                f"| {s['name']} | {s['type']} | {s['weight']} | {s['files']} | {s['documents']:,} | {s['bytes']:,} | {s['undecodable_bytes']:,} |"
            )
        lines += [
            "",
            "## Cleaning and deduplication",
            "",
            "| rule | documents removed |",
            "|---|---|",
        ]
        for rule, count in card["removed"].items():
            lines.append(f"| {rule} | {count:,} |")
        safety = card.get("safety")
        if safety:
            lines += [
                "",
                f"## Safety ({safety['guard']}: documents it blocks are {safety['action']}ped)"
                if safety["action"] == "drop"
                else f"## Safety ({safety['guard']}: documents it blocks are kept and counted)",
                "",
                "| category | documents |",
                "|---|---|",
            ]
            for category, count in sorted(safety["documents"].items()):
                lines.append(f"| {category} | {count:,} |")
            if not safety["documents"]:
                lines.append("| (none) | 0 |")
        totals = card["documents"]
        lines += [
            "",
            f"Documents in: {totals['in']:,}; kept: {totals['kept']:,}; after mixing weights: {totals['packed']:,}.",
            "",
        ]
        tok = card["tokenizer"]
        lines += [
            "## Tokenizer",
            "",
            f"{tok['origin']} byte-level BPE, vocabulary {tok['vocab_size']:,}, eos `{tok['eos_token']}` (id {tok['eos_id']}).",
            "",
        ]
        lines += ["## Tokens", "", "| split | documents | tokens | shards |", "|---|---|---|---|"]
        for name, split in card["splits"].items():
            lines.append(
                f"| {name} | {split['documents']:,} | {split['tokens']:,} | {len(split['shards'])} |"
            )
    else:
        lines += ["## Splits", "", "| split | examples |", "|---|---|"]
        for name, count in card["splits"].items():
            lines.append(f"| {name} | {count:,} |")
    if has_plot:
        lines += ["", "![document lengths](doc_lengths.png)"]
    return "\n".join(lines) + "\n"
