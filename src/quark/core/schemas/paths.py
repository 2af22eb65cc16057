"""Schema of the `paths` group: where run directories go."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class PathsSchema:
    root_dir: str = MISSING
    output_dir: str = MISSING
