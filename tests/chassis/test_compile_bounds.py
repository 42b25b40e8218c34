"""Compiling an untrusted module is bounded in memory and time, in its own process.

A module of many small functions costs Cranelift hundreds of bytes of memory
and microseconds per byte of wasm: the hostile-input review compiled a 3 MB
one at 748 MB and 7.8 s inside the agent. These build such modules with real
wasmtime and compile them through a real child process.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime
from click.testing import CliRunner

from infrafabric.chassis.models import CompileLimits, ResourceLimits
from infrafabric.chassis.sandbox import Sandbox
from infrafabric.cli import cli  # the package registers every command; app alone has none
from infrafabric.errors import ModuleLoadError


def many_functions(count: int) -> bytes:
    """A valid WASI command module whose cost to compile grows with ``count``
    (about 9 bytes of wasm per function)."""
    wat = ('(module (memory (export "memory") 1) (func (export "_start")) '
           + "(func (param i64) (result i64) (i64.mul (local.get 0) (i64.const 3)))" * count + ")")
    return wasmtime.wat2wasm(wat)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    # ~540 KB: some 300 MB and 5 s to compile in-process on the reference machine
    return many_functions(60_000)


def test_a_module_over_the_inline_size_compiles_in_a_worker_and_runs(tmp_path: Path) -> None:
    body = many_functions(10_000)  # ~90 KB: over the 64 KiB compiled in-process
    with Sandbox(cache_dir=tmp_path) as sb:
        module = sb.compile(body, name="big")
        result = sb.run_command(module, limits=ResourceLimits(max_execution_time_seconds=10))
        assert (module.kind, module.origin, result.exit_code) == ("command", "compiled", 0)
        assert (sb.stats.compiled, sb.stats.bounded_compiles) == (1, 1)
    # the worker's output went into the disk cache like any compile: the next process loads it
    with Sandbox(cache_dir=tmp_path) as again:
        assert again.compile(body, name="big").origin == "disk"
        assert again.stats.bounded_compiles == 0


def test_small_and_trusted_modules_compile_in_process(tmp_path: Path) -> None:
    small = many_functions(100)
    big = many_functions(10_000)
    with Sandbox(cache_dir=tmp_path) as sb:
        sb.compile(small, name="small")
        sb.compile(big, name="pinned", trusted_sha256=hashlib.sha256(big).hexdigest())
        assert (sb.stats.compiled, sb.stats.bounded_compiles) == (2, 0)


def test_a_module_needing_more_memory_is_refused(tmp_path: Path, bomb: bytes) -> None:
    with Sandbox(cache_dir=tmp_path, compile_limits=CompileLimits(memory_mb=96)) as sb:
        with pytest.raises(ModuleLoadError, match=r"'bomb' needs more than 96 MiB to compile") as caught:
            sb.compile(bomb, name="bomb")
        assert caught.value.exit_code == 2 and "--compile-memory-mb" in (caught.value.hint or "")
        assert sb.stats.compiled == 0 and not list(tmp_path.iterdir())  # nothing cached


def test_a_module_taking_too_long_is_refused(tmp_path: Path, bomb: bytes) -> None:
    limits = CompileLimits(memory_mb=4096, timeout_seconds=0.5)
    with Sandbox(cache_dir=tmp_path, compile_limits=limits) as sb, \
            pytest.raises(ModuleLoadError, match=r"'bomb' takes more than 0.5 s to compile"):
        sb.compile(bomb, name="bomb")


def test_an_invalid_large_module_is_named_by_the_worker(tmp_path: Path) -> None:
    body = many_functions(10_000)
    broken = body[: len(body) // 2]  # truncated in the code section
    with Sandbox(cache_dir=tmp_path) as sb, \
            pytest.raises(ModuleLoadError, match="'cut': malformed or truncated"):
        sb.compile(broken, name="cut")
    bad_wat = "(module " + "(func)" * 20_000 + " (oops))"
    with Sandbox(cache_dir=tmp_path) as sb, pytest.raises(ModuleLoadError, match="'typo': invalid WAT"):
        sb.compile(bad_wat, name="typo")


_MEASURE = """
import sys
from pathlib import Path
from infrafabric.chassis.models import CompileLimits
from infrafabric.chassis.sandbox import Sandbox
from infrafabric.errors import ModuleLoadError
with Sandbox(cache_dir=Path(sys.argv[2]), compile_limits=CompileLimits(memory_mb=128)) as sb:
    try:
        sb.compile(Path(sys.argv[1]), name="bomb")
    except ModuleLoadError as exc:
        print(exc.message)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the forking (pytest) process
print(next(int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def test_the_agents_own_process_does_not_pay_for_the_compile(tmp_path: Path, bomb: bytes) -> None:
    (tmp_path / "bomb.wasm").write_bytes(bomb)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path / "bomb.wasm"), str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert "needs more than 128 MiB to compile" in out[0]
    # the interpreter with wasmtime loaded is ~45 MB; compiling in-process would pass 128 MB
    assert int(out[1]) < 128, out


def test_cli_refuses_with_exit_2_and_names_the_flag(tmp_path: Path, bomb: bytes) -> None:
    (tmp_path / "bomb.wasm").write_bytes(bomb)
    result = CliRunner().invoke(cli, ["chassis", "run", str(tmp_path / "bomb.wasm"), "--memory-mb", "16",
                                      "--timeout", "2", "--compile-memory-mb", "96", "--json"])
    assert result.exit_code == 2, result.output
    reply = json.loads(result.stdout)
    assert reply["type"] == "ModuleLoadError" and "needs more than 96 MiB" in reply["error"]
    assert "Traceback" not in result.output
    bad = CliRunner().invoke(cli, ["chassis", "run", str(tmp_path / "bomb.wasm"), "--compile-timeout", "0"])
    assert bad.exit_code == 2 and "--compile-timeout" in bad.output
