"""Run directories made by hand through quark.core.run, for lineage tests: no training needed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from quark.core.run import Run, describe_input

MakeRun = Callable[..., Path]


@pytest.fixture
def make_run(tmp_path: Path) -> MakeRun:
    """make_run(step, files={relative path: text}, inputs={role: path}, status=..., experiment=...)
    -> a run directory under tmp_path/outputs with those outputs and verified inputs."""
    counter = iter(range(1000))

    def make(
        step: str,
        files: dict[str, str] | None = None,
        inputs: dict[str, Path] | None = None,
        status: str = "completed",
        experiment: str = "exp",
    ) -> Path:
        cfg = OmegaConf.create({"step": {"name": step}, "experiment_name": experiment, "seed": 0})
        records = [{"role": r, **describe_input(p)} for r, p in (inputs or {}).items()]
        directory = tmp_path / "outputs" / experiment / step / f"run{next(counter):03d}"
        run = Run.open(directory, cfg, inputs=records, overrides=[])
        for name, text in (files or {}).items():
            run.path(name).write_text(text)
        for top in dict.fromkeys(name.split("/")[0] for name in files or {}):
            run.add_output(top)
        if status == "completed":
            run.complete({})
        elif status == "failed":
            run.fail(RuntimeError("boom"))
        time.sleep(0.01)  # distinct start times
        return run.dir

    return make


def hf_files(vocab: int = 50, chat: bool = False) -> dict[str, str]:
    """The files of a Hugging Face model directory under hf/ (weights are stand-in bytes: the
    lineage only looks at which files exist and at the JSON ones)."""
    tokenizer_config = {"chat_template": "{{ messages }}"} if chat else {}
    return {
        "hf/config.json": json.dumps({"vocab_size": vocab, "max_position_embeddings": 64}),
        "hf/model.safetensors": "weights",
        "hf/tokenizer.json": json.dumps({"model": {"vocab": {"a": 0}}}),
        "hf/tokenizer_config.json": json.dumps(tokenizer_config),
    }


def cfg_for(outputs: Path, experiment: str = "exp", **step: object) -> object:
    """A config as steps see it: experiment, output directory, handed-over inputs, step keys."""
    return OmegaConf.create(
        {
            "experiment_name": experiment,
            "paths": {"output_dir": str(outputs)},
            "inputs": step.pop("inputs", {}),
            "step": step,
        }
    )
