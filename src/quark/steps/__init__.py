"""The steps Quark runs, one module each, imported only when their step runs.

Each is declared once in `quark.core.step_registry` (its module, schema, and whether a
pipeline may reuse it). A step module provides:

    def inputs(cfg: DictConfig) -> Inputs:
        '''What the step reads, resolved once (quark.lineage), checked, before the run opens.'''

    def run(cfg: DictConfig, run: Run, inputs: Inputs) -> dict[str, float]:
        '''Do the step; write artifacts through `run`; return the headline metrics.'''

`Inputs` is the step's own frozen dataclass with a `recorded()` method: role -> path (or an
already-made record), verified and hashed into the manifest in that order.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from quark.core.step_registry import BY_NAME


def load_step(name: str) -> ModuleType:
    return importlib.import_module(BY_NAME[name].module)
