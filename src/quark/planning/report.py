"""The planner's terminal report: three rich tables from a plan.json dictionary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from quark.core.console import wide_console


def print_plan(plan: dict[str, Any], console: Console | None = None) -> None:
    console = console or wide_console()
    model, params, compute = plan["model"], plan["parameters"], plan["compute"]
    hardware, time, memory = plan["hardware"], plan["time"], plan["memory"]

    summary = Table(title=f"Plan: {model['name']}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    rows = [
        ("parameters", _count(params["total"])),
        (
            "  embedding / non-embedding",
            f"{_count(params['embedding'])} / {_count(params['non_embedding'])}",
        ),
        (
            "shape",
            f"{model['num_layers']} layers, hidden {model['hidden_size']}, heads {model['num_heads']}/{model['num_kv_heads']} kv, ffn {model['intermediate_size']}, vocab {model['vocab_size']}",
        ),
        (
            "training FLOPs per token",
            f"{compute['flops_per_token']:.3g} (seq len {compute['seq_len']})",
        ),
        (
            "token budget",
            f"{_count(compute['tokens'])} (compute-optimal {_count(compute['compute_optimal_tokens'])})",
        ),
        ("total training FLOPs", f"{compute['total_flops']:.3g}"),
        (
            "hardware",
            f"{hardware['devices']} x {hardware['num_nodes']} node(s) of {hardware['device']}, {hardware['memory_gb']:.0f} GiB, peak {hardware['peak_flops'] / 1e12:.1f} TFLOP/s",
        ),
        (
            "throughput at MFU",
            f"{time['tokens_per_second']:,.0f} tokens/s at {hardware['mfu']:.0%}",
        ),
        (
            "wall time",
            f"{_duration(time['seconds'])} ({time['steps']:,} steps of {time['tokens_per_step']:,} tokens)",
        ),
    ]
    for key, value in rows:
        summary.add_row(key, value)
    console.print(summary)

    table = Table(
        title=f"Memory per device (GiB), usable {hardware['usable_memory_gb']:.1f}",
        title_justify="left",
    )
    for name in (
        "strategy",
        "weights",
        "grads",
        "optimizer",
        "working",
        "activations",
        "total",
        "fits",
        "max micro-batch",
        "host/node",
    ):
        table.add_column(name, justify="left" if name == "strategy" else "right", no_wrap=True)
    chosen = memory["chosen"]["strategy"]
    for row in [memory["chosen"], *[r for r in memory["strategies"] if r["strategy"] != chosen]]:
        marker = " (chosen)" if row is memory["chosen"] else ""
        table.add_row(
            row["strategy"] + marker,
            _gib(row["weights_gb"]),
            _gib(row["gradients_gb"]),
            _gib(row["optimizer_gb"]),
            _gib(row["working_gb"]),
            _gib(row["activations_gb"]),
            _gib(row["total_gb"]),
            "[green]yes[/]" if row["fits"] else "[red]no[/]",
            str(row["max_micro_batch"]),
            _gib(row["host_per_node_gb"]),
        )
    console.print(table)


def _gib(value: float) -> str:
    return "0" if value == 0 else f"{value:.3g}"


def _count(value: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
