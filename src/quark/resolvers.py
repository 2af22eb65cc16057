"""Quark's OmegaConf resolvers. `${quark.latest:<step>}`: the run directory a step consumes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from quark.core.errors import QuarkError


def latest_run(step: str, *, _root_: Any) -> str:
    """The run directory handed over for `step` (pipelines), else its newest completed run in
    the same experiment under paths.output_dir (quark.lineage, as steps find their inputs);
    none is an error."""
    from quark.lineage.finding import find_run

    found = find_run(_root_, (step,))
    if found is None:
        raise QuarkError(
            f"${{quark.latest:{step}}}: no completed '{step}' run in experiment "
            f"'{_root_.experiment_name}' under {_root_.paths.output_dir}; run step={step} first, "
            "or give the run directory's path"
        )
    return str(found)


# parent directory -> the run directory chosen for this process; Hydra may resolve
# hydra.run.dir more than once and must get the same answer each time.
_chosen_run_dirs: dict[str, str] = {}


def new_run_dir(parent: str) -> str:
    """`parent/<timestamp>`, with a `_2`, `_3` ... suffix if that directory exists already."""
    if parent not in _chosen_run_dirs:
        _chosen_run_dirs[parent] = str(unique_run_dir(Path(parent)))
    return _chosen_run_dirs[parent]


def unique_run_dir(parent: Path) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    candidate, n = parent / stamp, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{stamp}_{n}"
    return candidate


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("quark.latest"):
        OmegaConf.register_new_resolver("quark.latest", latest_run)
    if not OmegaConf.has_resolver("quark.new_run_dir"):
        OmegaConf.register_new_resolver("quark.new_run_dir", new_run_dir)
