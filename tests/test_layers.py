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
    # the seeds' public names (docs/compat.md), delegating to the parts through the assembly
    "compat": {"fleet", "governor", "chassis", "witness", "coordinator", "bus", "errors"},
    # the seeds' import paths: thin aliases into compat
    "event_bus": {"compat"},
    "coordination": {"compat"},
    "schemas": {"compat"},
}
#: the one exception to "lower parts never import compat": where the seeds' import path or call
#: lands in a lower part, that part resolves the seed name from compat lazily, only inside these
#: functions (or under ``if TYPE_CHECKING:``), so importing the part never imports compat
SEED_NAMES_FROM_COMPAT: dict[str, set[str]] = {
    "witness/__init__.py": {"__getattr__"},  # from infrafabric.witness import log_operation, get_operations
    "chassis/runtime.py": {"__getattr__"},  # from infrafabric.chassis.runtime import IFChassis
    "chassis/auth.py": {"__getattr__"},  # from infrafabric.chassis.auth import CredentialManager
    "governor/core.py": {"__new__"},  # IFGovernor(coordinator, policy)
}
#: front ends and tools: anything below them, never each other's internals
FRONT_ENDS = {"cli", "web", "demo", "bench", "agent"}


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


def compat_imports_outside(path: Path, functions: set[str]) -> list[int]:
    """Lines importing infrafabric.compat outside ``functions`` and ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        lazy = isinstance(node, ast.FunctionDef) and node.name in functions
        typing_only = (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                       and node.test.id == "TYPE_CHECKING")
        if lazy or typing_only:
            inside.update(id(n) for n in ast.walk(node))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in inside
            and "compat" in imported_parts_of(node)]


def imported_parts_of(node: ast.Import | ast.ImportFrom) -> set[str]:
    names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
        [node.module] if node.module and node.level == 0 else [])
    return {n.split(".")[1] for n in names if n.startswith("infrafabric.")}


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
        found = imported_parts(path)
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in SEED_NAMES_FROM_COMPAT and "compat" in found:
            lines = compat_imports_outside(path, SEED_NAMES_FROM_COMPAT[rel])
            where = SEED_NAMES_FROM_COMPAT[rel]
            assert lines == [], f"{rel}: imports compat at lines {lines}, outside {where}"
            found = found - {"compat"}
        for other in found - allowed - {part}:
            problems.append(f"{path.relative_to(PACKAGE)} ({part}) imports {other}")
    assert problems == []


def test_no_part_below_the_front_ends_imports_one() -> None:
    for path in PACKAGE.rglob("*.py"):
        if part_of(path) in FRONT_ENDS or (path.parent == PACKAGE and path.name == "__init__.py"):
            continue
        assert not imported_parts(path) & FRONT_ENDS, path
