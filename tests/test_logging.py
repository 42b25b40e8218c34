"""The library reports on the ``infrafabric`` logger; only front ends write to the terminal.

Checked on the source: outside the front ends and tools (``cli``, ``bench``,
``faults``, ``demo``), no ``print(...)``, ``sys.stdout.write``/``sys.stderr.write``
or ``warnings.warn`` anywhere but the few entry points listed in
:data:`ENTRY_POINTS` (child processes' and hooks' ``main``, whose output is
their protocol or usage). A module with something to report uses
``logging.getLogger(__name__)``; the CLI decides what reaches the terminal.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "infrafabric"
#: parts that own a terminal (or are tools run from one): they may print
FRONT_ENDS = {"cli", "bench", "faults", "demo"}
#: ``module path:function`` that may write to stdout/stderr: entry points of processes whose
#: output is the interface (a hook's answer to its client, a child's usage or refusal to its parent)
ENTRY_POINTS = {
    "agent/hooks.py:main",  # `ifctl hook`: the client reads stdout and stderr
    "agent/hooks.py:_bad",
    "agent/toolguard.py:main",  # `ifctl guard tool`: the same, before every tool call
    "agent/toolguard.py:_bad",
    "chassis/compiler.py:main",  # child: the module on stdout, a refusal on stderr
    "chassis/process.py:serve",  # child: its usage
    "chassis/worker.py:main",  # child: its usage
}
STREAMS = {"sys.stdout.write", "sys.stderr.write", "sys.stdout.buffer.write", "sys.stderr.buffer.write"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def terminal_writes(source: str) -> list[tuple[str, int, str]]:
    """Each ``(innermost enclosing function, line, call)`` that writes to the terminal."""
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call):
                name = _dotted(child.func)
                if name in ("print", "pprint", "pprint.pprint", "warnings.warn") or name in STREAMS:
                    found.append((function, child.lineno, name))
            visit(child, function)

    visit(ast.parse(source), "<module>")
    return found


def library_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in FRONT_ENDS]


def test_the_library_logs_instead_of_printing() -> None:
    stray: list[str] = []
    allowed_seen: set[str] = set()
    for path in library_modules():
        rel = path.relative_to(PACKAGE).as_posix()
        for function, line, call in terminal_writes(path.read_text(encoding="utf-8")):
            where = f"{rel}:{function}"
            if where in ENTRY_POINTS:
                allowed_seen.add(where)
            else:
                stray.append(f"src/infrafabric/{rel}:{line}: {call}(...) in {function}")
    assert not stray, ("library code reports through logging.getLogger(__name__), not the terminal "
                       "(or, for a new process entry point, list it in ENTRY_POINTS):\n" + "\n".join(stray))
    assert allowed_seen == ENTRY_POINTS, f"no longer write to the terminal: {ENTRY_POINTS - allowed_seen}"


@pytest.mark.parametrize("source", [
    # what the governor did before it logged
    'class G:\n    async def trip(self, s, r):\n'
    '        print(f"infrafabric: circuit breaker OPEN for {s}: {r}", file=sys.stderr)\n',
    "def f():\n    sys.stderr.write('oops\\n')\n",
    "import warnings\nwarnings.warn('careful')\n",
])
def test_the_check_finds_terminal_writes(source: str) -> None:
    assert len(terminal_writes(source)) == 1
    assert terminal_writes("import logging\nlogging.getLogger(__name__).warning('x %s', 1)\n") == []


def test_the_hooks_hot_path_does_not_import_logging() -> None:
    """``ifctl hook`` and ``ifctl guard tool`` run as a process per tool call: importing
    ``logging`` costs them ~7 ms (about a third of their import time), so neither
    ``infrafabric/__init__`` nor the hooks' modules import it (the library adds no
    ``NullHandler`` for that reason; modules that log import ``logging`` themselves)."""
    code = ("import sys, infrafabric.agent.hooks, infrafabric.agent.toolguard; "
            "print('logging' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
