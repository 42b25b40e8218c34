"""Pieces every ``ifctl bench`` benchmark shares: the error, warm-up and
segment sizes, interleaved latency sampling, concurrent throughput runs in
ABBA segments, report entries and target verdicts.

A benchmark reports; it never fails because of a timing. :class:`BenchError`
is for a run that could not be carried out (a server that is not there, a
create of a fresh key that lost, a message that never arrived).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from infrafabric.bench.stats import ratio, summarize
from infrafabric.errors import InfraFabricError

__all__ = [
    "BenchError",
    "Progress",
    "Side",
    "default_warmup",
    "interleaved",
    "latency_entry",
    "machine_info",
    "segmented_throughput",
    "target_row",
    "throughput_rounds",
    "version",
]

#: progress(phase, done, total), called between samples (never inside a timed window)
Progress = Callable[[str, int, int], None]


class BenchError(InfraFabricError):
    """The benchmark could not run (not a timing verdict: timings never fail it)."""


class Side(Protocol):
    """One side of a comparison ("ours" or "raw")."""

    @property
    def side(self) -> str: ...


S = TypeVar("S", bound=Side)


def default_warmup(n: int) -> int:
    """Samples discarded before measuring: 10 % of n, at least 10, at most 200."""
    return min(200, max(10, n // 10))


def throughput_rounds(n: int) -> int:
    """Segments per side of a throughput run: n/100, between 2 and 8."""
    return max(2, min(8, n // 100))


def version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "infrafabric": version("infrafabric")}


def started_at(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))


async def interleaved(phase: str, sides: Sequence[S], total: int, warmup: int,
                      sample: Callable[[S, int], Awaitable[int | None]],
                      progress: Progress | None) -> dict[str, list[int]]:
    """Run ``sample`` for i in range(total) on every side, alternating which
    side goes first; keep the samples after the first ``warmup``. A sample of
    None is a lost message (not recorded)."""
    out: dict[str, list[int]] = {s.side: [] for s in sides}
    step = max(1, total // 100)
    for i in range(total):
        order = sides if i % 2 == 0 else sides[::-1]
        for s in order:
            ns = await sample(s, i)
            if i >= warmup and ns is not None:
                out[s.side].append(ns)
        if progress is not None and (i % step == 0 or i == total - 1):
            progress(phase, i + 1, total)
    return out


def latency_entry(label: str, what: str, samples: dict[str, list[int]],
                  calls: dict[str, str]) -> dict[str, Any]:
    """The report entry of one latency operation: ours, raw (None if there is
    no raw side), ours/raw on p50 and p99, and the calls each side made."""
    ours = summarize(samples["ours"])
    raw = summarize(samples["raw"]) if "raw" in samples else None
    return {
        "label": label,
        "what": what,
        "ours": ours,
        "raw": raw,
        "ratio": ratio(ours["p50"], raw["p50"]) if raw else None,
        "ratio_p99": ratio(ours["p99"], raw["p99"]) if raw else None,
        "calls": calls,
    }


async def run_concurrently(op: Callable[[int], Awaitable[None]], start: int, count: int,
                           inflight: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) to run ``op(i)`` for i in
    start .. start+count-1 with ``inflight`` of them in flight."""
    indices = iter(range(start, start + count))

    async def worker() -> None:
        for i in indices:
            await op(i)

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(inflight, count)))))
    return time.perf_counter() - t0, time.process_time() - c0


async def segmented_throughput(
    phase: str, sides: Sequence[tuple[str, Callable[[int], Awaitable[None]]]], n: int,
    inflight: int, progress: Progress | None,
) -> dict[str, dict[str, Any]]:
    """``n`` operations per side with ``inflight`` in flight, in
    :func:`throughput_rounds` segments run ABBA ABBA ..., so load that changes
    during the run (a shared machine) hits every side alike. Operation i of a
    side is ``op(i)`` (i in 0..n-1, each once). Per side: ops, seconds,
    ops_per_s and the CPU time this (client) process spent per operation,
    which is what limits a Python client and is far less sensitive to other
    load than ops/s."""
    rounds = throughput_rounds(n)
    bounds = [n * k // rounds for k in range(rounds + 1)]
    seconds = {name: 0.0 for name, _ in sides}
    cpu = {name: 0.0 for name, _ in sides}
    plan = [(name, op, k) for k in range(rounds)
            for name, op in (sides if k % 2 == 0 else sides[::-1])]
    for step, (name, op, k) in enumerate(plan):
        if progress is not None:
            progress(phase, step, len(plan))
        wall, used = await run_concurrently(op, bounds[k], bounds[k + 1] - bounds[k], inflight)
        seconds[name] += wall
        cpu[name] += used
    if progress is not None:
        progress(phase, len(plan), len(plan))
    out: dict[str, dict[str, Any]] = {}
    for name, _ in sides:
        s = seconds[name]
        out[name] = {"ops": n, "seconds": round(s, 4),
                     "ops_per_s": round(n / s, 1) if s else None,
                     "client_cpu_us_per_op": round(cpu[name] / n * 1e6, 1)}
    return out


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    ">=": lambda v, t: v >= t,
}


def target_row(tid: str, description: str, operation: str, metric: str, threshold: float,
               value: float | None, *, applies: bool, note: str = "",
               compare: str = "<=") -> dict[str, Any]:
    """One target verdict: ``pass`` is None when the value could not be
    measured here. Reported, never asserted."""
    passed = None if value is None else bool(_COMPARE[compare](value, threshold))
    if value is None:
        note = note or "not measurable here"
    return {"id": tid, "target": description, "operation": operation, "metric": metric,
            "compare": compare, "threshold": threshold, "value": value, "pass": passed,
            "applies": applies, "note": note}


def metric_value(ops: dict[str, dict[str, Any]], op: str, metric: str) -> float | None:
    """``ratio`` or ``side.stat`` (e.g. ``ours.p99``) of operation ``op``, or None."""
    entry = ops.get(op, {})
    if metric == "ratio":
        value = entry.get("ratio")
    else:
        side, _, stat = metric.partition(".")
        value = (entry.get(side) or {}).get(stat)
    return None if value is None else float(value)
