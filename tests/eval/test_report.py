"""report.html stands alone (inline CSS, plots embedded) and shows the verdict; the plots are
real PNGs drawn from a Lightning CSV log and from the comparisons."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from quark.core.schemas.tolerance import Tolerance
from quark.eval.regression import Comparison
from quark.eval.report import Report, baseline_bars, loss_curves, write_html

LOG = """epoch,step,train/loss,val/loss,val/ppl
0,9,3.5,,
0,19,2.5,,
0,19,,2.7,14.9
0,29,2.0,,
"""


def test_the_report_embeds_its_plots_and_names_each_regression(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text(LOG)
    curves = loss_curves(tmp_path / "metrics.csv", tmp_path / "plots" / "curves.png")
    comparisons = [
        Comparison("perplexity", 14.0, 12.0, Tolerance(5, relative=True), "lower"),
        Comparison("exact_match", 0.9, 0.8, Tolerance(0), "higher"),
    ]
    bars = baseline_bars(comparisons, tmp_path / "plots" / "bars.png")
    assert curves is not None
    write_html(
        tmp_path / "report.html",
        Report(
            title="Evaluation of <a run>",
            subtitle="model",
            metrics={"perplexity": 14.0, "exact_match": 0.9},
            notes=["a note"],
            comparisons=comparisons,
            baseline="b.yaml",
            plots={"Curves": curves, "Bars": bars},
        ),
    )
    page = (tmp_path / "report.html").read_text()
    assert "<style>" in page and "&lt;a run&gt;" in page  # escaped, not markup
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", page)
    embedded = [base64.b64decode(e) for e in re.findall(r"base64,([A-Za-z0-9+/=]+)'", page)]
    assert embedded == [curves.read_bytes(), bars.read_bytes()]
    assert all(png.startswith(b"\x89PNG") for png in embedded)
    assert "REGRESSED: 1 of 2 metrics" in page
    assert page.count("<td class='fail'>REGRESSED</td>") == 1


def test_a_log_without_loss_draws_no_curves(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,step,lr\n0,1,0.1\n")
    assert loss_curves(tmp_path / "metrics.csv", tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()
