"""quark.core is the bottom layer: it never imports what is built on it (steps, eval, pipeline,
launch, training, export, serve) nor torch, lightning or transformers, so that checking a config
or listing runs stays fast and no import cycle can form through core."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from ..conftest import REPO

CORE = REPO / "src" / "quark" / "core"
FORBIDDEN = (
    "quark.steps",
    "quark.eval",
    "quark.pipeline",
    "quark.launch",
    "quark.training",
    "quark.export",
    "quark.serve",
    "torch",
    "lightning",
    "pytorch_lightning",
    "transformers",
)
IMPORT_FUNCTIONS = ("import_module", "__import__")


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_forbidden(module: str) -> bool:
    return any(within(module, name) for name in FORBIDDEN)


def package_of(path: Path) -> str:
    """The package a relative import in `path` starts from: quark.core.schemas for
    src/quark/core/schemas/launch.py and for src/quark/core/schemas/__init__.py alike."""
    return ".".join(path.relative_to(REPO / "src").parts[:-1])


def imported_modules(source: str, package: str) -> Iterator[tuple[ast.AST, str]]:
    """Each import statement in `source`, at any depth (inside functions too), with each module
    it may load; also import_module("...") and __import__("...") of a literal name."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            yield node, base
            for alias in node.names:  # `from quark import steps` loads quark.steps
                yield node, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in IMPORT_FUNCTIONS and isinstance(first, ast.Constant):
                yield node, str(first.value)


def upward_imports(source: str, package: str) -> list[ast.AST]:
    """The import statements in `source` that may load a FORBIDDEN module, in order."""
    found: list[ast.AST] = []
    for node, module in imported_modules(source, package):
        if is_forbidden(module) and node not in found:
            found.append(node)
    return found


def test_no_core_file_imports_a_higher_layer_or_a_heavy_library() -> None:
    paths = sorted(CORE.rglob("*.py"))
    assert paths, f"no Python files under {CORE}"
    found = [
        f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}"
        for path in paths
        for node in upward_imports(path.read_text(), package_of(path))
    ]
    assert not found, "quark.core imports above itself:\n" + "\n".join(found)


def test_the_scan_sees_lazy_relative_and_dynamic_imports() -> None:
    # what a grep for top-level `from quark.steps` would miss
    source = (
        "import json\n"
        "from .fields import ranged\n"
        "def late():\n"
        "    from quark.eval.regression import compare\n"
        "    from ... import steps\n"
        "    import torch.nn\n"
        "    importlib.import_module('lightning')\n"
    )
    found = upward_imports(source, "quark.core.schemas")
    assert [ast.unparse(node) for node in found] == [
        "from quark.eval.regression import compare",
        "from ... import steps",
        "import torch.nn",
        "importlib.import_module('lightning')",
    ]


def test_importing_every_core_module_loads_nothing_above_core() -> None:
    # what the static scan cannot see: a core module importing a package that pulls in torch
    probe = (
        "import importlib, json, pkgutil, sys\n"
        "import quark.core\n"
        "names = [m.name for m in pkgutil.walk_packages(quark.core.__path__, 'quark.core.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'core': names, 'loaded': sorted(sys.modules)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert "quark.core.schemas.evaluate_step" in result["core"]
    loaded = [name for name in FORBIDDEN if any(within(m, name) for m in result["loaded"])]
    assert not loaded, f"importing quark.core loads {', '.join(loaded)}"
