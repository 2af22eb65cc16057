"""The command-line paths that do not train never import torch, lightning or transformers
(each costs about 4 s here): --help, --cfg job, quark runs, step=plan and step=data; and an
export of a model trained without DeepSpeed does not import DeepSpeed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ITEM_DATA, REPO, write_item_corpus

HEAVY = ("torch", "lightning", "transformers", "deepspeed")
PROBE = """
import atexit, runpy, sys
def report():
    heavy = [m for m in {heavy!r} if m in sys.modules]
    sys.stderr.write("HEAVY=" + ",".join(heavy) + "\\n")
atexit.register(report)
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def heavy_modules(script: str, argv: list[str], outputs: Path) -> list[str]:
    code = PROBE.format(heavy=HEAVY, argv=[script, *argv], script=script)
    env = {**os.environ, "QUARK_OUTPUT_DIR": str(outputs)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("HEAVY=")][-1]
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--cfg", "job"],
        ["step=plan", "model=llama_1b", "trainer=deepspeed_zero3"],
        ["pipeline=capacity"],
    ],
    ids=["help", "cfg-job", "plan", "pipeline-of-plans"],
)
def test_launch_paths_stay_light(argv: list[str], tmp_path: Path) -> None:
    assert heavy_modules("launch.py", argv, tmp_path) == []


def test_quark_runs_stays_light(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "launch.py", "step=plan"],
        cwd=REPO,
        env={**os.environ, "QUARK_OUTPUT_DIR": str(tmp_path)},
        check=True,
        capture_output=True,
    )
    cli = Path(__file__).resolve().parents[1] / "src" / "quark" / "cli.py"
    assert heavy_modules(str(cli), ["runs", "--outputs", str(tmp_path)], tmp_path) == []


def test_the_data_step_stays_light(tmp_path: Path) -> None:
    corpus = write_item_corpus(tmp_path / "corpus", files=10)
    argv = [*ITEM_DATA, f"data.sources.0.paths=[{corpus}/*.txt]"]
    assert heavy_modules("launch.py", argv, tmp_path) == []


def test_exporting_a_model_leaves_deepspeed_unimported(tmp_path: Path) -> None:
    """save_pretrained would import DeepSpeed (1.2 s) through accelerate to unwrap the model;
    a run that trained without it does not pay for it at export (quark.models.hf.save_model, which
    every export of a whole model goes through)."""
    code = f"""
import sys, torch
from pathlib import Path
from quark.models.llama import build_llama
from quark.training.export import export_hf
model = build_llama(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2,
                    intermediate_size=32, max_seq_len=32).eval()
export_hf(model, Path({str(tmp_path / "hf")!r}), None, torch.randint(0, 64, (1, 8)))
print("deepspeed" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "hf" / "model.safetensors").is_file()
