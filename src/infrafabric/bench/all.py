"""``ifctl bench all``: every benchmark in one run, each figure beside its target
and the raw engine's figure measured in the same run.

:func:`bench_all` runs ``bus``, ``coordinator``, ``witness``, ``chassis`` and
``waste`` one after the other, each on a server of its own (``target`` opens
one: a temporary durable server, or the given one), with the parameters of a
:class:`Plan` (:data:`FULL`: each benchmark's own defaults; :data:`QUICK`: a
CI-sized run that checks the figures are produced and sane). The report holds
every benchmark's own report under ``results`` and one ``summary`` row per
target (:func:`summary_rows`). Targets are reported, never asserted: a miss
changes nothing; a benchmark that cannot run is recorded with its error and
the others still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

from infrafabric.bench._common import Progress, default_warmup, machine_info, started_at
from infrafabric.bench.bus import OPERATIONS as BUS_OPERATIONS
from infrafabric.bench.bus import bench_bus
from infrafabric.bench.chassis import PHASES as CHASSIS_PHASES
from infrafabric.bench.chassis import bench_chassis
from infrafabric.bench.coordinator import PHASES as COORDINATOR_PHASES
from infrafabric.bench.coordinator import bench_coordinator
from infrafabric.bench.waste import PHASES as WASTE_PHASES
from infrafabric.bench.waste import bench_waste
from infrafabric.bench.witness import PHASES as WITNESS_PHASES
from infrafabric.bench.witness import bench_witness

__all__ = ["BENCHMARKS", "FULL", "PHASES", "QUICK", "Plan", "bench_all", "summary_rows"]

#: the benchmarks, in the order they run
BENCHMARKS: tuple[str, ...] = ("bus", "coordinator", "witness", "chassis", "waste")
#: each benchmark's progress phases and their labels
PHASES: dict[str, Mapping[str, str]] = {
    "bus": {k: v[0] for k, v in BUS_OPERATIONS.items()},
    "coordinator": COORDINATOR_PHASES,
    "witness": WITNESS_PHASES,
    "chassis": CHASSIS_PHASES,
    "waste": WASTE_PHASES,
}

#: (url, server description, managed): a server to run one benchmark on
Target = tuple[str, dict[str, Any], bool]


@dataclass(frozen=True)
class Plan:
    """The parameters of every benchmark in one ``bench all`` run."""

    bus_n: int = 2000
    coordinator_n: int = 2000
    witness_n: int = 1000
    verify_entries: int = 100_000
    chassis_n: int = 200
    #: time sandboxed-Python start-up (compiling CPython for the run takes about 20 s)
    chassis_python: bool = True
    waste_tasks: int = 200
    waste_swarms: int = 12
    seed: int = 1
    inflight: int = 64
    pace_ms: float = 1.0

    def describe(self, name: str) -> str:
        """The parameters of benchmark ``name``, for humans."""
        return {
            "bus": f"n={self.bus_n} (+{default_warmup(self.bus_n)} warm-up), {self.inflight} in flight",
            "coordinator": f"n={self.coordinator_n} (+{default_warmup(self.coordinator_n)} warm-up), "
                           f"{self.inflight} in flight",
            "witness": f"n={self.witness_n} appends per writer, verify {self.verify_entries:,} entries",
            "chassis": f"n={self.chassis_n}" + ("" if self.chassis_python else ", no Python start-up"),
            "waste": f"{self.waste_tasks} tasks, {self.waste_swarms} swarms, seed {self.seed}",
        }[name]


#: each benchmark's own defaults (what ``ifctl bench NAME`` runs)
FULL = Plan()
#: a CI-sized run: figures produced and sane, not figures to judge (under a minute on 2 cores)
QUICK = Plan(bus_n=50, coordinator_n=50, witness_n=20, verify_entries=1000, chassis_n=20,
             chassis_python=False, waste_tasks=50)

QUICK_PYTHON_NOTE = ("skipped by --quick: compiling the sandboxed CPython for the run takes about 20 s; "
                     "run without --quick to measure it")

_UNITS = {"p50": "ms", "p95": "ms", "p99": "ms", "max": "ms", "ops_per_s": "ops/s",
          "seconds_per_1000": "s", "seconds": "s", "ratio": "x", "peak_rss_ratio": "x",
          "waste": "share of spend"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _figures(report: Mapping[str, Any], op: str, metric: str) -> tuple[float | None, float | None, str]:
    """(ours, raw, unit) behind a target: for a ratio, each side's p50; for
    ``ours.STAT``, that stat of each side; otherwise the value alone."""
    if report.get("benchmark") == "waste":
        strategy = (report.get("strategies") or {}).get(op) or {}
        return _number(strategy.get(metric)), None, _UNITS.get(metric, "")
    entry = (report.get("operations") or {}).get(op) or {}
    if metric == "ratio":
        stat, head = "p50", "ours"
    else:
        head, _, stat = metric.partition(".")
    if head != "ours":  # e.g. verify's full.seconds or peak_rss_ratio: no raw counterpart
        node = entry.get(head) if stat else entry
        value = (node or {}).get(stat or head) if isinstance(node, Mapping) else None
        return _number(value), None, _UNITS.get(stat or head, "")
    ours = (entry.get("ours") or {}).get(stat)
    raw = entry.get("raw")
    return _number(ours), _number(raw.get(stat)) if isinstance(raw, Mapping) else None, _UNITS.get(stat, "")


def summary_rows(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per target of every benchmark: its value beside the threshold,
    our figure and the raw engine's (same run) where there is one, the
    verdict (``pass`` None when not measured, then ``note`` says why) and
    whether the target applies to this backend and server."""
    rows: list[dict[str, Any]] = []
    for name, report in results.items():
        if "error" in report and "targets" not in report:
            rows.append({"benchmark": name, "id": None, "target": None, "metric": None, "compare": None,
                         "threshold": None, "value": None, "unit": "", "ours": None, "raw": None,
                         "pass": None, "applies": False,
                         "note": f"the benchmark did not run: {report['error']}"})
            continue
        for t in report.get("targets", []):
            ours, raw, unit = _figures(report, t["operation"], t["metric"])
            if t["metric"] == "ratio":
                unit = "x"
            rows.append({"benchmark": name, "id": t["id"], "target": t["target"], "metric": t["metric"],
                         "compare": t["compare"], "threshold": t["threshold"], "value": t["value"],
                         "unit": unit, "ours": ours, "raw": raw, "pass": t["pass"],
                         "applies": t["applies"], "note": t["note"]})
    return rows


def _run_one(name: str, plan: Plan, url: str | None, server: dict[str, Any], cleanup: bool,
             progress: Progress | None) -> dict[str, Any]:
    if name == "chassis":
        report = bench_chassis(n=plan.chassis_n, python=plan.chassis_python, progress=progress)
        if not plan.chassis_python:
            for t in report["targets"]:
                if t["operation"].startswith("python_") and t["value"] is None:
                    t["note"] = QUICK_PYTHON_NOTE
            report["notes"] = [QUICK_PYTHON_NOTE]
        return report
    assert url is not None
    common: dict[str, Any] = {"server": server, "cleanup": cleanup, "progress": progress}
    if name == "bus":
        return asyncio.run(bench_bus(url, plan.bus_n, inflight=plan.inflight, pace_ms=plan.pace_ms, **common))
    if name == "coordinator":
        return asyncio.run(bench_coordinator(url, plan.coordinator_n, inflight=plan.inflight,
                                             pace_ms=plan.pace_ms, **common))
    if name == "witness":
        return asyncio.run(bench_witness(url, plan.witness_n, verify_entries=plan.verify_entries,
                                         inflight=plan.inflight, **common))
    if name == "waste":
        return asyncio.run(bench_waste(url, seed=plan.seed, tasks=plan.waste_tasks, swarms=plan.waste_swarms,
                                       **common))
    raise ValueError(f"unknown benchmark {name!r}")


def bench_all(
    backend: str,
    target: Callable[[], AbstractContextManager[Target]],
    *,
    plan: Plan = FULL,
    only: Sequence[str] = BENCHMARKS,
    progress: Callable[[str], AbstractContextManager[Progress | None]] | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmarks in ``only`` (in :data:`BENCHMARKS` order) with ``plan``.

    ``target()`` opens the server one benchmark runs on (a fresh one for each,
    so each runs as it would alone; chassis needs none); ``progress(name)``
    opens the progress reporter of one benchmark. A benchmark that raises is
    recorded as ``{"benchmark": name, "error": ..., "type": ...}`` and the
    others still run (``on_error`` is told first; it may re-raise); Ctrl-C
    stops the run. Returns ``{"benchmark": "all", "results": {...},
    "summary": [...], ...}``, JSON-ready.
    """
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s): {', '.join(unknown)}")
    started = time.time()
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for name in (b for b in BENCHMARKS if b in only):
        try:
            with (progress(name) if progress is not None else contextlib.nullcontext(None)) as prog:
                if name == "chassis":
                    results[name] = _run_one(name, plan, None, {}, False, prog)
                else:
                    with target() as (url, server, managed):
                        results[name] = _run_one(name, plan, url, server, not managed, prog)
        except Exception as exc:
            if on_error is not None:
                on_error(name, exc)
            failed.append(name)
            results[name] = {"benchmark": name, "error": str(exc).split("\nhint: ")[0],
                             "type": type(exc).__name__}
    return {
        "benchmark": "all",
        "backend": backend,
        "quick": plan == QUICK,
        "plan": asdict(plan),
        "results": results,
        "summary": summary_rows(results),
        "failed": failed,
        "machine": machine_info(),
        "started_at": started_at(started),
        "duration_s": round(time.perf_counter() - t0, 2),
    }
