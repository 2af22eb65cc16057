"""Schema of the `paths` group: where run directories go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from quark.core.errors import ConfigError

ALLOWED = "a directory, or a path one can be made at (QUARK_OUTPUT_DIR sets it too)"


@dataclass
class PathsSchema:
    root_dir: str = MISSING
    output_dir: str = MISSING

    def check(self) -> None:
        """Run directories can be made under output_dir: it, or its nearest existing
        ancestor, is a directory this process may write to."""
        path = Path(self.output_dir).expanduser()
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            where = "is a file" if existing == path else f"is under {existing}, a file"
            raise ConfigError("paths.output_dir", f"{path} {where}", ALLOWED)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                "paths.output_dir", f"{existing} is not writable by this user", ALLOWED
            )
