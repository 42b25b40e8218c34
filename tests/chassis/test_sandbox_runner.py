"""The sandbox runner: compiling and caching, the task ABI, host functions, WASI commands.

Everything runs on real wasmtime; the only fake is the in-test Transport (our own interface).
"""

from __future__ import annotations

import hashlib
import json
import stat
import threading
from pathlib import Path

import pytest
import wasmtime

from infrafabric.chassis.hostapi import Transport
from infrafabric.chassis.models import ResourceLimits
from infrafabric.chassis.sandbox import CompiledModule, Sandbox, run_details
from infrafabric.errors import (
    ConfigurationError,
    CredentialScopeError,
    GuestTrapError,
    ModuleLoadError,
    OutOfFuelError,
    RateLimitedError,
)

WAT = Path(__file__).parent / "wat"


class FakeTransport(Transport):
    """Answers every call with ``{"endpoint": ..., "body": <the request body as JSON>}``."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, bytes, float]] = []
        self.fail = fail

    def call(self, endpoint: str, body: bytes, timeout: float) -> bytes:
        self.calls.append((endpoint, body, timeout))
        if self.fail:
            raise TimeoutError("upstream timed out")
        return b'{"endpoint":"' + endpoint.encode() + b'","body":' + body + b"}"


class Gate:
    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.checked: list[str] = []

    def check(self, endpoint: str) -> None:
        self.checked.append(endpoint)
        if endpoint not in self.allowed:
            raise CredentialScopeError(f"credential does not allow {endpoint}")


@pytest.fixture(scope="module")
def echo(sandbox: Sandbox) -> CompiledModule:
    return sandbox.compile(WAT / "task_echo.wat", name="echo")


# -- compiling and caching ---------------------------------------------------------------------------


def test_compile_accepts_wat_path_wat_text_and_binary(sandbox: Sandbox) -> None:
    text = (WAT / "task_echo.wat").read_text()
    binary = bytes(wasmtime.wat2wasm(text))
    from_path = sandbox.compile(WAT / "task_echo.wat", name="p")
    from_text = sandbox.compile(text, name="t")
    from_binary = sandbox.compile(binary, name="b")
    for module in (from_path, from_text, from_binary):
        assert module.kind == "task"
        assert module.imports == (("infrafabric", "log"),)
        assert sandbox.run_task(module, [1, "two"]).output == [1, "two"]
    assert from_text.digest == hashlib.sha256(text.encode()).hexdigest() == from_path.digest
    assert from_binary.digest == hashlib.sha256(binary).hexdigest()
    command = sandbox.compile(WAT / "cmd_hello.wat", name="hello")
    assert command.kind == "command"
    assert ("wasi_snapshot_preview1", "fd_write") in command.imports


def test_second_compile_is_a_memory_hit(tmp_path: Path) -> None:
    with Sandbox(cache_dir=tmp_path) as sb:
        first = sb.compile(WAT / "task_echo.wat")
        second = sb.compile(WAT / "task_echo.wat")
        assert (first.origin, second.origin) == ("compiled", "memory")
        assert (sb.stats.compiled, sb.stats.memory_hits, sb.stats.disk_writes) == (1, 1, 1)


def test_new_sandbox_loads_from_the_disk_cache(tmp_path: Path) -> None:
    with Sandbox(cache_dir=tmp_path) as sb:
        sb.compile(WAT / "task_echo.wat")
    with Sandbox(cache_dir=tmp_path) as sb2:
        module = sb2.compile(WAT / "task_echo.wat")
        assert module.origin == "disk"
        assert (sb2.stats.compiled, sb2.stats.disk_hits) == (0, 1)
        assert sb2.run_task(module, {"k": "v"}).output == {"k": "v"}


def test_cache_directory_and_files_are_private(tmp_path: Path) -> None:
    cache = tmp_path / "nested" / "modules"
    with Sandbox(cache_dir=cache) as sb:
        sb.compile(WAT / "task_echo.wat")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".cwasm"
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupted_cache_file_is_ignored_and_rebuilt(tmp_path: Path, damage: str) -> None:
    with Sandbox(cache_dir=tmp_path) as sb:
        sb.compile(WAT / "task_echo.wat")
    (path,) = tmp_path.iterdir()
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    elif damage == "truncate":
        del blob[len(blob) // 3:]
    else:
        blob.clear()
    path.write_bytes(bytes(blob))
    with Sandbox(cache_dir=tmp_path) as sb2:
        module = sb2.compile(WAT / "task_echo.wat")
        assert module.origin == "compiled"
        assert (sb2.stats.disk_rejects, sb2.stats.disk_writes) == (1, 1)
        assert sb2.run_task(module, 7).output == 7
    with Sandbox(cache_dir=tmp_path) as sb3:
        assert sb3.compile(WAT / "task_echo.wat").origin == "disk"


def test_cache_file_writable_by_others_is_not_trusted(tmp_path: Path) -> None:
    with Sandbox(cache_dir=tmp_path) as sb:
        sb.compile(WAT / "task_echo.wat")
    (path,) = tmp_path.iterdir()
    path.chmod(0o666)
    with Sandbox(cache_dir=tmp_path) as sb2:
        assert sb2.compile(WAT / "task_echo.wat").origin == "compiled"
        assert sb2.stats.disk_rejects == 1


@pytest.mark.parametrize(("wat", "reason"), [
    ('(module (memory (export "memory") 1))', "exports neither the task ABI"),
    ('(module (memory (export "memory") 1) (func (export "run") (param i32 i32) (result i64) i64.const 0))',
     "missing export(s) alloc"),
    ('(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0)'
     ' (func (export "run") (param i32) (result i32) i32.const 0))', "export 'run' has type (i32) -> (i32)"),
])
def test_missing_or_mistyped_exports_are_refused(sandbox: Sandbox, wat: str, reason: str) -> None:
    with pytest.raises(ModuleLoadError, match="module 'bad'") as info:
        sandbox.compile(wat, name="bad")
    assert reason in str(info.value)
    assert info.value.exit_code == 2


def test_unreadable_path_is_a_load_error(sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(ModuleLoadError, match="cannot read"):
        sandbox.compile(tmp_path / "missing.wasm", name="gone")


def test_module_kinds_are_not_interchangeable(sandbox: Sandbox, echo: CompiledModule) -> None:
    command = sandbox.compile(WAT / "cmd_hello.wat")
    with pytest.raises(ModuleLoadError, match="not a task"):
        sandbox.run_task(command, 1)
    with pytest.raises(ModuleLoadError, match="no _start"):
        sandbox.run_command(echo)


# -- the task ABI -----------------------------------------------------------------------------------


def test_task_round_trip_with_logs(sandbox: Sandbox, echo: CompiledModule) -> None:
    payload = {"text": "grüße ✓", "n": [1, 2.5, None, True], "nested": {"a": {}}}
    result = sandbox.run_task(echo, payload)
    assert result.output == payload
    assert result.logs[0] == "echo:"
    assert '"grüße ✓"' in result.logs[1]
    assert result.api_calls == 0 and result.refusals == [] and not result.log_truncated
    assert result.fuel_used is None  # nothing counts instructions unless the run sets max_fuel
    assert result.elapsed_s > 0 and result.cpu_s > 0 and result.paused_s == 0
    metered = sandbox.run_task(echo, payload, limits=ResourceLimits(max_fuel=1_000_000))
    assert metered.output == payload
    assert metered.fuel_used is not None and 0 < metered.fuel_used < 1000


def test_task_importing_from_env_module_works(sandbox: Sandbox) -> None:
    module = sandbox.compile(WAT / "task_env_echo.wat")
    assert module.imports == (("env", "log"),)
    assert sandbox.run_task(module, "hi").output == "hi"


def test_log_is_bounded_and_truncation_recorded(sandbox: Sandbox, echo: CompiledModule) -> None:
    result = sandbox.run_task(echo, "abcdefghij", limits=ResourceLimits(max_log_bytes=8))
    assert result.logs == ["echo:", '"ab']
    assert result.log_truncated
    assert result.output == "abcdefghij"


def test_payload_must_be_json(sandbox: Sandbox, echo: CompiledModule) -> None:
    with pytest.raises(ConfigurationError, match="not JSON-serializable"):
        sandbox.run_task(echo, {"x": object()})
    with pytest.raises(ConfigurationError):
        sandbox.run_task(echo, float("nan"))


@pytest.mark.parametrize(("payload", "message"), [
    (9, "not valid UTF-8 JSON"),
    ("x", "outside guest memory"),
])
def test_bad_task_output_is_a_guest_trap(sandbox: Sandbox, payload: object, message: str) -> None:
    audit = sandbox.compile(WAT / "task_audit.wat", name="audit")
    with pytest.raises(GuestTrapError, match=message):
        sandbox.run_task(audit, payload)
    assert sandbox.run_task(audit, 0).output == "ok"


# -- api_call ---------------------------------------------------------------------------------------


def test_api_call_allowed_goes_through_gate_and_transport(sandbox: Sandbox, api: CompiledModule) -> None:
    transport, gate = FakeTransport(), Gate({"search/web"})
    limits = ResourceLimits(max_execution_time_seconds=5)
    result = sandbox.run_task(api, 1, limits=limits, gate=gate, transport=transport)
    assert result.output == {"endpoint": "search/web", "body": 1}
    assert result.api_calls == 1 and result.refusals == []
    assert gate.checked == ["search/web"]
    ((endpoint, body, timeout),) = transport.calls
    assert (endpoint, body) == ("search/web", b"1")
    assert 0 < timeout <= 5


def test_api_call_refused_by_credential_scope(sandbox: Sandbox, api: CompiledModule) -> None:
    transport = FakeTransport()
    result = sandbox.run_task(api, 1, gate=Gate({"other/endpoint"}), transport=transport)
    assert result.output == {"error": "refused"}
    assert transport.calls == []
    (refusal,) = result.refusals
    assert "search/web" in refusal and "CredentialScopeError" in refusal


def test_api_call_without_transport_is_refused(sandbox: Sandbox, api: CompiledModule) -> None:
    result = sandbox.run_task(api, 1)
    assert result.output == {"error": "refused"}
    assert result.refusals == ["search/web: no transport configured"]


def test_api_call_transport_failure_is_visible_to_the_guest(sandbox: Sandbox, api: CompiledModule) -> None:
    result = sandbox.run_task(api, 1, transport=FakeTransport(fail=True))
    assert result.output == {"error": "failed"}
    assert result.api_errors == ["search/web: TimeoutError: upstream timed out"]


def test_gate_crash_does_not_end_the_task(sandbox: Sandbox, api: CompiledModule) -> None:
    class BrokenGate:
        def check(self, endpoint: str) -> None:
            raise RuntimeError("bus unreachable")

    result = sandbox.run_task(api, 1, gate=BrokenGate(), transport=FakeTransport())
    assert result.output == {"error": "failed"}
    assert "bus unreachable" in result.api_errors[0]


def test_api_rate_limit_ends_the_task(sandbox: Sandbox, api: CompiledModule) -> None:
    transport = FakeTransport()
    within = sandbox.run_task(api, 5, limits=ResourceLimits(max_api_calls_per_second=10), transport=transport)
    assert within.api_calls == 5 and len(transport.calls) == 5
    with pytest.raises(RateLimitedError, match="module 'api'") as info:
        sandbox.run_task(api, 5, limits=ResourceLimits(max_api_calls_per_second=2), transport=transport)
    assert info.value.limit == "rate"
    assert run_details(info.value)["api_calls"] == 3
    assert len(transport.calls) == 5 + 2


def test_transport_may_run_a_nested_task(sandbox: Sandbox, api: CompiledModule, echo: CompiledModule) -> None:
    class NestedTransport(Transport):
        def call(self, endpoint: str, body: bytes, timeout: float) -> bytes:
            inner = sandbox.run_task(echo, {"inner": body.decode()})
            return json.dumps(inner.output).encode()

    result = sandbox.run_task(api, 2, transport=NestedTransport())
    assert result.output == {"inner": "2"}
    assert result.api_calls == 2


# -- WASI commands ----------------------------------------------------------------------------------


def test_command_captures_output_argv_stdin_and_exit_code(sandbox: Sandbox) -> None:
    hello = sandbox.compile(WAT / "cmd_hello.wat", name="hello")
    result = sandbox.run_command(hello, argv=["a", "b"], stdin=b"from stdin")
    assert result.exit_code == 2
    assert result.stdout == b"hello\nfrom stdin"
    assert result.stderr == b"oops\n"
    assert result.fuel_used is None and result.cpu_s > 0
    assert sandbox.run_command(hello).exit_code == 0
    metered = sandbox.run_command(hello, limits=ResourceLimits(max_fuel=10_000_000))
    assert metered.stdout == b"hello\n" and metered.fuel_used is not None and metered.fuel_used > 0


def test_command_output_is_bounded(sandbox: Sandbox) -> None:
    flood = sandbox.compile(WAT / "cmd_flood.wat", name="flood")
    result = sandbox.run_command(flood)
    assert result.exit_code == 0
    assert len(result.stdout) == 16 * 1024 * 1024 and result.stdout_truncated
    assert not result.stderr_truncated


# -- concurrency and lifecycle ----------------------------------------------------------------------


def test_concurrent_runs_keep_their_own_state(sandbox: Sandbox, echo: CompiledModule,
                                              api: CompiledModule) -> None:
    audit = sandbox.compile(WAT / "task_audit.wat", name="audit")
    failures: list[str] = []

    def echo_worker(n: int) -> None:
        for i in range(40):
            payload = {"worker": n, "i": i}
            result = sandbox.run_task(echo, payload)
            if result.output != payload or result.logs[1] != f'{{"worker":{n},"i":{i}}}':
                failures.append(f"echo {n}/{i}: {result}")

    def api_worker(n: int) -> None:
        transport = FakeTransport()
        for i in range(20):
            result = sandbox.run_task(api, 1, gate=Gate({"search/web"}) if n % 2 else Gate(set()),
                                      transport=transport)
            if (result.output == {"error": "refused"}) != (n % 2 == 0):
                failures.append(f"api {n}/{i}: {result}")

    def fuel_worker() -> None:
        for _ in range(10):
            try:
                sandbox.run_task(audit, 1, limits=ResourceLimits(max_fuel=200_000))
                failures.append("spin finished")
            except OutOfFuelError:
                pass

    threads = [threading.Thread(target=echo_worker, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=api_worker, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=fuel_worker))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []


def test_closed_sandbox_refuses_runs(tmp_path: Path) -> None:
    sb = Sandbox(cache_dir=tmp_path)
    module = sb.compile(WAT / "task_echo.wat")
    assert sb.run_task(module, 1).output == 1
    sb.close()
    with pytest.raises(ConfigurationError, match="closed"):
        sb.run_task(module, 1)
