"""``ifctl bench chassis``: what the sandbox costs, against raw wasmtime in the same run.

Figures (milliseconds, nearest-rank percentiles, see :mod:`infrafabric.bench.stats`):

* ``compile`` — a small task module compiled from WAT (each sample a new
  module, so no cache can answer) vs ``wasmtime.Module`` on a plain engine;
* ``cache_load`` — the same module loaded by a fresh :class:`Sandbox` from
  the on-disk cache (deserialize), the cost a new process pays;
* ``trivial_task`` — one task end to end through ``Sandbox.run_task`` (fresh
  store with limits, instantiate, JSON in, JSON out) vs raw wasmtime doing
  the same with a pre-instantiated module and no limits (target: ours ≤ 1 ms
  median);
* ``work_task`` — a CPU-bound task (FNV-1a over a 64 KiB buffer, repeated)
  under the sandbox's limits vs the same module on a plain engine with no
  fuel or epoch: the limits' overhead per task (target ≤ 5 %);
* ``python_startup`` — ``print(1)`` in sandboxed CPython (compiled module
  cached) when the runtime is installed (target ≤ 100 ms median).

Samples of ours and raw alternate, so load from other work on the machine
hits both alike. Targets are reported, never asserted.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

from infrafabric.bench._common import Progress, machine_info, started_at, target_row, version
from infrafabric.bench.stats import QUANTILE_METHOD, ratio, summarize
from infrafabric.chassis import runtimes
from infrafabric.chassis.models import ResourceLimits
from infrafabric.chassis.sandbox import CompiledModule, Sandbox
from infrafabric.errors import InfraFabricError

__all__ = ["PHASES", "TARGETS", "WORK_ROUNDS", "bench_chassis"]

PHASES: dict[str, str] = {"compile": "compiling modules", "cache_load": "loading from the cache",
                          "trivial_task": "trivial tasks", "work_task": "CPU-bound tasks",
                          "python_startup": "Python start-up"}
#: the ``work_task`` payload: 8 x this many rounds of FNV-1a over 64 KiB (about 5-10 ms)
WORK_ROUNDS = 8
#: (id, operation, metric, threshold, description)
TARGETS: list[tuple[str, str, str, float, str]] = [
    ("trivial_task_p50", "trivial_task", "ours.p50", 1.0, "trivial task end to end <= 1 ms median"),
    ("limits_overhead", "work_task", "ratio", 1.05, "limits cost <= 5 % per realistic task (ours/raw p50)"),
    ("python_startup_p50", "python_startup", "ours.p50", 100.0, "Python snippet start-up <= 100 ms median"),
]

_ALLOC = """
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
"""

#: the trivial task: returns its payload
ECHO_WAT = f"""(module
  (memory (export "memory") 1)
  {_ALLOC}
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
"""

#: the CPU-bound task: payload = one digit d; FNV-1a over 64 KiB 8 x d times; returns "ok"
WORK_WAT = f"""(module
  (memory (export "memory") 2)
  (data (i32.const 0) "\\"ok\\"")
  {_ALLOC}
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $rounds i32) (local $i i32) (local $h i32)
    (local.set $rounds (i32.shl (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 48)) (i32.const 3)))
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


class _Raw:
    """Raw wasmtime, no limits: a plain engine, a store per task, a linker
    pre-instantiation like ours, the same ABI calls."""

    def __init__(self, wat: str) -> None:
        self.engine = wasmtime.Engine()
        self.module = wasmtime.Module(self.engine, wat)
        self.pre = wasmtime.Linker(self.engine).instantiate_pre(self.module)

    def run(self, payload: Any) -> Any:
        data = json.dumps(payload, separators=(",", ":")).encode()
        store = wasmtime.Store(self.engine)
        instance = self.pre.instantiate(store)
        exports = instance.exports(store)
        memory, alloc, run = exports["memory"], exports["alloc"], exports["run"]
        assert isinstance(memory, wasmtime.Memory)
        assert isinstance(alloc, wasmtime.Func) and isinstance(run, wasmtime.Func)
        ptr = alloc(store, len(data))
        memory.write(store, data, ptr)
        packed = run(store, ptr, len(data)) & 0xFFFFFFFFFFFFFFFF
        out = memory.read(store, packed >> 32, (packed >> 32) + (packed & 0xFFFFFFFF))
        return json.loads(out)


def _time(fn: Callable[[], object]) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def _pairs(phase: str, n: int, warmup: int, ours: Callable[[int], object],
           raw: Callable[[int], object] | None, progress: Progress | None) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"ours": [], "raw": []}
    step = max(1, n // 50)
    for i in range(n + warmup):
        sides = [("ours", ours)] + ([("raw", raw)] if raw is not None else [])
        for side, fn in (sides if i % 2 == 0 else sides[::-1]):
            ns = _time(lambda fn=fn, i=i: fn(i))  # type: ignore[misc]
            if i >= warmup:
                out[side].append(ns)
        if progress is not None and (i % step == 0 or i == n + warmup - 1):
            progress(phase, i + 1, n + warmup)
    if raw is None:
        del out["raw"]
    return out


def _entry(what: str, samples: dict[str, list[int]]) -> dict[str, Any]:
    ours = summarize(samples["ours"])
    raw = summarize(samples["raw"]) if "raw" in samples else None
    return {"what": what, "ours": ours, "raw": raw,
            "ratio": ratio(ours["p50"], raw["p50"]) if raw else None}


def bench_chassis(*, n: int = 200, python: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    """Run the chassis benchmark (``n`` samples per figure; fewer for compile
    and Python) and return a JSON-ready report."""
    started = time.time()
    t0 = time.perf_counter()
    operations: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    limits = ResourceLimits(max_memory_mb=16, max_fuel=10_000_000_000, max_execution_time_seconds=30)
    with tempfile.TemporaryDirectory(prefix="if-bench-chassis-") as tmp, \
            Sandbox(cache_dir=Path(tmp) / "cache") as sandbox:
        plain = wasmtime.Engine()
        compiles = max(10, n // 10)
        operations["compile"] = _entry(
            "compile a small task module from WAT (a new module each sample)",
            _pairs("compile", compiles, 2,
                   lambda i: sandbox.compile(f";; {i}\n" + ECHO_WAT, name=f"m{i}"),
                   lambda i: wasmtime.Module(plain, f";; raw {i}\n" + ECHO_WAT), progress))

        def load_from_disk(i: int) -> CompiledModule:
            with Sandbox(cache_dir=Path(tmp) / "cache") as fresh:
                module = fresh.compile(f";; {i}\n" + ECHO_WAT, name=f"m{i}")
            if module.origin != "disk":
                raise InfraFabricError(f"expected a disk-cache hit, got {module.origin}")
            return module

        operations["cache_load"] = _entry(
            "a fresh Sandbox loads an already compiled module from the disk cache",
            _pairs("cache_load", compiles, 0, load_from_disk, None, progress))

        echo = sandbox.compile(ECHO_WAT, name="echo")
        raw_echo = _Raw(ECHO_WAT)
        payload = {"task": "T1", "n": 1}
        echoed = sandbox.run_task(echo, payload, limits=limits).output
        if payload != echoed or payload != raw_echo.run(payload):
            raise InfraFabricError("the echo task did not echo")
        operations["trivial_task"] = _entry(
            "one trivial task end to end: new store with limits, instantiate, JSON in and out",
            _pairs("trivial_task", n, max(10, n // 10),
                   lambda i: sandbox.run_task(echo, payload, limits=limits),
                   lambda i: raw_echo.run(payload), progress))

        work = sandbox.compile(WORK_WAT, name="work")
        raw_work = _Raw(WORK_WAT)
        rounds = WORK_ROUNDS
        works = max(20, n // 4)
        operations["work_task"] = _entry(
            f"a CPU-bound task ({8 * rounds} x FNV-1a over 64 KiB): fuel + epoch + memory limits vs none",
            _pairs("work_task", works, 4,
                   lambda i: sandbox.run_task(work, rounds, limits=limits),
                   lambda i: raw_work.run(rounds), progress))
        fuel = sandbox.run_task(work, rounds, limits=limits).fuel_used

        python_version = None
        if python:
            problem = runtimes.problem(runtimes.PYTHON)
            if problem is None:
                # the interpreter compiled by `ifctl chassis setup` (the shared cache), not a 5-17 s recompile
                with Sandbox() as shared:
                    module = runtimes.compiled(shared, runtimes.PYTHON)
                    python_version = runtimes.PYTHON.name
                    first = runtimes.run_python(shared, "print(1)")
                    if first.exit_code != 0 or first.stdout.strip() != b"1":
                        raise InfraFabricError(f"sandboxed Python failed: {first.stderr[-500:]!r}")
                    operations["python_startup"] = _entry(
                        f"print(1) in sandboxed CPython ({module.name}, compiled module cached)",
                        _pairs("python_startup", max(5, n // 20), 1,
                               lambda i: runtimes.run_python(shared, "print(1)"), None, progress))
            else:
                notes.append(f"Python runtime not installed ({problem}); run `ifctl chassis setup`")
        stats = sandbox.stats

    targets = []
    for tid, op, metric, threshold, description in TARGETS:
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
        "operations": operations,
        "work_task_fuel": fuel,
        "python_runtime": python_version,
        "cache": {"compiled": stats.compiled, "memory_hits": stats.memory_hits,
                  "disk_hits": stats.disk_hits, "disk_writes": stats.disk_writes},
        "limits": limits.model_dump(mode="json"),
        "quantiles": QUANTILE_METHOD,
        "targets": targets,
        "notes": notes,
        "machine": machine_info(),
        "started_at": started_at(started),
        "duration_s": round(time.perf_counter() - t0, 2),
    }
