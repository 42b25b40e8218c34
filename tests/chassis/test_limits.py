"""The sandbox's limits under each way of enforcing them.

A run without ``max_fuel`` uses an engine without fuel metering (epoch checks
only); a run with it uses the metered engine; ``max_cpu_percent`` below 100
adds the pacing callback. Every hostile case must be stopped under each, and
the CPU share must hold. How much each mechanism costs is measured by
``ifctl bench chassis``, never asserted here.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from infrafabric.chassis.hostapi import Transport
from infrafabric.chassis.models import ResourceLimits
from infrafabric.chassis.sandbox import PACE_SLICE_S, CompiledModule, Sandbox, TaskResult, run_details
from infrafabric.errors import (
    ConfigurationError,
    GuestTrapError,
    OutOfFuelError,
    OutOfMemoryError,
    RateLimitedError,
    SandboxTimeoutError,
)

WAT = Path(__file__).parent / "wat"

#: payload n: n iterations of an arithmetic loop (i64), returns "ok"
BUSY_WAT = """(module
  (memory (export "memory") 1)
  (data (i32.const 0) "\\"ok\\"")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n))) (local.get $p))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $n i64) (local $i i64) (local $s i64) (local $k i32)
    ;; the payload is a decimal integer: parse it
    (block $end (loop $digit
      (br_if $end (i32.ge_u (local.get $k) (local.get $len)))
      (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 10))
        (i64.extend_i32_u (i32.sub (i32.load8_u (i32.add (local.get $ptr) (local.get $k))) (i32.const 48)))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $digit)))
    (loop $l
      (local.set $s (i64.add (local.get $s) (i64.mul (local.get $i) (local.get $i))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $l (i64.lt_u (local.get $i) (local.get $n))))
    (i64.store (i32.const 16) (local.get $s))
    (i64.const 4)))
"""

#: the ways a run can be limited, each a distinct mechanism in the sandbox
MECHANISMS = {
    "epoch": {},  # the default: wall clock as an epoch deadline, no fuel, no pacing
    "fuel": {"max_fuel": 10**15},
    "paced": {"max_cpu_percent": 50},
    "paced+fuel": {"max_cpu_percent": 50, "max_fuel": 10**15},
}


@pytest.fixture(scope="module")
def busy(sandbox: Sandbox) -> CompiledModule:
    return sandbox.compile(BUSY_WAT, name="busy")


def limits(mechanism: str, **extra: object) -> ResourceLimits:
    return ResourceLimits.model_validate({**MECHANISMS[mechanism], **extra})


# -- every hostile case is stopped under every mechanism ----------------------------------------------


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
def test_hostile_tasks_are_stopped_under_each_mechanism(sandbox: Sandbox, audit: CompiledModule,
                                                        mechanism: str) -> None:
    with pytest.raises(SandboxTimeoutError, match=r"ran past its 0\.3 s deadline") as spun:
        sandbox.run_task(audit, 1, limits=limits(mechanism, max_execution_time_seconds=0.3))
    assert spun.value.limit == "timeout"
    with pytest.raises(OutOfMemoryError):
        sandbox.run_task(audit, 2, limits=limits(mechanism, max_memory_mb=4))
    with pytest.raises(GuestTrapError, match="stack_overflow"):
        sandbox.run_task(audit, 4, limits=limits(mechanism))
    # controls: the same module under the same mechanism runs normal payloads
    assert sandbox.run_task(audit, 5, limits=limits(mechanism)).output == "ok"
    assert sandbox.run_task(audit, 8, limits=limits(mechanism, max_memory_mb=4)).output == "ok"


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
def test_hostile_commands_are_stopped_under_each_mechanism(sandbox: Sandbox, mechanism: str) -> None:
    spin = sandbox.compile(WAT / "cmd_spin.wat", name="spin")
    with pytest.raises(SandboxTimeoutError, match="module 'spin'"):
        sandbox.run_command(spin, limits=limits(mechanism, max_execution_time_seconds=0.2))
    sleeper = sandbox.compile(WAT / "cmd_sleep.wat", name="sleeper")
    with pytest.raises(SandboxTimeoutError, match=r"slept past its 0\.3 s deadline"):
        sandbox.run_command(sleeper, argv=["an hour"],
                            limits=limits(mechanism, max_execution_time_seconds=0.3))
    assert sandbox.run_command(sleeper, limits=limits(mechanism)).stdout == b"awake\n"


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
def test_a_host_function_ends_the_run_under_each_mechanism(sandbox: Sandbox, mechanism: str) -> None:
    """The host stops a guest from inside ``api_call`` (rate limit) by moving its
    epoch deadline to now: with fuel or without, paced or not."""

    class Echo(Transport):
        def call(self, endpoint: str, body: bytes, timeout: float) -> bytes:
            return json.dumps({"endpoint": endpoint}).encode()

    api = sandbox.compile(WAT / "task_api.wat", name="api")
    with pytest.raises(RateLimitedError, match="module 'api'") as info:
        sandbox.run_task(api, 5, limits=limits(mechanism, max_api_calls_per_second=2), transport=Echo())
    assert run_details(info.value)["api_calls"] == 3
    assert sandbox.run_task(api, 2, limits=limits(mechanism), transport=Echo()).api_calls == 2


# -- fuel: an exact count, only when asked for --------------------------------------------------------


def test_fuel_counts_only_when_asked_and_the_metered_engine_is_built_once(
        sandbox: Sandbox, busy: CompiledModule, tmp_path: Path) -> None:
    plain = sandbox.run_task(busy, 1000)
    assert plain.output == "ok" and plain.fuel_used is None
    first = sandbox.run_task(busy, 1000, limits=ResourceLimits(max_fuel=10**9))
    again = sandbox.run_task(busy, 1000, limits=ResourceLimits(max_fuel=10**9))
    assert first.fuel_used is not None and first.fuel_used > 1000  # every iteration counted...
    assert first.fuel_used == again.fuel_used  # ...exactly, the same each time
    with pytest.raises(OutOfFuelError) as info:
        sandbox.run_task(busy, 10**9, limits=ResourceLimits(max_fuel=100_000))
    assert run_details(info.value)["fuel_used"] == 100_000
    # a new process finds both compiled forms in the disk cache and compiles nothing
    with Sandbox(cache_dir=sandbox.cache_dir) as fresh:
        module = fresh.compile(BUSY_WAT, name="busy")
        counted = fresh.run_task(module, 1000, limits=ResourceLimits(max_fuel=10**9))
        assert counted.fuel_used == first.fuel_used
        assert fresh.stats.compiled == 0 and fresh.stats.disk_hits == 2


# -- the CPU share -----------------------------------------------------------------------------------


def _iterations_for(sandbox: Sandbox, busy: CompiledModule, cpu_s: float) -> int:
    """How many loop iterations take about ``cpu_s`` of CPU on this machine, now."""
    n = 1_000_000
    while True:
        used = sandbox.run_task(busy, n).cpu_s
        if used >= cpu_s / 4:
            return max(n, int(n * cpu_s / max(used, 1e-6)))
        n *= 4


@pytest.mark.parametrize("percent", [20, 50])
def test_a_paced_run_keeps_to_its_cpu_share(sandbox: Sandbox, busy: CompiledModule, percent: int) -> None:
    n = _iterations_for(sandbox, busy, 0.15)
    paced = sandbox.run_task(busy, n, limits=ResourceLimits(max_cpu_percent=percent))
    assert paced.output == "ok" and paced.paused_s > 0
    share = percent / 100
    # CPU over the run's wall time stays within the share, give or take the slices the pacer
    # checks at. Load on the machine only lowers this ratio, so the bound holds under any load.
    assert paced.cpu_s <= share * paced.elapsed_s + 3 * PACE_SLICE_S, (paced.cpu_s, paced.elapsed_s)
    # the pauses were real time on the run's own thread, beside its CPU time
    assert paced.elapsed_s >= paced.cpu_s + paced.paused_s - 0.005
    unpaced = sandbox.run_task(busy, n)
    assert unpaced.paused_s == 0


def test_pacing_never_holds_a_run_past_its_deadline(sandbox: Sandbox, audit: CompiledModule) -> None:
    with pytest.raises(SandboxTimeoutError, match=r"0\.5 s deadline") as info:
        sandbox.run_task(audit, 1, limits=ResourceLimits(max_cpu_percent=5, max_execution_time_seconds=0.5))
    details = run_details(info.value)
    assert details["paused_s"] > 0 and details["cpu_s"] < details["elapsed_s"]


def test_paced_runs_on_several_threads_are_paced_each_on_its_own(sandbox: Sandbox,
                                                                  busy: CompiledModule) -> None:
    n = _iterations_for(sandbox, busy, 0.05)
    results: dict[str, TaskResult | Exception] = {}

    def run(name: str, percent: int) -> None:
        try:
            results[name] = sandbox.run_task(busy, n, limits=ResourceLimits(max_cpu_percent=percent))
        except Exception as exc:  # reported below
            results[name] = exc

    threads = [threading.Thread(target=run, args=(f"t{i}", 100 if i == 0 else 30)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["t0", "t1", "t2", "t3"]
    done = {name: result for name, result in results.items() if isinstance(result, TaskResult)}
    assert done.keys() == results.keys(), results
    assert all(result.output == "ok" for result in done.values())
    assert done["t0"].paused_s == 0
    assert all(done[f"t{i}"].paused_s > 0 for i in (1, 2, 3))


def test_a_bad_cpu_share_is_refused_naming_the_field() -> None:
    for bad in (0, 101, -5):
        with pytest.raises(ValueError, match="max_cpu_percent"):
            ResourceLimits(max_cpu_percent=bad)
    from infrafabric.chassis.models import parse_contract

    with pytest.raises(ConfigurationError, match=r"resource_limits\.max_cpu_percent"):
        parse_contract({"swarm_id": "coder", "resource_limits": {"max_cpu_percent": 150}})
    contract = parse_contract({"swarm_id": "coder", "resource_limits": {"max_cpu_percent": 25}})
    assert contract.resource_limits.max_cpu_percent == 25
