"""Every runnable example in the documentation runs.

A runnable example is a fenced block in ``README.md`` or ``docs/**/*.md`` that
opens with ```` ```python ```` and whose first line is ``# example: <name>``,
or opens with ```` ```sh ```` (or ``bash``) and whose first line is
``# example-shell: <name>`` (run with ``bash -e -o pipefail``). Other blocks
are illustrations and are not run.

Each example runs in a fresh subprocess from the repository root, against the
session's real ``nats-server`` in a namespace of its own, with a fresh
``IF_HOME`` (an empty directory) and ``IF_CACHE_DIR``, the virtualenv's ``bin`` first on ``PATH``
(so ``ifctl`` and ``python`` are this checkout's), and must exit 0. The
examples start together, a few at a time, when the first of them is needed,
slowest first, so the whole file takes well under a minute (about 25 s of
CPU in all).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from infrafabric.bus.servers import NatsServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"#\s*(?P<kind>example|example-shell):\s*(?P<name>[\w.-]+)")
TIMEOUT = 60
PARALLEL = 4


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    kind: str  # "python" or "shell"
    name: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}::{self.name}"


def collect() -> list[Example]:
    found: list[Example] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            body = m["body"]
            marker = MARKER.match(body.split("\n", 1)[0].strip())
            if marker is None:
                continue
            line = text.count("\n", 0, m.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            kind = "python" if marker["kind"] == "example" else "shell"
            wanted = ("python",) if kind == "python" else ("sh", "bash", "shell")
            assert m["lang"] in wanted, f"{where}: '# {marker['kind']}:' needs a ```{wanted[0]} block"
            found.append(Example(path, line, kind, marker["name"], body))
    return found


EXAMPLES = collect()


def test_examples_are_found_and_named_uniquely() -> None:
    assert len(EXAMPLES) >= 10, [e.id for e in EXAMPLES]
    ids = [e.id for e in EXAMPLES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_marker_is_in_a_runnable_block() -> None:
    """A typo in a fence's language must not silently drop an example."""
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        in_blocks = sum(1 for m in FENCE.finditer(text) if MARKER.match(m["body"].split("\n", 1)[0].strip()))
        markers = len(re.findall(r"^# example(?:-shell)?:", text, re.MULTILINE))
        where = path.relative_to(ROOT)
        assert in_blocks == markers, f"{where}: a '# example' marker is not the first line of a block"


@dataclass
class Run:
    returncode: int | None
    output: str
    seconds: float


def run(example: Example, bus_url: str) -> Run:
    with tempfile.TemporaryDirectory(prefix="if-doc-") as tmp:
        (Path(tmp) / "home").mkdir()  # as after `export IF_HOME=$(mktemp -d)`
        env = {k: v for k, v in os.environ.items() if not k.startswith("IF_")}
        env.update(
            # a generous deadline: a loaded CI machine must not turn a slow fsync into a failure
            IF_BUS_URL=f"{bus_url}?namespace=doc{uuid.uuid4().hex[:10]}&timeout=20",
            IF_HOME=str(Path(tmp) / "home"),
            IF_CACHE_DIR=str(Path(tmp) / "cache"),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
        )
        if example.kind == "python":
            script = Path(tmp) / f"{example.name}.py"
            script.write_text(example.code)
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-e", "-o", "pipefail", "-c", example.code]
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return Run(None, out + f"\n(timed out after {TIMEOUT} s)", time.monotonic() - started)
        return Run(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def launched(request: pytest.FixtureRequest, nats_server: NatsServer) -> Iterator[dict[str, Future[Run]]]:
    """Start every selected example now, ``PARALLEL`` at a time."""
    selected = {item.callspec.id for item in request.session.items
                if item.path == Path(__file__) and hasattr(item, "callspec")}
    pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="doc-example")
    # the slowest first (shell examples start several `ifctl` processes each), so the pool ends sooner
    ordered = sorted((e for e in EXAMPLES if e.id in selected), key=lambda e: e.kind != "shell")
    futures = {e.id: pool.submit(run, e, nats_server.url) for e in ordered}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.engine
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_runs(example: Example, launched: dict[str, Future[Run]]) -> None:
    result = launched[example.id].result(timeout=TIMEOUT * len(EXAMPLES))
    assert result.returncode == 0, (
        f"{example.path.relative_to(ROOT)}:{example.line}: example {example.name!r} "
        f"exited {result.returncode} after {result.seconds:.1f} s:\n{result.output}")
