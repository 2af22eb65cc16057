"""The rich console Quark prints tables to."""

from __future__ import annotations

from rich.console import Console


def wide_console() -> Console:
    """A console for tables: the terminal's width, or 160 columns when output goes to a pipe or
    log file (rich's 80-column fallback would fold every path and number)."""
    probe = Console()
    return probe if probe.is_terminal else Console(width=160)
