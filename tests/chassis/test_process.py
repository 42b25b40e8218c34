"""ProcessSandbox: guests in worker processes with no check compiled in, the limits
kept from outside (kill at the deadline, SIGSTOP/SIGCONT for the CPU share).

Real worker processes throughout; the hostile cases are the audit's. How fast
the guests run is ``ifctl bench chassis``'s business, never asserted here.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrafabric.chassis import runtimes
from infrafabric.chassis.hostapi import Transport
from infrafabric.chassis.models import DirectoryGrant, ResourceLimits, WasiGrants
from infrafabric.chassis.process import ProcessSandbox
from infrafabric.chassis.sandbox import PACE_SLICE_S, CompiledModule, TaskResult, run_details
from infrafabric.errors import (
    ConfigurationError,
    CredentialScopeError,
    GuestTrapError,
    OutOfFuelError,
    OutOfMemoryError,
    RateLimitedError,
    SandboxTimeoutError,
)

WAT = Path(__file__).parent / "wat"


class Echo(Transport):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, endpoint: str, body: bytes, timeout: float) -> bytes:
        self.calls.append(endpoint)
        return b'{"endpoint":"' + endpoint.encode() + b'","body":' + body + b"}"


class Gate:
    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed

    def check(self, endpoint: str) -> None:
        if endpoint not in self.allowed:
            raise CredentialScopeError(f"credential does not allow {endpoint}")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessSandbox]:
    with ProcessSandbox(cache_dir=tmp_path_factory.mktemp("modules"), max_idle=2) as sb:
        yield sb


def test_a_task_runs_in_a_worker_that_serves_the_next_one(sandbox: ProcessSandbox) -> None:
    echo = sandbox.compile(WAT / "task_echo.wat", name="echo")
    first = sandbox.run_task(echo, {"n": 1})
    (pid,) = sandbox.worker_pids()
    second = sandbox.run_task(echo, {"n": [2, "ü"]})
    assert (first.output, second.output) == ({"n": 1}, {"n": [2, "ü"]})
    assert second.logs[0] == "echo:" and second.fuel_used is None
    assert sandbox.worker_pids() == [pid] and pid != os.getpid()  # the same worker, kept warm


def test_api_calls_are_performed_by_the_parent(sandbox: ProcessSandbox, api: CompiledModule) -> None:
    transport = Echo()
    result = sandbox.run_task(api, 2, gate=Gate({"search/web"}), transport=transport)
    assert result.output == {"endpoint": "search/web", "body": 2} and result.api_calls == 2
    assert transport.calls == ["search/web", "search/web"]
    refused = sandbox.run_task(api, 1, gate=Gate(set()), transport=transport)
    assert refused.output == {"error": "refused"} and "CredentialScopeError" in refused.refusals[0]
    assert len(transport.calls) == 2


def test_an_endless_loop_is_stopped_at_its_deadline_and_its_worker_replaced(
        sandbox: ProcessSandbox, audit: CompiledModule) -> None:
    assert sandbox.run_task(audit, 0).output == "ok"
    before = set(sandbox.worker_pids())
    killed = r"0\.3 s deadline \(its worker process was killed\)"
    with pytest.raises(SandboxTimeoutError, match=killed) as info:
        sandbox.run_task(audit, 1, limits=ResourceLimits(max_execution_time_seconds=0.3))
    assert info.value.limit == "timeout"
    assert not before & set(sandbox.worker_pids())  # the worker that ran it is gone
    assert sandbox.run_task(audit, 0).output == "ok"  # a new one serves the next run


@pytest.mark.parametrize("fuel", [None, 10**15])
def test_hostile_tasks_are_stopped(sandbox: ProcessSandbox, audit: CompiledModule, fuel: int | None) -> None:
    with pytest.raises(OutOfMemoryError):
        sandbox.run_task(audit, 2, limits=ResourceLimits(max_memory_mb=4, max_fuel=fuel))
    with pytest.raises(GuestTrapError, match="stack_overflow"):
        sandbox.run_task(audit, 4, limits=ResourceLimits(max_fuel=fuel))
    with pytest.raises(GuestTrapError, match="unreachable"):
        sandbox.run_task(audit, 6, limits=ResourceLimits(max_fuel=fuel))
    with pytest.raises(SandboxTimeoutError):
        sandbox.run_task(audit, 1, limits=ResourceLimits(max_fuel=fuel, max_execution_time_seconds=0.2))
    assert sandbox.run_task(audit, 8, limits=ResourceLimits(max_memory_mb=4, max_fuel=fuel)).output == "ok"


def test_fuel_counts_in_the_worker(sandbox: ProcessSandbox, audit: CompiledModule) -> None:
    with pytest.raises(OutOfFuelError) as info:
        sandbox.run_task(audit, 1, limits=ResourceLimits(max_fuel=1_000_000))
    assert info.value.limit == "fuel"
    counted = sandbox.run_task(audit, 5, limits=ResourceLimits(max_fuel=10**9))
    assert counted.output == "ok" and counted.fuel_used is not None and counted.fuel_used > 1000


def test_a_host_function_ends_the_run_without_an_epoch_check(sandbox: ProcessSandbox,
                                                             api: CompiledModule) -> None:
    with pytest.raises(RateLimitedError) as info:
        sandbox.run_task(api, 5, limits=ResourceLimits(max_api_calls_per_second=2), transport=Echo())
    assert run_details(info.value)["api_calls"] == 3
    assert sandbox.run_task(api, 1, transport=Echo()).api_calls == 1  # the worker survived it


def test_hostile_commands_are_stopped(sandbox: ProcessSandbox) -> None:
    spin = sandbox.compile(WAT / "cmd_spin.wat", name="spin")
    with pytest.raises(SandboxTimeoutError, match="module 'spin'"):
        sandbox.run_command(spin, limits=ResourceLimits(max_execution_time_seconds=0.2))
    sleeper = sandbox.compile(WAT / "cmd_sleep.wat", name="sleeper")
    with pytest.raises(SandboxTimeoutError, match=r"slept past its 0\.3 s deadline"):
        sandbox.run_command(sleeper, argv=["an hour"], limits=ResourceLimits(max_execution_time_seconds=0.3))
    hello = sandbox.compile(WAT / "cmd_hello.wat", name="hello")
    result = sandbox.run_command(hello, argv=["a"], stdin=b"piped")
    assert (result.exit_code, result.stdout, result.stderr) == (1, b"hello\npiped", b"oops\n")
    missing = WasiGrants(directories=[DirectoryGrant(host="/nonexistent/x", guest="/x")])
    with pytest.raises(ConfigurationError, match="does not exist"):
        sandbox.run_command(hello, grants=missing)


def test_the_cpu_share_is_kept_by_stopping_the_worker(sandbox: ProcessSandbox, audit: CompiledModule) -> None:
    with pytest.raises(SandboxTimeoutError) as info:
        sandbox.run_task(audit, 1, limits=ResourceLimits(max_cpu_percent=10, max_execution_time_seconds=1))
    details = run_details(info.value)
    # stopped (SIGSTOP) from outside; how long depends on the CPU the machine gave it
    assert details["paused_s"] > 0 and details["fuel_used"] is None, details


def test_a_paced_python_script_keeps_to_its_share() -> None:
    runtimes.fetch_many([runtimes.PYTHON])  # a no-op once the default cache holds it
    script = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.3:\n    pass\nprint('done')\n"
    # the machine's module cache: CPython is compiled for the unchecked engine once per machine
    with ProcessSandbox(cache_dir=runtimes.modules_cache_dir()) as shared:
        result = runtimes.run_python(shared, script, limits=ResourceLimits(max_cpu_percent=20))
    assert result.stdout == b"done\n" and result.paused_s > 0
    # the run's CPU within its share of the wall time, give or take the slices the parent checks at
    assert result.cpu_s <= 0.2 * result.elapsed_s + 3 * PACE_SLICE_S, (result.cpu_s, result.elapsed_s)


def test_concurrent_runs_get_workers_of_their_own(sandbox: ProcessSandbox, audit: CompiledModule) -> None:
    results: dict[int, TaskResult | Exception] = {}
    seen: set[int] = set()

    def run(i: int) -> None:
        try:
            results[i] = sandbox.run_task(audit, 5)
        except Exception as exc:
            results[i] = exc

    # one long run holds a worker while three more run beside it
    holder = threading.Thread(target=lambda: results.setdefault(
        9, _timeout(sandbox, audit)))
    holder.start()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        seen.update(sandbox.worker_pids())
        time.sleep(0.005)
    holder.join(30)
    assert all(isinstance(results[i], TaskResult) and results[i].output == "ok" for i in range(3)), results
    assert isinstance(results[9], SandboxTimeoutError)
    assert len(seen) >= 2  # the long run's worker and at least one other ran at once
    assert len(sandbox.worker_pids()) <= 2  # max_idle: the pool keeps at most two waiting


def _timeout(sandbox: ProcessSandbox, audit: CompiledModule) -> Exception:
    try:
        sandbox.run_task(audit, 1, limits=ResourceLimits(max_execution_time_seconds=1.5))
    except SandboxTimeoutError as exc:
        return exc
    raise AssertionError("the endless loop returned")


def test_a_worker_that_died_while_idle_is_replaced(sandbox: ProcessSandbox, audit: CompiledModule) -> None:
    assert sandbox.run_task(audit, 0).output == "ok"
    for pid in sandbox.worker_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    assert sandbox.run_task(audit, 0).output == "ok"


def test_a_worker_killed_mid_run_is_a_typed_error(sandbox: ProcessSandbox, audit: CompiledModule) -> None:
    def kill_soon() -> None:
        time.sleep(0.5)
        for pid in sandbox.worker_pids():
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    with pytest.raises(GuestTrapError, match="killed by SIGKILL"):
        sandbox.run_task(audit, 1, limits=ResourceLimits(max_execution_time_seconds=30))
    killer.join()
    assert sandbox.run_task(audit, 0).output == "ok"


def test_close_kills_every_worker(tmp_path: Path) -> None:
    with ProcessSandbox(cache_dir=tmp_path) as sb:
        echo = sb.compile(WAT / "task_echo.wat", name="echo")
        assert sb.run_task(echo, 1).output == 1
        pids = sb.worker_pids()
    assert pids and sb.worker_pids() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(ConfigurationError, match="closed"):
        sb.run_task(echo, 1)


async def test_the_chassis_runs_a_swarm_in_worker_processes(sandbox: ProcessSandbox) -> None:
    """IFChassis takes a ProcessSandbox as its sandbox: contracts, SLO samples and limits as in-process."""
    from infrafabric.bus import connect
    from infrafabric.chassis.core import IFChassis

    async with connect("memory://") as bus, IFChassis(bus, sandbox=sandbox) as chassis:
        contract = {"swarm_id": "coder", "capabilities": ["code-analysis:python"],
                    "resource_limits": {"max_execution_time_seconds": 0.5, "max_cpu_percent": 50}}
        await chassis.load_swarm("coder", WAT / "task_audit.wat", contract)
        assert (await chassis.execute_task("coder", 0, task_id="T1")).output == "ok"
        with pytest.raises(SandboxTimeoutError, match="worker process was killed"):
            await chassis.execute_task("coder", 1, task_id="T2")  # an endless loop
        samples = await chassis.slo.samples("coder")
        assert [s.success for s in samples] == [True, False]
    assert sandbox.run_task(sandbox.compile(WAT / "task_echo.wat"), 7).output == 7  # still the caller's
