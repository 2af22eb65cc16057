"""docs/pillars.md: every module, config group, test file and test function it names exists,
all 21 pillars have a row (10 and 14 empty: the seed never names them), and the cross-cutting
groups it lists are the ones `python launch.py --help` lists as pillars."""

from __future__ import annotations

import ast
import importlib.util
import re

import yaml

from .conftest import REPO

PAGE = REPO / "docs" / "pillars.md"
NEVER_NAMED = {10, 14}


def table(heading: str) -> list[list[str]]:
    """The rows of the first Markdown table after `heading`, as lists of cells."""
    text = PAGE.read_text()
    section = text[text.index(heading) :]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # without the header


def named(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_every_pillar_has_a_row_and_the_unnamed_ones_map_nothing() -> None:
    rows = table("## The map")
    assert [int(row[0]) for row in rows] == list(range(1, 22))
    for row in rows:
        if int(row[0]) in NEVER_NAMED:
            assert "never named" in row[1] and not any(row[2:])
        else:
            assert all(row[1:]), f"pillar {row[0]} maps nothing in some column"


def test_every_config_group_module_and_test_named_exists() -> None:
    for number, _name, groups, modules, tests, command in table("## The map"):
        for group in named(groups):
            assert (REPO / "conf" / group).is_dir(), f"pillar {number}: no config group {group}"
        for module in named(modules):
            assert importlib.util.find_spec(module) is not None, f"pillar {number}: no {module}"
        for test in named(tests):
            path, _, function = test.partition("::")
            assert (REPO / path).is_file(), f"pillar {number}: no {path}"
            if function:
                tree = ast.parse((REPO / path).read_text())
                defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
                assert function in defined, f"pillar {number}: {path} has no {function}"
        if named(command):
            assert named(command)[0].split()[0] in ("python", "quark", "curl"), number


def test_the_cross_cutting_groups_are_the_ones_help_lists_as_pillars() -> None:
    rows = table("## Cross-cutting pillars are config groups")
    groups = [named(row[0])[0] for row in rows]
    for group, row in zip(groups, rows, strict=True):
        assert (REPO / "conf" / group).is_dir(), group
        override = named(row[2])[0]
        option = override.split("=", 1)[1]
        assert (REPO / "conf" / group / f"{option}.yaml").is_file(), override
    help_page = yaml.safe_load((REPO / "conf" / "hydra" / "help" / "quark.yaml").read_text())
    listed = [line.split()[0] for line in help_page["pillars"].splitlines()[1:] if line.strip()]
    assert listed[: len(groups)] == groups
