"""Imports point one way: front ends → the assembly → governor, chassis,
witness → coordinator → bus → errors. Checked on the source (every import
statement, including those inside functions), so a back edge fails here
before it can form a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "infrafabric"

#: what each part may import (besides itself and the standard library)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "metrics": set(),
    "bus": {"errors", "statedir"},
    "coordinator": {"bus", "errors", "metrics"},
    "witness": {"bus", "errors"},
    "governor": {"coordinator", "bus", "errors"},
    "chassis": {"coordinator", "bus", "errors"},
    "workspace": {"coordinator", "bus", "errors", "statedir"},
    "statedir": set(),
    "serving": {"errors"},
    "pki": {"errors"},
    "fleet": {"governor", "chassis", "witness", "coordinator", "bus", "errors"},
    "doctor": {"governor", "chassis", "witness", "coordinator", "bus", "errors"},
}
#: front ends and tools: anything below them, never each other's internals
FRONT_ENDS = {"cli", "web", "demo", "bench", "faults", "agent"}


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imported_parts(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name.startswith("infrafabric."):
                found.add(name.split(".")[1])
    return found


def test_imports_point_one_way() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue  # the package root re-exports lazily, for users
        part = part_of(path)
        if part in FRONT_ENDS:
            continue
        allowed = ALLOWED.get(part)
        assert allowed is not None, f"{path}: a new part; place it in ALLOWED"
        for other in imported_parts(path) - allowed - {part}:
            problems.append(f"{path.relative_to(PACKAGE)} ({part}) imports {other}")
    assert problems == []


def test_no_part_below_the_front_ends_imports_one() -> None:
    for path in PACKAGE.rglob("*.py"):
        if part_of(path) in FRONT_ENDS or (path.parent == PACKAGE and path.name == "__init__.py"):
            continue
        assert not imported_parts(path) & FRONT_ENDS, path
