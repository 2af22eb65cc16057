"""The steps Quark runs, one module each, imported only when their step runs.

A step module provides:

    def run(cfg: DictConfig, run: Run) -> dict[str, float]:
        '''Do the step; write artifacts through `run`; return the headline metrics.'''

and optionally

    def inputs(cfg: DictConfig) -> list[Path | dict]:
        '''Files and run directories the step reads (or records already describing them),
        verified and hashed before it starts.'''
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Built steps in lifecycle order. The rest of the ten (DESIGN.md) join as they are built.
STEPS: dict[str, str] = {
    "plan": "quark.steps.plan",
    "data": "quark.steps.data",
    "pretrain": "quark.steps.pretrain",
    "finetune": "quark.steps.finetune",
    "optimize": "quark.steps.optimize",
    "evaluate": "quark.steps.evaluate",
    "serve": "quark.steps.serve",
}

# Steps whose run is a service, not a result: a pipeline stage or sweep job never takes an
# earlier run of them instead of running (a rerun of `make demo` serves again).
NEVER_REUSED = frozenset({"serve"})


def available_steps() -> list[str]:
    return list(STEPS)


def load_step(name: str) -> ModuleType:
    return importlib.import_module(STEPS[name])
