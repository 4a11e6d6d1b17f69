"""The floors of the house: an import only ever points down, and rules/ is pure."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "countersign"  # the one top-level name installed (pyproject.toml's package-dir)
FLOORS = {
    "rules": 0,
    "config": 0,
    "store": 1,
    "workflow": 2,
    "templates": 2,
    "gateway": 3,
    # gateway/ by door; what the doors share (logs, marks, metrics, offload...) lies beside.
    "gateway.mail_in": 3,
    "gateway.mail_out": 3,
    "gateway.web": 3,
    "gateway.hooks": 3,
    "scheduler": 3,
    "daemon": 4,
    "runtime": 4,
    # The command line is a door like the others, so it lives in gateway/, but it starts
    # `serve` (runtime), so it stands on the top floor.
    "gateway.cli": 4,
}
# rules/ decides from facts: nothing that does I/O, keeps time or talks to a database.
PURE_ALLOWED = {
    "__future__",
    "collections",
    "dataclasses",
    "decimal",
    "enum",
    "typing",
    "re",
    "unicodedata",
    "rules",
}


def floor_of(module: str) -> str:
    """The FLOORS entry a dotted module path stands on (ours read below `countersign.`)."""
    parts = module.split(".")
    if parts[0] == PACKAGE:
        parts = parts[1:] or parts
    two = ".".join(parts[:2])
    return two if two in FLOORS else parts[0]


def modules() -> list[tuple[str, Path]]:
    found = [("daemon", ROOT / "daemon.py"), ("runtime", ROOT / "runtime.py")]
    for package in ("rules", "config", "store", "workflow", "templates", "gateway", "scheduler"):
        for path in sorted((ROOT / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found.append((floor_of(dotted), path))
    return found


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(floor_of(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from gateway import cli` imports gateway.cli
            names.update(floor_of(f"{node.module}.{alias.name}") for alias in node.names)
    return names


@pytest.mark.parametrize(("floor", "path"), modules(), ids=lambda v: str(v))
def test_imports_point_down(floor: str, path: Path) -> None:
    upward = {name for name in imported(path) if name in FLOORS and FLOORS[name] > FLOORS[floor]}
    assert not upward, f"{path.relative_to(ROOT)} imports from a floor above: {upward}"


@pytest.mark.parametrize("path", sorted((ROOT / "rules").rglob("*.py")), ids=str)
def test_rules_are_pure(path: Path) -> None:
    outside = imported(path) - PURE_ALLOWED
    assert not outside, f"{path.relative_to(ROOT)} imports {outside}"
    assert "datetime.now" not in path.read_text() and "time.time" not in path.read_text()


DOORS = ("gateway.mail_in", "gateway.mail_out", "gateway.web", "gateway.hooks")
# The one way through a wall between doors: the pages show dates as the notices do.
ACROSS_DOORS = {("gateway.web", f"{PACKAGE}.gateway.mail_out.render")}


def door_modules() -> list[tuple[str, Path]]:
    return [(floor, path) for floor, path in modules() if floor in DOORS]


@pytest.mark.parametrize(("door", "path"), door_modules(), ids=lambda v: str(v))
def test_doors_do_not_reach_into_each_other(door: str, path: Path) -> None:
    across = {
        module
        for module in _our_modules(path)
        if floor_of(module) in DOORS and floor_of(module) != door
    }
    assert across <= {m for d, m in ACROSS_DOORS if d == door}, (
        f"{path.relative_to(ROOT)}: {across}"
    )


def top_level_imports(path: Path) -> set[str]:
    """The first name of every absolute import, as written (``countersign`` for ours)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "rules").rglob("*.py")), ids=str)
def test_rules_import_only_the_standard_library(path: Path) -> None:
    """rules/ needs nothing installed: no library, and of ours only rules/ itself."""
    outside = top_level_imports(path) - set(sys.stdlib_module_names) - {PACKAGE}
    assert not outside, f"{path.relative_to(ROOT)} imports {outside}"
    ours = {m for m in _our_modules(path) if floor_of(m) != "rules"}
    assert not ours, f"{path.relative_to(ROOT)} imports {ours}"


def _our_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == PACKAGE:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
    return found


def test_stdlib_names_are_not_shadowed() -> None:
    ours = {name.split(".")[0] for name in FLOORS}
    assert not ours & set(sys.stdlib_module_names)
