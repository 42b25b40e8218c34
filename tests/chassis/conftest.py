"""Fixtures the sandbox tests share: a sandbox per module (with its own compile
cache) and the audit and API task modules compiled by it. A test module may
override ``sandbox`` (``test_process.py`` gives a ProcessSandbox); the modules
then come from that one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infrafabric.chassis.sandbox import CompiledModule, Runner, Sandbox

WAT = Path(__file__).parent / "wat"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    with Sandbox(cache_dir=tmp_path_factory.mktemp("modules")) as sb:
        yield sb


@pytest.fixture(scope="module")
def audit(sandbox: Runner) -> CompiledModule:
    return sandbox.compile(WAT / "task_audit.wat", name="audit")


@pytest.fixture(scope="module")
def api(sandbox: Runner) -> CompiledModule:
    return sandbox.compile(WAT / "task_api.wat", name="api")
