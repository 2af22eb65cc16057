"""The rich console Quark prints tables to."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def wide_console() -> Console:
    """A console for tables: the terminal's width, or 160 columns when output goes to a pipe or
    log file (rich's 80-column fallback would fold every path and number)."""
    probe = Console()
    return probe if probe.is_terminal else Console(width=160)


def print_run_summary(title: str, metrics: dict[str, float], locations: dict[str, Path]) -> None:
    """The table a training step ends with: each metric (4 significant digits), then where
    its outputs are, label -> path, for those that exist."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}")
    for label, path in locations.items():
        if path.exists():
            table.add_row(label, str(path))
    wide_console().print(table)
