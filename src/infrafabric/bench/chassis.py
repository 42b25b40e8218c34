"""``ifctl bench chassis``: what the sandbox and each of its limits cost, beside raw wasmtime in one run.

Figures are milliseconds (nearest-rank percentiles, see :mod:`infrafabric.bench.stats`).

**Workloads** (each run end to end: a fresh store, instantiate, payload in,
result out, as the sandbox runs every task):

* ``trivial`` — a task that returns its payload;
* ``hash`` — FNV-1a over 64 KiB of guest memory, 64 times (memory-bound);
* ``calls`` — recursive Fibonacci (a function call per step);
* ``loop`` — a three-instruction arithmetic loop, millions of iterations:
  the worst case for any check compiled into loops;
* ``python_startup`` — ``print(1)`` in sandboxed CPython 3.12;
* ``python_compute`` — a CPython loop of about 0.2 s.

**Variants** of each workload, sampled in turn so that load from elsewhere on
the machine hits all alike:

* ``raw`` — a plain ``wasmtime.Engine()``: no limit at all (the baseline);
* ``memory`` — the memory cap (``Store.set_limits``);
* ``epoch`` — the wall clock: an engine with epoch interruption, a deadline on
  the store and a thread ticking the epoch every millisecond (as the sandbox);
* ``cpu_share`` — the CPU share: ``epoch`` plus the epoch-deadline callback,
  called every 10 ms of execution to compare CPU and wall time (never pausing
  here: its cost, not its effect);
* ``fuel`` — the instruction budget: an engine with fuel metering;
* ``all`` — all of the above together;
* ``sandbox`` — :class:`~infrafabric.chassis.sandbox.Sandbox` as users call it,
  with its default limits (memory cap, wall clock; no fuel, no pacing);
* ``sandbox_fuel`` — the same with ``max_fuel`` set (the metered engine);
* ``process`` — :class:`~infrafabric.chassis.process.ProcessSandbox`, default
  limits: the guest in a warm worker process whose engine compiles no check,
  the wall clock and CPU share kept from outside (kill, SIGSTOP).

Each variant's ``ratio`` is its p50 over ``raw``'s p50 in the same run.
Targets: each limit, and all of them together, within 5 % of ``raw``; a
trivial task through the sandbox at most 1 ms; ``print(1)`` in sandboxed
Python at most 100 ms. Targets are reported, never asserted.
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import wasmtime

from infrafabric.bench._common import Progress, machine_info, started_at, target_row, version
from infrafabric.bench.stats import QUANTILE_METHOD, ratio, summarize
from infrafabric.chassis import runtimes
from infrafabric.chassis.hostapi import HostContext
from infrafabric.chassis.models import ResourceLimits
from infrafabric.chassis.process import ProcessSandbox
from infrafabric.chassis.sandbox import (
    EPOCH_TICK_S,
    PACE_SLICE_S,
    CompiledModule,
    Pacer,
    Runner,
    Sandbox,
    epoch_callback,
    set_epoch_callback,
)
from infrafabric.errors import InfraFabricError

__all__ = ["LIMITS", "PHASES", "TARGETS", "VARIANTS", "WORKLOADS", "bench_chassis"]

PHASES: dict[str, str] = {
    "compile": "compiling modules", "cache_load": "loading from the cache",
    "trivial": "trivial tasks", "hash": "hash loops", "calls": "recursive calls", "loop": "tight loops",
    "python_startup": "Python start-up", "python_compute": "Python compute",
}
#: what each workload is
WORKLOADS: dict[str, str] = {
    "trivial": "a task that returns its JSON payload",
    "hash": "FNV-1a over 64 KiB of guest memory, 64 times (memory-bound)",
    "calls": "recursive Fibonacci, fib(27) (a call per step)",
    "loop": "a 3-instruction arithmetic loop, 6 million iterations (the worst case for checks in loops)",
    "python_startup": "print(1) in sandboxed CPython 3.12",
    "python_compute": "a CPython loop summing 200,000 squares modulo 7",
}
#: the limits measured one at a time on raw wasmtime, then together
LIMITS: tuple[str, ...] = ("memory", "epoch", "cpu_share", "fuel", "all")
VARIANTS: tuple[str, ...] = ("raw", *LIMITS, "sandbox", "sandbox_fuel", "process")
#: (id, operation, metric, threshold, description); the per-limit rows are added for each workload
TARGETS: list[tuple[str, str, str, float, str]] = [
    ("trivial_task_p50", "trivial.sandbox", "ours.p50", 1.0,
     "trivial task through the sandbox <= 1 ms median"),
    ("python_startup_p50", "python_startup.sandbox", "ours.p50", 100.0,
     "print(1) in sandboxed Python <= 100 ms median"),
    ("trivial_process_p50", "trivial.process", "ours.p50", 1.0,
     "trivial task through the ProcessSandbox <= 1 ms median"),
]
LIMIT_TARGET = 1.05
#: longer than the sandbox's epoch thread lingers after its last run
_QUIET_S = 0.2
_LIMIT_NAMES = {"memory": "the memory cap", "epoch": "the wall clock (epoch deadline)",
                "cpu_share": "the CPU share (epoch + pacing callback)",
                "fuel": "the instruction budget (fuel)", "all": "all limits together"}
_OURS = {"sandbox": "the Sandbox, default limits", "sandbox_fuel": "the Sandbox with max_fuel",
         "process": "the ProcessSandbox (no check in the guest; limits kept from outside), default limits"}
#: what the raw cpu_share variant paces to: the whole core, so it measures the checks, never a pause
_FULL_SHARE = ResourceLimits(max_cpu_percent=100, max_execution_time_seconds=3600)
_SANDBOX_LIMITS = ResourceLimits(max_memory_mb=256, max_execution_time_seconds=60)
_SANDBOX_FUEL = _SANDBOX_LIMITS.model_copy(update={"max_fuel": 10**15})
_PY_STARTUP = "print(1)\n"
_PY_COMPUTE = "s = 0\nfor i in range(200000):\n    s += i * i % 7\nprint(s)\n"

_ALLOC = """
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
"""
# the compute tasks take one digit d as payload and return "ok" (4 bytes at 0)
_DIGIT = "(i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48))"

#: the trivial task: returns its payload
ECHO_WAT = f"""(module
  (memory (export "memory") 1)
  {_ALLOC}
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
"""

#: payload d: FNV-1a over 64 KiB 8 x d times
HASH_WAT = f"""(module
  (memory (export "memory") 2)
  (data (i32.const 0) "\\"ok\\"")
  {_ALLOC}
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $rounds i32) (local $i i32) (local $h i32)
    (local.set $rounds (i32.shl {_DIGIT} (i32.const 3)))
    (local.set $h (i32.const 0x811c9dc5))
    (block $done
      (loop $round
        (br_if $done (i32.le_s (local.get $rounds) (i32.const 0)))
        (local.set $i (i32.const 65536))
        (loop $byte
          (local.set $h (i32.mul (i32.xor (local.get $h) (i32.load8_u (local.get $i)))
                                 (i32.const 0x01000193)))
          (i32.store8 (local.get $i) (local.get $h))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $byte (i32.lt_u (local.get $i) (i32.const 131072))))
        (local.set $rounds (i32.sub (local.get $rounds) (i32.const 1)))
        (br $round)))
    (i64.const 4)))
"""

#: payload d: fib(20 + d), recursively
CALLS_WAT = f"""(module
  (memory (export "memory") 1)
  (data (i32.const 0) "\\"ok\\"")
  {_ALLOC}
  (func $fib (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
                     (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (i32.store (i32.const 16) (call $fib (i32.add (i32.const 20) {_DIGIT})))
    (i64.const 4)))
"""

#: payload d: d million iterations of s += i * i
LOOP_WAT = f"""(module
  (memory (export "memory") 1)
  (data (i32.const 0) "\\"ok\\"")
  {_ALLOC}
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $s i32)
    (local.set $n (i32.mul {_DIGIT} (i32.const 1000000)))
    (loop $l
      (local.set $s (i32.add (local.get $s) (i32.mul (local.get $i) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (i32.store (i32.const 16) (local.get $s))
    (i64.const 4)))
"""

#: workload -> (module, payload) of the task workloads
_TASKS: dict[str, tuple[str, Any]] = {"trivial": (ECHO_WAT, {"task": "T1", "n": 1}), "hash": (HASH_WAT, 8),
                                      "calls": (CALLS_WAT, 7), "loop": (LOOP_WAT, 6)}


@dataclass(frozen=True)
class _Mechanism:
    """Which of wasmtime's mechanisms a raw run uses."""

    memory: bool = False
    epoch: bool = False
    pacing: bool = False
    fuel: bool = False


_MECHANISMS: dict[str, _Mechanism] = {
    "raw": _Mechanism(), "memory": _Mechanism(memory=True), "epoch": _Mechanism(epoch=True),
    "cpu_share": _Mechanism(epoch=True, pacing=True), "fuel": _Mechanism(fuel=True),
    "all": _Mechanism(memory=True, epoch=True, pacing=True, fuel=True),
}


class _Engines:
    """The four engine configurations raw runs need, a thread ticking the
    epoch ones every millisecond (as the sandbox does), and the sandbox's own
    pacing callback at a share of 100 % (its per-slice work, never a pause)."""

    def __init__(self) -> None:
        self.engines: dict[tuple[bool, bool], wasmtime.Engine] = {}
        for fuel in (False, True):
            for epoch in (False, True):
                config = wasmtime.Config()
                config.consume_fuel = fuel
                config.epoch_interruption = epoch
                self.engines[(fuel, epoch)] = wasmtime.Engine(config)
        self._stop = threading.Event()
        self._ticking = threading.Event()
        self._ticking.set()
        self._ticker = threading.Thread(target=self._tick, name="bench-epoch", daemon=True)
        self._ticker.start()
        self.slice_ticks = round(PACE_SLICE_S / EPOCH_TICK_S)
        self._pacer: Pacer | None = None
        self.callback = epoch_callback(lambda: self._pacer.on_epoch() if self._pacer else None)

    def engine(self, mechanism: _Mechanism) -> wasmtime.Engine:
        return self.engines[(mechanism.fuel, mechanism.epoch)]

    def _tick(self) -> None:
        ticking = [e for (_, epoch), e in self.engines.items() if epoch]
        while not self._stop.wait(EPOCH_TICK_S):
            self._ticking.wait()
            for engine in ticking:
                engine.increment_epoch()

    def pause(self) -> None:
        """Stop ticking (no epoch variant may run until :meth:`resume`)."""
        self._ticking.clear()

    def resume(self) -> None:
        self._ticking.set()

    def store(self, mechanism: _Mechanism, memory_bytes: int) -> wasmtime.Store:
        store = wasmtime.Store(self.engine(mechanism))
        if mechanism.memory:
            store.set_limits(memory_size=memory_bytes, memories=1, instances=1, tables=8,
                             table_elements=1_000_000)
        if mechanism.fuel:
            store.set_fuel(10**15)
        if mechanism.pacing:  # one run at a time here: the store's pacer is the engines' current one
            self._pacer = Pacer(_FULL_SHARE, HostContext(limits=_FULL_SHARE,
                                                         deadline=time.monotonic() + 3600))
            set_epoch_callback(store, self.callback)
            store.set_epoch_deadline(self.slice_ticks)
        elif mechanism.epoch:
            store.set_epoch_deadline(60_000)
        return store

    def close(self) -> None:
        self._stop.set()
        self._ticking.set()
        self._ticker.join(2)


class _RawTask:
    """A task module run on raw wasmtime under one mechanism: a store per run,
    the module pre-linked once per engine, the sandbox's ABI calls."""

    def __init__(self, engines: _Engines, wat: str) -> None:
        self.engines = engines
        self.pre: dict[tuple[bool, bool], wasmtime.InstancePre] = {}
        for key, engine in engines.engines.items():
            self.pre[key] = wasmtime.Linker(engine).instantiate_pre(wasmtime.Module(engine, wat))

    def run(self, mechanism: _Mechanism, payload: Any) -> Any:
        data = json.dumps(payload, separators=(",", ":")).encode()
        store = self.engines.store(mechanism, 16 * 1024 * 1024)
        instance = self.pre[(mechanism.fuel, mechanism.epoch)].instantiate(store)
        exports = instance.exports(store)
        memory, alloc, run = exports["memory"], exports["alloc"], exports["run"]
        assert isinstance(memory, wasmtime.Memory)
        assert isinstance(alloc, wasmtime.Func) and isinstance(run, wasmtime.Func)
        ptr = alloc(store, len(data))
        memory.write(store, data, ptr)
        packed = run(store, ptr, len(data)) & 0xFFFFFFFFFFFFFFFF
        out = memory.read(store, packed >> 32, (packed >> 32) + (packed & 0xFFFFFFFF))
        return json.loads(out)


class _RawPython:
    """The pinned CPython run on raw wasmtime under one mechanism: a WASI
    command with the script's directory preopened read-only, as the sandbox
    runs it (``runtimes.run_python``)."""

    def __init__(self, engines: _Engines, wasm: Path, script_dir: Path) -> None:
        self.engines = engines
        self.script_dir = script_dir
        self.pre: dict[tuple[bool, bool], wasmtime.InstancePre] = {}
        for key, engine in engines.engines.items():  # about 4 s each: CPython is 26 MB of wasm
            linker = wasmtime.Linker(engine)
            linker.define_wasi()
            self.pre[key] = linker.instantiate_pre(wasmtime.Module.from_file(engine, str(wasm)))

    def run(self, mechanism: _Mechanism, script: str) -> bytes:
        out: list[bytes] = []

        def stdout(data: bytes) -> int:
            out.append(data)
            return len(data)

        wasi = wasmtime.WasiConfig()
        wasi.argv = [runtimes.PYTHON.name, *runtimes.PYTHON.argv(f"{runtimes.SCRIPT_DIR}/{script}")]
        wasi.preopen_dir(str(self.script_dir), runtimes.SCRIPT_DIR, fs_mutable=False)
        wasi.stdout_custom = stdout
        store = self.engines.store(mechanism, 256 * 1024 * 1024)
        store.set_wasi(wasi)
        instance = self.pre[(mechanism.fuel, mechanism.epoch)].instantiate(store)
        start = instance.exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        try:
            start(store)
        except wasmtime.ExitTrap as exc:
            if exc.code != 0:
                raise InfraFabricError(f"raw CPython exited {exc.code}") from None
        return b"".join(out)


def _time(fn: Callable[[], object]) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def _interleaved(phase: str, n: int, warmup: int, runs: dict[str, Callable[[], object]],
                 progress: Progress | None) -> dict[str, list[int]]:
    """``n`` samples of each run, taking them in turn so that drift and load on
    the machine fall on all alike. Each round runs them in a new random order
    (seeded: the same in every run of the bench): in a fixed or rotating order
    each run always follows the same other one, and inherits the caches it left
    (the sandbox's Python-heavy path slowed the raw run after it by 5-13 %)."""
    names = list(runs)
    out: dict[str, list[int]] = {name: [] for name in names}
    step = max(1, n // 50)
    order = random.Random(phase)
    for i in range(n + warmup):
        for name in order.sample(names, len(names)):
            ns = _time(runs[name])
            if i >= warmup:
                out[name].append(ns)
        if progress is not None and (i % step == 0 or i == n + warmup - 1):
            progress(phase, i + 1, n + warmup)
    return out


def _bench_outside(engines: _Engines, workload: str, count: int, warmup: int, raw: Callable[[], object],
                   process: Callable[[], object], operations: dict[str, dict[str, Any]],
                   progress: Progress | None) -> None:
    """``process`` against ``raw``, sampled in turn with no epoch thread ticking
    in this process: a parent that keeps its limits from outside has none, and
    a thread waking every millisecond here slowed the worker on the other core
    by 10-75 % on a 2-vCPU machine (it did not slow code in its own process)."""
    engines.pause()
    time.sleep(_QUIET_S)  # and the sandbox's own epoch thread winds down
    try:
        samples = _interleaved(workload, count, warmup,
                               {"raw": raw, "process": process}, progress)
    finally:
        engines.resume()
    ours, base = summarize(samples["process"]), summarize(samples["raw"])
    operations[f"{workload}.process"] = {
        "what": f"{WORKLOADS[workload]}: {_OURS['process']}; raw sampled beside it, no epoch thread ticking",
        "ours": ours, "raw": base, "ratio": ratio(ours["p50"], base["p50"])}


def _entries(workload: str, samples: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    """One operation per variant: its figures, the raw run's, and the ratio."""
    raw = summarize(samples["raw"])
    entries = {}
    for variant, values in samples.items():
        ours = summarize(values)
        what = (f"{WORKLOADS[workload]}: raw wasmtime, no limit" if variant == "raw" else
                f"{WORKLOADS[workload]}: " + (_LIMIT_NAMES.get(variant) or
                                               _OURS[variant]))
        entries[f"{workload}.{variant}"] = {"what": what, "ours": ours, "raw": raw,
                                            "ratio": ratio(ours["p50"], raw["p50"])}
    return entries


@contextmanager
def _scripts() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="if-bench-py-") as tmp:
        root = Path(tmp)
        for name, text in (("startup.py", _PY_STARTUP), ("compute.py", _PY_COMPUTE)):
            (root / name).write_text(text)
        yield root


def _bench_python(engines: _Engines, n: int, operations: dict[str, dict[str, Any]],
                  progress: Progress | None) -> str:
    """The two Python workloads; returns the runtime's name."""
    # the interpreter compiled by `ifctl chassis setup` (the shared cache), not a recompile
    with Sandbox() as shared, ProcessSandbox() as workers, _scripts() as scripts:
        module = runtimes.compiled(shared, runtimes.PYTHON)
        expected = {"startup.py": b"1\n", "compute.py": str(sum(i * i % 7 for i in range(200000))).encode()}
        for script, source in (("startup.py", _PY_STARTUP), ("compute.py", _PY_COMPUTE)):
            # also builds the metered and the unchecked interpreters, once per machine
            runners: list[tuple[Runner, ResourceLimits]] = [
                (shared, _SANDBOX_LIMITS), (shared, _SANDBOX_FUEL), (workers, _SANDBOX_LIMITS)]
            for runner, limits in runners:
                first = runtimes.run_python(runner, source, limits=limits)
                if first.exit_code != 0 or first.stdout.strip() != expected[script].strip():
                    raise InfraFabricError(f"sandboxed Python failed: {first.stderr[-500:]!r}")
        if progress is not None:
            progress("python_startup", 0, 1)
        raw = _RawPython(engines, runtimes.path(runtimes.PYTHON) or Path(), scripts)
        for workload, script, source, count in (
                ("python_startup", "startup.py", _PY_STARTUP, max(5, n // 10)),
                ("python_compute", "compute.py", _PY_COMPUTE, max(5, n // 20))):
            if raw.run(_MECHANISMS["raw"], script).strip() != expected[script].strip():
                raise InfraFabricError("raw CPython printed something else")
            runs: dict[str, Callable[[], object]] = {
                name: partial(raw.run, mech, script) for name, mech in _MECHANISMS.items()}
            runs["sandbox"] = partial(runtimes.run_python, shared, source, limits=_SANDBOX_LIMITS)
            runs["sandbox_fuel"] = partial(runtimes.run_python, shared, source, limits=_SANDBOX_FUEL)
            operations.update(_entries(workload, _interleaved(workload, count, 1, runs, progress)))
            _bench_outside(engines, workload, count, 1, runs["raw"],
                           partial(runtimes.run_python, workers, source, limits=_SANDBOX_LIMITS),
                           operations, progress)
        return f"{runtimes.PYTHON.interpreter} {runtimes.PYTHON.version} ({module.name})"


def bench_chassis(*, n: int = 200, python: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    """Run the chassis benchmark (``n`` samples of the trivial task; the other
    workloads take a share of it) and return a JSON-ready report."""
    started = time.time()
    t0 = time.perf_counter()
    operations: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    engines = _Engines()
    task_limits = _SANDBOX_LIMITS.model_copy(update={"max_memory_mb": 16})
    task_fuel = _SANDBOX_FUEL.model_copy(update={"max_memory_mb": 16})
    try:
        with tempfile.TemporaryDirectory(prefix="if-bench-chassis-") as tmp, \
                Sandbox(cache_dir=Path(tmp) / "cache") as sandbox, \
                ProcessSandbox(cache_dir=Path(tmp) / "cache") as workers:
            plain = wasmtime.Engine()
            compiles = max(10, n // 10)
            compile_samples = _interleaved(
                "compile", compiles, 2,
                {"ours": _counter(lambda i: sandbox.compile(f";; {i}\n" + ECHO_WAT, name=f"m{i}")),
                 "raw": _counter(lambda i: wasmtime.Module(plain, f";; raw {i}\n" + ECHO_WAT))}, progress)
            operations["compile"] = _pair("compile a small task module from WAT (a new module each sample)",
                                          compile_samples["ours"], compile_samples["raw"])

            def load_from_disk(i: int) -> CompiledModule:
                with Sandbox(cache_dir=Path(tmp) / "cache") as fresh:
                    module = fresh.compile(f";; {i}\n" + ECHO_WAT, name=f"m{i}")
                if module.origin != "disk":
                    raise InfraFabricError(f"expected a disk-cache hit, got {module.origin}")
                return module

            loads = _interleaved("cache_load", compiles, 0, {"ours": _counter(load_from_disk)}, progress)
            operations["cache_load"] = _pair(
                "a fresh Sandbox loads an already compiled module from the disk cache", loads["ours"], None)

            fuel_used: dict[str, int | None] = {}
            for workload, (wat, payload) in _TASKS.items():
                module = sandbox.compile(wat, name=workload)
                unchecked = workers.compile(wat, name=workload)
                raw = _RawTask(engines, wat)
                expected = payload if workload == "trivial" else "ok"
                checks = [raw.run(_MECHANISMS[m], payload) for m in _MECHANISMS]
                checks.append(sandbox.run_task(module, payload, limits=task_limits).output)
                checks.append(workers.run_task(unchecked, payload, limits=task_limits).output)
                metered = sandbox.run_task(module, payload, limits=task_fuel)
                fuel_used[workload] = metered.fuel_used
                if any(c != expected for c in [*checks, metered.output]):
                    raise InfraFabricError(f"the {workload} task did not return {expected!r}")
                runs: dict[str, Callable[[], object]] = {
                    name: partial(raw.run, mech, payload) for name, mech in _MECHANISMS.items()}
                runs["sandbox"] = partial(sandbox.run_task, module, payload, limits=task_limits)
                runs["sandbox_fuel"] = partial(sandbox.run_task, module, payload, limits=task_fuel)
                # the compute workloads take milliseconds a sample: a quarter of n (n=20, the CI size,
                # gives the 8 a sane figure needs, not a figure to judge)
                count = n if workload == "trivial" else max(8, n // 4)
                warmup = max(10, n // 10) if workload == "trivial" else 2
                operations.update(_entries(workload, _interleaved(workload, count, warmup, runs, progress)))
                _bench_outside(engines, workload, count, warmup, runs["raw"],
                               partial(workers.run_task, unchecked, payload, limits=task_limits),
                               operations, progress)
            stats = sandbox.stats

        python_runtime = None
        if python:
            problem = runtimes.problem(runtimes.PYTHON)
            if problem is None:
                python_runtime = _bench_python(engines, n, operations, progress)
            else:
                notes.append(f"Python runtime not installed ({problem}); run `ifctl chassis setup`")
    finally:
        engines.close()

    workloads = [w for w in WORKLOADS if f"{w}.raw" in operations]
    overheads = {w: {v: operations[f"{w}.{v}"]["ratio"] for v in VARIANTS if v != "raw"} for w in workloads}
    targets = []
    rows = list(TARGETS) + [(f"{w}_{limit}", f"{w}.{limit}", "ratio", LIMIT_TARGET,
                             f"{_LIMIT_NAMES[limit]} costs <= 5 % on {w} (p50 / raw p50)")
                            for w in WORKLOADS for limit in LIMITS]
    # every limit kept from outside the guest: what that costs on real work (a trivial task's
    # cost is the pipe round trip, judged by its own target above)
    rows += [(f"{w}_process", f"{w}.process", "ratio", LIMIT_TARGET,
              f"all limits, kept from outside (ProcessSandbox), cost <= 5 % on {w} (p50 / raw p50)")
             for w in WORKLOADS if w != "trivial"]
    for tid, op, metric, threshold, description in rows:
        entry = operations.get(op)
        value: float | None = None
        if entry is not None:
            side, _, stat = metric.partition(".")
            value = entry["ratio"] if metric == "ratio" else (entry.get(side) or {}).get(stat)
        targets.append(target_row(tid, description, op, metric, threshold, value, applies=entry is not None,
                                  note="" if entry is not None else "runtime not installed"))
    return {
        "benchmark": "chassis",
        "n": n,
        "engine": {"name": "wasmtime", "version": version("wasmtime")},
        "workloads": {w: WORKLOADS[w] for w in workloads},
        "overheads": overheads,
        "operations": operations,
        "fuel_used": fuel_used,
        "python_runtime": python_runtime,
        "cache": {"compiled": stats.compiled, "memory_hits": stats.memory_hits,
                  "disk_hits": stats.disk_hits, "disk_writes": stats.disk_writes},
        "limits": {"tasks": task_limits.model_dump(mode="json"),
                   "python": _SANDBOX_LIMITS.model_dump(mode="json"),
                   "sandbox_fuel": {"max_fuel": _SANDBOX_FUEL.max_fuel}},
        "quantiles": QUANTILE_METHOD,
        "targets": targets,
        "notes": notes,
        "machine": machine_info(),
        "started_at": started_at(started),
        "duration_s": round(time.perf_counter() - t0, 2),
    }


def _counter(fn: Callable[[int], object]) -> Callable[[], object]:
    """``fn`` called with 0, 1, 2... (each compile sample needs a new module)."""
    calls = iter(range(1 << 62))
    return lambda: fn(next(calls))


def _pair(what: str, ours: list[int], raw: list[int] | None) -> dict[str, Any]:
    mine = summarize(ours)
    theirs = summarize(raw) if raw is not None else None
    return {"what": what, "ours": mine, "raw": theirs,
            "ratio": ratio(mine["p50"], theirs["p50"]) if theirs else None}

