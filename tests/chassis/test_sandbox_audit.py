"""Audit of the sandbox: what untrusted code must not be able to do, each case next to a
positive control showing the same module or path works when it is allowed.

After every test the shared sandbox must still run a normal task (the host survives).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime

from infrafabric.chassis.models import DirectoryGrant, ResourceLimits, WasiGrants
from infrafabric.chassis.sandbox import CompiledModule, Sandbox, run_details
from infrafabric.chassis.worker import WorkerSandbox
from infrafabric.errors import (
    ForbiddenImportError,
    GuestTrapError,
    ModuleLoadError,
    OutOfFuelError,
    OutOfMemoryError,
    SandboxError,
    SandboxTimeoutError,
)

WAT = Path(__file__).parent / "wat"
WASI_EBADF = 8
WASI_ENOTSOCK = 57
SMALL = ResourceLimits(max_memory_mb=4, max_fuel=5_000_000, max_execution_time_seconds=5)


@pytest.fixture(autouse=True)
def host_survives(sandbox: Sandbox) -> Iterator[None]:
    yield
    echo = sandbox.compile(WAT / "task_echo.wat", name="echo")
    assert sandbox.run_task(echo, {"still": "alive"}).output == {"still": "alive"}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``granted/data.txt`` inside, ``secret.txt`` next to the granted directory."""
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "data.txt").write_text("granted data\n")
    (tmp_path / "secret.txt").write_text("host secret\n")
    return granted


# -- files ------------------------------------------------------------------------------------------


def test_no_file_access_without_a_grant(sandbox: Sandbox, tree: Path) -> None:
    files = sandbox.compile(WAT / "cmd_files.wat", name="files")
    denied = sandbox.run_command(files)
    assert denied.exit_code == WASI_EBADF and denied.stdout == b""
    grants = WasiGrants(directories=[DirectoryGrant(host=str(tree), guest=".")])
    granted = sandbox.run_command(files, grants=grants)
    assert granted.exit_code == 0 and granted.stdout == b"granted data\n"


def test_read_only_grant_refuses_writes(sandbox: Sandbox, tree: Path) -> None:
    files = sandbox.compile(WAT / "cmd_files.wat", name="files")
    read_only = WasiGrants(directories=[DirectoryGrant(host=str(tree), guest=".")])
    assert sandbox.run_command(files, argv=["w"], grants=read_only).exit_code != 0
    assert not (tree / "out.txt").exists()
    writable = WasiGrants(directories=[DirectoryGrant(host=str(tree), guest=".", read_only=False)])
    assert sandbox.run_command(files, argv=["w"], grants=writable).exit_code == 0
    assert (tree / "out.txt").read_text() == "written\n"


def test_granted_directory_cannot_be_escaped(sandbox: Sandbox, tree: Path) -> None:
    files = sandbox.compile(WAT / "cmd_files.wat", name="files")
    grants = WasiGrants(directories=[DirectoryGrant(host=str(tree), guest=".", read_only=False)])
    escape = sandbox.run_command(files, argv=["e"], grants=grants)
    assert escape.exit_code != 0 and b"host secret" not in escape.stdout
    assert sandbox.run_command(files, argv=["r"], grants=grants).stdout == b"granted data\n"


# -- environment and argv ---------------------------------------------------------------------------


def test_no_host_environment_or_argv(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IF_AUDIT_SECRET", "hunter2")
    env = sandbox.compile(WAT / "cmd_env.wat", name="envdump")
    bare = sandbox.run_command(env)
    assert bare.exit_code == 0
    assert bare.stdout == b"|envdump\0"
    granted = sandbox.run_command(env, argv=["x"], grants=WasiGrants(env={"VISIBLE": "yes"}))
    assert granted.exit_code == 1
    assert granted.stdout == b"VISIBLE=yes\0|envdump\0x\0"
    assert b"hunter2" not in bare.stdout + granted.stdout


# -- network ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sock_open", "sock_connect", "sock_bind", "sock_listen"])
def test_no_import_can_create_a_socket(sandbox: Sandbox, name: str) -> None:
    wat = (f'(module (import "wasi_snapshot_preview1" "{name}" (func (param i32 i32 i32) (result i32)))'
           ' (memory (export "memory") 1) (func (export "_start")))')
    refused = rf"wasi_snapshot_preview1\.{name}.*no socket can be created"
    with pytest.raises(ForbiddenImportError, match=refused):
        sandbox.compile(wat, name="net")
    # even a contract listing it cannot grant it
    with pytest.raises(ForbiddenImportError):
        sandbox.compile(wat, name="net", allowed_imports=[("wasi_snapshot_preview1", "*")])


def test_socket_module_refused_while_the_same_module_without_sockets_loads(sandbox: Sandbox) -> None:
    with pytest.raises(ForbiddenImportError, match="module 'net'"):
        sandbox.compile(WAT / "forbidden_socket.wat", name="net")
    text = (WAT / "forbidden_socket.wat").read_text()
    without = text.replace(
        '(import "wasi_snapshot_preview1" "sock_open" (func $open (param i32 i32 i32) (result i32)))', ""
    ).replace("(drop (call $open (i32.const 1) (i32.const 1) (i32.const 0)))", "")
    module = sandbox.compile(without, name="net")
    assert sandbox.run_command(module).exit_code == 0


def test_linked_socket_calls_find_no_socket(sandbox: Sandbox, tree: Path) -> None:
    # wasi-libc programs import these; they act only on sockets the host hands over, and it hands over none
    sockets = sandbox.compile(WAT / "cmd_sockets.wat", name="sockets")
    bare = sandbox.run_command(sockets)
    assert bare.exit_code == 0 and len(bare.stdout) == 4
    assert all(errno != 0 for errno in bare.stdout)
    granted = sandbox.run_command(sockets, grants=WasiGrants(directories=[DirectoryGrant(host=str(tree),
                                                                                         guest=".")]))
    assert list(granted.stdout) == [WASI_ENOTSOCK] * 4


# -- memory -----------------------------------------------------------------------------------------


def test_memory_bomb_is_stopped(sandbox: Sandbox, audit: CompiledModule) -> None:
    with pytest.raises(OutOfMemoryError, match="module 'audit'") as info:
        sandbox.run_task(audit, 2, limits=SMALL)
    assert info.value.limit == "memory"
    # the guest saw memory.grow return -1 and could report it itself
    assert sandbox.run_task(audit, 3, limits=SMALL).output == "grow refused"
    # control: a modest growth under the same limit is fine
    assert sandbox.run_task(audit, 8, limits=SMALL).output == "ok"


def test_initial_memory_above_the_limit_is_refused(sandbox: Sandbox) -> None:
    wat = (WAT / "task_audit.wat").read_text().replace('(memory (export "memory") 1)',
                                                       '(memory (export "memory") 100)')
    big = sandbox.compile(wat, name="big")
    with pytest.raises(OutOfMemoryError, match="4 MiB"):
        sandbox.run_task(big, 0, limits=SMALL)
    assert sandbox.run_task(big, 0, limits=ResourceLimits(max_memory_mb=16)).output == "ok"


# -- CPU and wall clock -----------------------------------------------------------------------------


def test_infinite_loop_stopped_by_fuel(sandbox: Sandbox, audit: CompiledModule) -> None:
    with pytest.raises(OutOfFuelError) as info:
        sandbox.run_task(audit, 1, limits=SMALL)
    assert info.value.limit == "fuel"
    assert run_details(info.value)["fuel_used"] == SMALL.max_fuel
    assert sandbox.run_task(audit, 0, limits=SMALL).output == "ok"


def test_infinite_loop_stopped_by_deadline(sandbox: Sandbox, audit: CompiledModule) -> None:
    limits = ResourceLimits(max_fuel=10**15, max_execution_time_seconds=0.2)
    with pytest.raises(SandboxTimeoutError) as info:  # fuel for hours: only the clock can end it
        sandbox.run_task(audit, 1, limits=limits)
    assert info.value.limit == "timeout"  # how close to 0.2 s it stopped is a benchmark's business
    assert sandbox.run_task(audit, 0, limits=limits).output == "ok"


def test_spinning_command_stopped_by_deadline(sandbox: Sandbox) -> None:
    spin = sandbox.compile(WAT / "cmd_spin.wat", name="spin")
    with pytest.raises(SandboxTimeoutError, match="module 'spin'"):
        sandbox.run_command(spin, limits=ResourceLimits(max_fuel=10**15, max_execution_time_seconds=0.1))
    with pytest.raises(OutOfFuelError):
        sandbox.run_command(spin, limits=ResourceLimits(max_fuel=100_000))


def _ended_within(guard: float, run: Callable[[], object]) -> BaseException | None:
    """Run ``run`` on a thread; the exception it ended with. Fails the test if it
    is still running after ``guard`` seconds (a hang guard, not a timing check)."""
    outcome: list[BaseException | None] = []

    def go() -> None:
        try:
            run()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(guard)
    assert outcome, f"still running after {guard:g} s: the deadline did not stop it"
    return outcome[0]


def test_a_guest_sleeping_in_a_host_call_meets_its_deadline(sandbox: Sandbox) -> None:
    """An hour asked of WASI poll_oneoff (Python's time.sleep, QuickJS timers) used to run
    for the hour: epoch interruption cannot reach a guest inside a host call."""
    sleeper = sandbox.compile(WAT / "cmd_sleep.wat", name="sleeper")
    short = sandbox.run_command(sleeper, limits=ResourceLimits(max_execution_time_seconds=5))
    assert short.stdout == b"awake\n"  # a short sleep wakes with its event, as WASI says
    error = _ended_within(30, lambda: sandbox.run_command(
        sleeper, argv=["an hour"], limits=ResourceLimits(max_fuel=10**15, max_execution_time_seconds=0.3)))
    assert isinstance(error, SandboxTimeoutError), error
    assert "slept past its 0.3 s deadline" in str(error) and error.limit == "timeout"


# -- traps ------------------------------------------------------------------------------------------


def test_deep_recursion_is_trapped(sandbox: Sandbox, audit: CompiledModule) -> None:
    with pytest.raises(GuestTrapError, match="stack_overflow"):
        sandbox.run_task(audit, 4, limits=ResourceLimits(max_fuel=10**12))
    assert sandbox.run_task(audit, 5).output == "ok"


@pytest.mark.parametrize(("mode", "message"), [(6, "unreachable"), (7, "out of bounds memory access")])
def test_guest_traps_end_only_the_task(sandbox: Sandbox, audit: CompiledModule, mode: int,
                                       message: str) -> None:
    with pytest.raises(GuestTrapError, match=message) as info:
        sandbox.run_task(audit, mode)
    assert info.value.exit_code == 1
    assert sandbox.run_task(audit, 0).output == "ok"


# -- loading ----------------------------------------------------------------------------------------


def test_forbidden_import_refused_at_load(sandbox: Sandbox) -> None:
    with pytest.raises(ForbiddenImportError, match=r"module 'evil'.*env\.system") as info:
        sandbox.compile(WAT / "forbidden_system.wat", name="evil")
    assert info.value.exit_code == 2
    # control: a granted import under the same "env" module loads and runs
    assert sandbox.run_task(sandbox.compile(WAT / "task_env_echo.wat"), 1).output == 1


def test_contract_can_narrow_imports(sandbox: Sandbox) -> None:
    with pytest.raises(ForbiddenImportError, match=r"contract does not allow: infrafabric\.log"):
        sandbox.compile(WAT / "task_echo.wat", name="echo", allowed_imports=[])
    module = sandbox.compile(WAT / "task_echo.wat", name="echo", allowed_imports=[("infrafabric", "log")])
    assert sandbox.run_task(module, 3).output == 3


def test_non_function_imports_are_refused(sandbox: Sandbox) -> None:
    with pytest.raises(ForbiddenImportError, match="only functions may be imported"):
        sandbox.compile('(module (import "env" "memory" (memory 1)) (func (export "_start")))', name="m")


def test_malformed_and_truncated_modules_are_refused(sandbox: Sandbox) -> None:
    binary = bytes(wasmtime.wat2wasm((WAT / "task_echo.wat").read_text()))
    cases = {
        "truncated": binary[: len(binary) // 2],
        "header only": binary[:8],
        "bad section": binary[:8] + b"\x01\xff\xff\xff\xff\x0f",
        "not wasm": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)),
        "bad wat": b"(module (func (export \"run\")",
    }
    for label, data in cases.items():
        with pytest.raises(ModuleLoadError) as info:
            sandbox.compile(data, name=label)
        assert info.value.exit_code == 2, label
        assert f"module {label!r}" in str(info.value)
    assert sandbox.compile(binary, name="whole").kind == "task"


# -- worker-process isolation -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerSandbox]:
    with WorkerSandbox(cache_dir=tmp_path_factory.mktemp("worker-modules")) as ws:
        yield ws


def test_worker_runs_a_command(workers: WorkerSandbox) -> None:
    hello = workers.compile(WAT / "cmd_hello.wat", name="hello")
    result = workers.run_command(hello, argv=["one"], stdin=b"piped")
    assert (result.exit_code, result.stdout, result.stderr) == (1, b"hello\npiped", b"oops\n")


def test_worker_reports_a_limit_as_its_typed_error(workers: WorkerSandbox) -> None:
    audit = workers.compile(WAT / "task_audit.wat", name="audit")
    with pytest.raises(OutOfFuelError, match="module 'audit'") as info:
        workers.run_task(audit, 1, limits=SMALL)
    assert run_details(info.value)["fuel_used"] == SMALL.max_fuel
    assert workers.run_task(audit, 0, limits=SMALL).output == "ok"


def test_worker_crash_is_a_typed_error(workers: WorkerSandbox) -> None:
    audit = workers.compile(WAT / "task_audit.wat", name="audit")

    def kill_child() -> None:
        deadline = time.monotonic() + 20
        while not workers.running_pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        for pid in workers.running_pids():
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_child)
    killer.start()
    with pytest.raises(SandboxError, match="killed by SIGKILL") as info:
        workers.run_task(audit, 1, limits=ResourceLimits(max_fuel=10**15, max_execution_time_seconds=30))
    killer.join()
    assert isinstance(info.value, GuestTrapError)
    assert workers.running_pids() == []


def test_worker_paces_a_run_to_its_cpu_share(workers: WorkerSandbox) -> None:
    audit = workers.compile(WAT / "task_audit.wat", name="audit")
    paced = ResourceLimits(max_cpu_percent=10, max_execution_time_seconds=0.5)
    with pytest.raises(SandboxTimeoutError, match="module 'audit'") as info:  # no fuel: the clock ends it
        workers.run_task(audit, 1, limits=paced)
    details = run_details(info.value)
    assert info.value.limit == "timeout"
    assert details["paused_s"] > 0 and details["fuel_used"] is None
    # the child held the guest to 10 % of its wall time, give or take one 10 ms slice
    assert details["cpu_s"] <= 0.1 * details["elapsed_s"] + 0.03, details
    result = workers.run_task(audit, 0, limits=paced)
    assert result.output == "ok" and result.fuel_used is None and result.cpu_s >= 0
