"""Helpers shared by tests in several folders (importable as ``support``: the
folder of the root conftest is on ``sys.path``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

#: a chassis service contract the CLI tests load (``ifctl chassis load ... --contract``)
#: commands that speak another program's protocol, not the CLI contract: `ifctl hook` is run by an
#: agent's client with its JSON on stdin and answers in the client's format, where exit 2 means
#: "block" (tests/agent/test_hooks.py holds it to that)
PROTOCOL_COMMANDS = {("hook",), ("guard", "tool")}

CONTRACT = """\
swarm_id: coder
capabilities: [code-analysis:python]
version: 1.0.0
resource_limits: {max_memory_mb: 16, max_fuel: 1000000, max_execution_time_seconds: 5}
slos: {p99_latency_ms: 5000, success_rate: 0.95, availability: 0.99}
"""


class Clock:
    """A clock tests move by hand: ``clock.now += 5``."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Seen:
    """An observer that keeps every ``(operation, params)`` it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, operation: str, params: dict[str, Any]) -> None:
        self.calls.append((operation, params))

    def ops(self, name: str) -> list[dict[str, Any]]:
        return [p for op, p in self.calls if op == name]


def start_together(commands: Sequence[Sequence[str]]) -> list[subprocess.Popen[str]]:
    """Start one process per command, wait for each to print ``ready``, then
    send every one ``go`` at once, so they race from the same moment."""
    procs = [subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd in commands]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", p.stderr.read() if p.stderr else line
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
    except BaseException:
        for p in procs:
            p.kill()
        raise
    return procs


async def assert_scan_streams(bus: Any, prefix: str, expected: int) -> None:
    """A full scan of ``prefix`` yields every one of ``expected`` entries
    once, keys in ascending order (the entries are named ``<prefix><i:08d>``)."""
    count, last = 0, ""
    async for entry in bus.scan(prefix, batch=1000):
        assert entry.key > last, (last, entry.key)
        last = entry.key
        count += 1
    assert count == expected


#: how long a test waits for the view to catch up before failing (a hang guard, not a timing check)
CATCH_UP = 15.0


async def until(view: Any, what: str, condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, re-checking after each change a dashboard
    :class:`~infrafabric.web.FleetView` reports."""
    changed = asyncio.Event()
    stop = view.listen(lambda _e, _d: changed.set())
    try:
        async with asyncio.timeout(CATCH_UP):
            while not condition():
                await changed.wait()
                changed.clear()
    except TimeoutError:
        pytest.fail(f"the view never showed {what} within {CATCH_UP:g} s")
    finally:
        stop()


def git(*args: str, cwd: Path) -> str:
    """Run the git binary in ``cwd``; its stdout, stripped (raises if git fails)."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def init_repo(top: Path, files: dict[str, str]) -> Path:
    """A git repository at ``top`` on branch main, with ``files`` (path → text) in its first commit."""
    for name, text in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text(text)
    git("init", "-q", "-b", "main", cwd=top)
    git("config", "user.email", "t@example.com", cwd=top)
    git("config", "user.name", "t", cwd=top)
    git("add", "-A", cwd=top)
    git("commit", "-q", "-m", "init", cwd=top)
    return top


#: the CLI of this environment, and a function running it (``run("board", "show", "--json")``)
IFCTL = str(Path(sys.executable).with_name("ifctl"))
Runner = Callable[..., subprocess.CompletedProcess[str]]


def ifctl_runner(bus_url: str, home: Path) -> Runner:
    """``ifctl`` as a subprocess on ``bus_url`` with ``home`` as its state directory."""
    env = {**os.environ, "IF_BUS_URL": bus_url, "IF_HOME": str(home)}

    def ifctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IFCTL, *args], capture_output=True, text=True, env=env, timeout=60)

    return ifctl


# runs the CLI's entry point as the console script does, then prints the modules it loaded
_MODULES_PROBE = textwrap.dedent("""
    import json, sys
    from infrafabric.cli import main
    sys.argv = ["ifctl", *json.loads(sys.argv[1])]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    sys.stdout.flush()
    sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
    sys.stderr.write("EXIT " + json.dumps(code) + "\\n")
""")


def ifctl_modules(args: list[str], env: dict[str, str] | None = None, *,
                  code: int = 0) -> tuple[set[str], str, str]:
    """Run ``ifctl ARGS`` through its console-script entry point in a fresh
    interpreter: (the modules it loaded, its stdout, its stderr), after
    checking it exited ``code``."""
    done = subprocess.run([sys.executable, "-c", _MODULES_PROBE, json.dumps(args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)
    tail = done.stderr.rsplit("\nMODULES ", 1)
    assert len(tail) == 2, done.stderr[-2000:]
    modules_line, exit_line = tail[1].strip().split("\n")[:2]
    assert exit_line == f"EXIT {code}", f"{args}: {exit_line}\n{done.stdout[-1000:]}\n{tail[0][-2000:]}"
    return set(json.loads(modules_line)), done.stdout, tail[0]


def top_modules(modules: set[str]) -> set[str]:
    """The top-level packages of ``modules``."""
    return {m.split(".")[0] for m in modules}


def persist_helpers(under: Path) -> list[int]:
    """The pids of the command line's persisted connections
    (``python -m infrafabric.agent.persist``) whose socket lies under ``under``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if b"infrafabric.agent.persist" in argv and len(argv) > 3:
            sock = Path(os.fsdecode(argv[argv.index(b"infrafabric.agent.persist") + 1]))
            if sock.is_relative_to(under):
                found.append(int(entry.name))
    return found
