"""Regression against a baseline: which side of each metric is better, how much worse it may
get, and what a baseline file may hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quark.core.errors import ConfigError
from quark.core.schemas.tolerance import parse_tolerance
from quark.eval.regression import Baseline, compare, direction, read_baseline


def test_the_better_side_comes_from_the_name_unless_configured() -> None:
    assert direction("perplexity", {}) == "lower"
    assert direction("val_loss", {}) == "lower"
    assert direction("exact_match", {}) == "higher"
    assert direction("lm_eval/quark_arithmetic/acc", {}) == "higher"
    assert direction("lm_eval/hellaswag/acc_norm", {}) == "higher"
    assert direction("val_tokens", {}) is None  # a count: not compared
    assert direction("exact_match_samples", {}) is None
    assert direction("val_tokens", {"val_tokens": "higher"}) == "higher"


def test_tolerances_are_absolute_or_a_percentage_of_the_baseline() -> None:
    assert parse_tolerance("k", 0.5).allowed(10.0) == 0.5
    assert parse_tolerance("k", "5%").allowed(-20.0) == pytest.approx(1.0)
    for bad in ("x", -1, "-2%", True, "nan"):
        with pytest.raises(ConfigError, match=r"^k: '.*' is not a tolerance"):
            parse_tolerance("k", bad)


def test_only_a_worsening_beyond_the_tolerance_regresses() -> None:
    baseline = Baseline(Path("b.yaml"), {"perplexity": 10.0, "exact_match": 0.8, "steps": 5.0})
    measured = {"perplexity": 10.4, "exact_match": 0.9, "val_tokens": 256.0, "steps": 9.0}
    found = {c.metric: c for c in compare(measured, baseline, {"perplexity": "5%"}, 0, {})}
    assert set(found) == {"perplexity", "exact_match"}  # steps: no known better side
    assert not found["perplexity"].regressed  # 0.4 worse, 0.5 allowed
    assert not found["exact_match"].regressed  # better
    worse = compare({"perplexity": 10.6, "exact_match": 0.79}, baseline, {}, "5%", {})
    assert [(c.metric, c.regressed) for c in worse] == [
        ("perplexity", True),
        ("exact_match", False),  # 0.01 worse, 0.04 allowed
    ]
    assert compare({"perplexity": float("nan")}, baseline, {}, 1, {})[0].regressed


def test_a_tolerance_for_a_metric_not_compared_is_an_error() -> None:
    baseline = Baseline(Path("b.yaml"), {"perplexity": 10.0})
    with pytest.raises(ConfigError, match=r"step.regression.tolerances.perplexty: names no"):
        compare({"perplexity": 9.0}, baseline, {"perplexty": 1}, 0, {})
    with pytest.raises(ConfigError, match=r"shares no comparable metric"):
        compare({"exact_match": 0.5}, baseline, {}, 0, {})


def test_a_baseline_is_a_run_or_a_yaml_or_json_file(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("perplexity: 12.5\nexact_match: 1\n")
    assert read_baseline(str(tmp_path / "b.yaml")).metrics == {
        "perplexity": 12.5,
        "exact_match": 1.0,
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"status": "completed", "metrics": {"a": 1}}))
    assert read_baseline(str(run)) == Baseline(run, {"a": 1.0})
    (tmp_path / "metrics.json").write_text('{"val_loss": 2.0}')
    assert read_baseline(str(tmp_path / "metrics.json")).metrics == {"val_loss": 2.0}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("perplexity: [1, 2\n", r"is not YAML \("),
        ("- 1\n- 2\n", "holds no mapping of metric names to numbers"),
        ("", "holds no mapping of metric names to numbers"),
        ("perplexity: low\n", "the value of 'perplexity' is 'low', not a number"),
    ],
)
def test_a_malformed_baseline_is_bad_input(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "baseline.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^step.regression.baseline: .*{problem}"):
        read_baseline(str(path))
    with pytest.raises(ConfigError, match="is not a run directory"):
        read_baseline(str(tmp_path))
