"""``ifctl bench scale``: what the hand-out costs as the board grows.

For each board size, in a fresh namespace on the server of the URL:

* **import**: ``create_tasks`` of the whole board through the assembled
  fleet (governed and witnessed: every task gets its witness entry), one
  call, timed end to end; tasks per second. A fifth of the tasks depend on
  the one before them, so statuses are derived, not just written.
* **next_task**: ``next_task`` of one registered swarm, governed (the
  governor is the claim policy) and witnessed (the claim's entry is
  written), one call at a time, each claiming a fresh task; p50 and p99.
* **bus CAS**, in the same run: one compare-and-swap through the bus client
  (``update`` of one key at its revision), the floor any claim pays.

Targets (from the issue; reported beside each figure, never asserted):
``next_task`` p50 at the largest board ≤ 1.5 x p50 at the smallest;
``next_task`` p50 ≤ 4 x bus CAS p50 and p99 ≤ 10 ms; import ≥ 2,000 tasks/s.
Still to come in this benchmark: create→first claim with 10, 100 and 1,000
agents registered (wake-ups per task), and 1,000 simulated agents draining
a 20,000-task board.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from infrafabric.bench._common import (
    Progress,
    clean_namespace,
    machine_info,
    started_at,
    target_row,
    with_namespace,
)
from infrafabric.bench.stats import summarize
from infrafabric.bus import connect
from infrafabric.fleet import assemble

__all__ = ["IMPORT_TARGET", "bench_scale"]

#: tasks per second a bulk import should reach
IMPORT_TARGET = 2000.0
SWARM = "bench-scale"


def _board(size: int) -> list[dict[str, Any]]:
    return [{"id": f"T{i:06d}", "title": f"task {i}", "dependencies": [f"T{i - 1:06d}"] if i % 5 == 4 else []}
            for i in range(size)]


async def bench_scale(url: str, *, sizes: tuple[int, ...] = (100, 1000, 10000), n: int = 50,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Time the import and the governed, witnessed hand-out at each board size."""
    t0 = time.time()
    runs: list[dict[str, Any]] = []
    for size in sizes:
        phase = f"board of {size:,}"
        ns_url = with_namespace(url, f"benchscale{uuid.uuid4().hex[:10]}")
        async with connect(ns_url) as bus:
            fleet = assemble(bus, signer=None, actor="bench")
            try:
                if progress is not None:
                    progress(phase, 0, 3)
                started = time.perf_counter()
                await fleet.coordinator.create_tasks(_board(size))
                took = time.perf_counter() - started
                await fleet.register_swarm(SWARM, [])
                if progress is not None:
                    progress(phase, 1, 3)
                calls = min(n, size * 4 // 5)  # the available ones
                hands, cas = [], []
                await bus.put("bench/cas", b"x" * 200)
                for _ in range(calls):
                    started_ns = time.perf_counter_ns()
                    outcome = await fleet.coordinator.next_task(SWARM)
                    hands.append(time.perf_counter_ns() - started_ns)
                    if outcome is None:
                        raise RuntimeError(f"next_task found nothing on a board of {size}")
                    entry = await bus.get("bench/cas")
                    assert entry is not None
                    started_ns = time.perf_counter_ns()
                    await bus.update("bench/cas", entry.value, entry.revision)
                    cas.append(time.perf_counter_ns() - started_ns)
                if progress is not None:
                    progress(phase, 2, 3)
            finally:
                await fleet.close()
            await clean_namespace(bus, None)
        runs.append({"tasks": size, "import_s": round(took, 3), "import_per_s": round(size / took, 1),
                     "next_task": summarize(hands), "bus_cas": summarize(cas)})
    first, last = runs[0], runs[-1]
    ratio_sizes = last["next_task"]["p50"] / first["next_task"]["p50"] if first["next_task"]["p50"] else None
    targets = [
        target_row("flat", f"next_task p50 at {last['tasks']:,} tasks ≤ 1.5 x p50 at {first['tasks']:,}",
                   "next_task", "p50 ratio", 1.5, ratio_sizes, applies=len(runs) > 1),
        target_row("vs-cas", f"next_task p50 ≤ 4 x bus CAS p50 ({last['tasks']:,} tasks)", "next_task",
                   "p50 / bus CAS p50", 4.0,
                   last["next_task"]["p50"] / last["bus_cas"]["p50"] if last["bus_cas"]["p50"] else None,
                   applies=True),
        target_row("p99", f"next_task p99 ≤ 10 ms ({last['tasks']:,} tasks)", "next_task", "p99", 10.0,
                   last["next_task"]["p99"], applies=True),
        target_row("import", f"import ≥ {IMPORT_TARGET:,.0f} tasks/s ({last['tasks']:,} tasks)", "import",
                   "tasks/s", IMPORT_TARGET, last["import_per_s"], applies=True, compare=">="),
    ]
    return {"benchmark": "scale", "started_at": started_at(t0), "duration_s": round(time.time() - t0, 1),
            "machine": machine_info(), "n": n, "runs": runs, "targets": targets}
