"""The end of a study: best trial, parameter importances and an optimisation-history plot,
written into the sweep directory (hpo_report.json, optimization_history.png) and printed."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.core.files import write_json_atomic
from quark.hpo.settings import StudySettings

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("quark.hpo")
REPORT_FILE = "hpo_report.json"
HISTORY_PLOT = "optimization_history.png"
# PED-ANOVA (Optuna's default evaluator) compares the best trials with the rest: with fewer
# than this, every parameter would come out equally important
MIN_TRIALS_FOR_IMPORTANCE = 3


def write_report(study: optuna.Study, settings: StudySettings, sweep_dir: Path) -> dict[str, Any]:
    """Summarise the study into `sweep_dir`, print it, and return the summary."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    report: dict[str, Any] = {
        "study_name": settings.study_name,
        "storage": settings.storage,
        "objective": settings.objective,
        "direction": settings.direction,
        "trials": dict(Counter(t.state.name.lower() for t in trials)),
        "best": None,
        "importances": None,
        "importances_note": None,
        "history_plot": None,
    }
    if completed:
        best = study.best_trial
        report["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
        }
        report["history_plot"] = str(plot_history(study, settings, sweep_dir / HISTORY_PLOT))
    report["importances"], report["importances_note"] = importances(study, len(completed))
    write_json_atomic(sweep_dir / REPORT_FILE, report)
    print_report(report, sweep_dir)
    return report


def importances(study: optuna.Study, completed: int) -> tuple[dict[str, float] | None, str | None]:
    """Parameter importances, or None and why they cannot be estimated yet."""
    if completed < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (
            f"needs {MIN_TRIALS_FOR_IMPORTANCE} completed trials, the study has {completed}"
        )
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as exc:  # e.g. no parameter varied across the trials
        return None, f"not estimated: {exc}"
    return {name: float(value) for name, value in found.items()}, None


def plot_history(study: optuna.Study, settings: StudySettings, path: Path) -> Path:
    """Optuna's optimisation-history plot (objective per trial, best so far) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        axes = plot_optimization_history(study, target_name=settings.objective)
    axes.set_title(f"{settings.study_name}: {settings.objective} ({settings.direction})")
    figure = axes.get_figure()
    assert isinstance(figure, Figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close("all")
    return path


def print_report(report: dict[str, Any], sweep_dir: Path) -> None:
    from rich.table import Table

    from quark.core.console import wide_console

    table = Table(title=f"Study {report['study_name']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("trials", ", ".join(f"{n} {state}" for state, n in report["trials"].items()))
    best = report["best"]
    if best is None:
        table.add_row("best trial", "none completed yet")
    else:
        table.add_row(
            "best trial", f"{best['number']}: {report['objective']} = {best['value']:.6g}"
        )
        for name, value in best["params"].items():
            table.add_row(f"  {name}", f"{value:.4g}" if isinstance(value, float) else str(value))
        table.add_row("  run directory", str(best["run_dir"]))
    if report["importances"]:
        for name, value in report["importances"].items():
            table.add_row(f"importance {name}", f"{value:.3f}")
    else:
        table.add_row("importances", str(report["importances_note"]))
    if report["history_plot"]:
        table.add_row("history plot", report["history_plot"])
    table.add_row("report", str(sweep_dir / REPORT_FILE))
    table.add_row("storage", report["storage"])
    wide_console().print(table)
