"""The evaluation report: PNG plots and one self-contained report.html (inline CSS, the plots
embedded as base64): it opens in a browser offline, and can be mailed or archived alone.

Plots: the training and validation loss curves of the run that trained the model (its
logs/metrics.csv), and each metric compared with the baseline, when there is one.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quark.eval.regression import Comparison

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1d232a;
       max-width: 980px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
.sub { color: #5b6570; margin-top: 0; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .3em .8em; border-bottom: 1px solid #dde2e7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #17733a; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
.note { background: #f4f6f8; border-left: 3px solid #8a96a3; padding: .4em .8em; margin: .4em 0; }
img { max-width: 100%; border: 1px solid #dde2e7; margin: .5em 0; }
code { font-size: .92em; }
"""


@dataclass
class Report:
    """What report.html shows."""

    title: str
    subtitle: str
    metrics: dict[str, float]
    inputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    baseline: str | None = None
    plots: dict[str, Path] = field(default_factory=dict)  # caption -> PNG
    # caption -> (header, rows): breakdowns a step adds (the red team's, say)
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)


def loss_curves(metrics_csv: Path, out: Path) -> Path | None:
    """Training and validation loss against step from a Lightning CSV log, as a PNG; None
    when the log holds no loss."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    with open(metrics_csv, newline="") as rows:
        for row in csv.DictReader(rows):
            for name in ("train/loss", "val/loss"):
                if row.get(name) and row.get("step"):
                    steps, values = series.setdefault(name, ([], []))
                    steps.append(float(row["step"]))
                    values.append(float(row[name]))
    if not series:
        return None
    figure, axes = _figure(1, (7.0, 3.6))
    for name, (steps, values) in sorted(series.items()):
        style = {"marker": "o"} if len(values) < 30 else {}
        axes[0].plot(steps, values, label=name, **style)
    axes[0].set(xlabel="step", ylabel="loss (nats per token)", title=f"Training: {metrics_csv}")
    axes[0].title.set_fontsize(8)
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    return _save(figure, out)


def baseline_bars(comparisons: Sequence[Comparison], out: Path) -> Path:
    """One small bar chart per compared metric: the baseline, then this run (red when it
    regressed), the edge of the tolerance dashed."""
    count = len(comparisons)
    columns = min(count, 4)
    rows = math.ceil(count / columns)
    figure, axes = _figure(count, (2.6 * columns, 2.6 * rows), rows=rows, columns=columns)
    for axis, item in zip(axes, comparisons, strict=False):
        colour = "#b3261e" if item.regressed else "#17733a"
        axis.bar(["baseline", "this run"], [item.baseline, item.value], color=["#8a96a3", colour])
        allowed = item.tolerance.allowed(item.baseline)
        edge = item.baseline + allowed if item.direction == "lower" else item.baseline - allowed
        axis.axhline(edge, color="#5b6570", linestyle="--", linewidth=1)
        axis.set_title(f"{item.metric}\n({item.direction} is better)", fontsize=8)
        axis.tick_params(labelsize=8)
    return _save(figure, out)


def write_html(path: Path, report: Report) -> None:
    from quark.core.files import write_text_atomic

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(report.title)}</h1><p class='sub'>{_e(report.subtitle)}</p>",
    ]
    if report.comparisons:
        regressed = [c for c in report.comparisons if c.regressed]
        verdict = (
            f"<span class='fail'>REGRESSED: {len(regressed)} of {len(report.comparisons)} "
            "metrics worse than the baseline beyond their tolerance</span>"
            if regressed
            else f"<span class='pass'>passed: no metric worse than the baseline beyond its "
            f"tolerance ({len(report.comparisons)} compared)</span>"
        )
        parts.append(f"<p>{verdict}</p>")
    parts += [f"<p class='note'>{_e(note)}</p>" for note in report.notes]
    parts.append("<h2>Metrics</h2>")
    parts.append(_table(["metric", "value"], [[k, v] for k, v in report.metrics.items()]))
    if report.comparisons:
        parts.append(f"<h2>Against the baseline</h2><p>{_e(str(report.baseline))}</p>")
        rows = [
            [
                c.metric,
                c.value,
                c.baseline,
                c.value - c.baseline,
                str(c.tolerance),
                c.direction,
                "REGRESSED" if c.regressed else "ok",
            ]
            for c in report.comparisons
        ]
        header = ["metric", "this run", "baseline", "change", "tolerance", "better", ""]
        parts.append(_table(header, rows))
    for caption, (header, rows) in report.tables.items():
        parts.append(f"<h2>{_e(caption)}</h2>")
        parts.append(_table(header, rows))
    for caption, png in report.plots.items():
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<h2>{_e(caption)}</h2><img alt='{_e(caption)}' ")
        parts.append(f"src='data:image/png;base64,{encoded}'>")
    if report.inputs:
        parts.append("<h2>Inputs</h2>")
        parts.append(_table(["", "path"], [[k, v] for k, v in report.inputs.items()]))
    parts.append("</body></html>\n")
    write_text_atomic(path, "".join(parts))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"<td class='num'>{value:.6g}</td>"
    css = " class='fail'" if value == "REGRESSED" else ""
    return f"<td{css}>{_e(str(value))}</td>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _figure(count: int, size: tuple[float, float], rows: int = 1, columns: int = 1) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
    flat = list(axes.flat)
    for axis in flat[count:]:
        axis.set_visible(False)
    return figure, flat


def _save(figure: Any, out: Path) -> Path:
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, format="png", dpi=110)
    plt.close(figure)
    return out
