"""``ifctl bench scale``: what the hand-out costs as the board grows.

For each board size, in a fresh namespace on the server of the URL:

* **import**: ``create_tasks`` of the whole board through the assembled
  fleet (governed and witnessed: every task gets its witness entry), one
  call, timed end to end; tasks per second. A fifth of the tasks depend on
  the one before them, so statuses are derived, not just written.
* **next_task, one-shot**: ``next_task`` of one registered swarm, governed
  (the governor is the claim policy) and witnessed (the claim's entry is
  written), one call at a time, each claiming a fresh task through a fleet
  assembled for it alone (as ``ifctl task next`` does in its process:
  nothing learnt by an earlier call), closed after it (its witness entry
  lands then, before the next call); p50 and p99.
* **next_task, long-lived**: the same through one fleet whose coordinator's
  watcher runs (an ``ifctl mcp`` server's: the path agents take), in the same
  run; between calls, what the last one left to do after it answered (its
  witness entry, marking its slot dead, reading ahead) is let finish, as an
  agent works on its task between hand-outs (the drain measures them under
  load).
* **bus CAS** and **raw CAS**, in the same run: one compare-and-swap through
  the bus client (``update`` of one key at its revision), the floor any claim
  pays, and the same through the engine's own client, each timed beside every
  hand-out.
* **raw create rate**: the engine's own client creating fresh keys, 256 in
  flight (what an import is measured against).
* **wake-ups**: with 10, 100 and 1,000 agents registered and all waiting in
  ``next_task`` (one long-lived fleet), a task is created by another (as a
  CLI would); the time from the create call to the first claim, and how many
  agents the push woke for it (each woken agent tries to claim it). The
  board's first task is timed apart (``first_create_to_claim_ms``): its
  create founds the ready index and the maker's witness finds the chain's
  head, once per board and process, not per task.
* **drain**: 1,000 simulated agents (async clients) in 4 processes, each
  process one fleet with its watcher, drain a 20,000-task board; tasks/s and
  the number of tasks completed more than once (must be 0).

Targets (from the issue; reported beside each figure, never asserted):
``next_task`` p50 at the largest board ≤ 1.5 x p50 at the smallest;
``next_task`` p50 ≤ 4 x raw CAS p50 (the engine's own client; the bus CAS on
memory) and p99 ≤ 10 ms, one-shot and long-lived (``-served`` rows); import ≥ 2,000 tasks/s;
create→first claim p99 with the most agents ≤ 2 x that with the fewest; 0
duplicate completions in the drain.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from infrafabric.bench._common import (
    BenchError,
    Progress,
    WorkerProcess,
    clean_namespace,
    machine_info,
    started_at,
    target_row,
    with_namespace,
)
from infrafabric.bench.bus import Driver, open_raw
from infrafabric.bench.stats import summarize
from infrafabric.bus import EventBus, connect, parse_url
from infrafabric.coordinator import TaskStatus
from infrafabric.errors import InfraFabricError
from infrafabric.fleet import Fleet, assemble
from infrafabric.serving import tune_gc

__all__ = ["IMPORT_TARGET", "bench_scale"]

#: tasks per second a bulk import should reach
IMPORT_TARGET = 2000.0
SWARM = "bench-scale"
DRAIN_WORKER = "infrafabric.bench._drain_worker"
#: keys the raw create rate writes
RAW_CREATES = 2000


def _board(size: int) -> list[dict[str, Any]]:
    return [{"id": f"T{i:06d}", "title": f"task {i}", "dependencies": [f"T{i - 1:06d}"] if i % 5 == 4 else []}
            for i in range(size)]


async def bench_scale(url: str, *, sizes: tuple[int, ...] = (100, 1000, 10000), n: int = 50,
                      agents: tuple[int, ...] = (10, 100, 1000), rounds: int = 20,
                      drain_agents: int = 1000, drain_tasks: int = 20000, processes: int = 4,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Every figure of the module docs, in one run on the server of ``url``.
    This process runs the long-lived side as ``ifctl mcp`` does, with the
    garbage collector fitted to a server (:func:`infrafabric.serving.tune_gc`)."""
    t0 = time.time()
    tune_gc()
    runs = [await _board_run(url, size, n, progress) for size in sizes]
    raw = await _raw_rates(url, n, progress)
    wakeups = [await _wakeup_run(url, count, rounds, progress) for count in agents]
    drain = await _drain(url, drain_agents, drain_tasks, processes, progress) if drain_agents else None
    first, last = runs[0], runs[-1]
    served = last["next_task_long_lived"]
    # the floor is the engine's own client's CAS, timed beside each hand-out (the bus's
    # CAS where the engine has no other client: memory)
    floor_run = last["raw_cas"] if last.get("raw_cas") else last["bus_cas"]
    floor, floor_name = floor_run["p50"], ("raw CAS" if last.get("raw_cas") else "bus CAS")
    # a hand-out is at least one compare-and-swap: beside each p99, the engine's own in the same run
    tail = f"{floor_name} p99 in the same run: {floor_run['p99']} ms" if floor_run["p99"] is not None else ""
    ratio_sizes = last["next_task"]["p50"] / first["next_task"]["p50"] if first["next_task"]["p50"] else None
    wake_ratio = (wakeups[-1]["create_to_claim"]["p99"] / wakeups[0]["create_to_claim"]["p99"]
                  if len(wakeups) > 1 and wakeups[0]["create_to_claim"]["p99"] else None)
    targets = [
        target_row("flat", f"next_task p50 at {last['tasks']:,} tasks ≤ 1.5 x p50 at {first['tasks']:,}",
                   "next_task", "p50 ratio", 1.5, ratio_sizes, applies=len(runs) > 1),
        target_row("vs-cas", f"next_task p50 ≤ 4 x {floor_name} p50 ({last['tasks']:,} tasks)", "next_task",
                   f"p50 / {floor_name} p50", 4.0,
                   last["next_task"]["p50"] / floor if floor else None, applies=True),
        target_row("p99", f"next_task p99 ≤ 10 ms ({last['tasks']:,} tasks)", "next_task", "p99", 10.0,
                   last["next_task"]["p99"], applies=True, note=tail),
        target_row("vs-cas-served",
                   f"long-lived next_task p50 ≤ 4 x {floor_name} p50 ({last['tasks']:,} tasks)",
                   "next_task_long_lived", f"p50 / {floor_name} p50", 4.0,
                   served["p50"] / floor if served["p50"] and floor else None, applies=True),
        target_row("p99-served", f"long-lived next_task p99 ≤ 10 ms ({last['tasks']:,} tasks)",
                   "next_task_long_lived", "p99", 10.0, served["p99"], applies=True, note=tail),
        target_row("import", f"import ≥ {IMPORT_TARGET:,.0f} tasks/s ({last['tasks']:,} tasks)", "import",
                   "tasks/s", IMPORT_TARGET, last["import_per_s"], applies=True, compare=">="),
        target_row("wakeup", f"create→first claim p99 with {agents[-1]:,} agents ≤ 2 x with {agents[0]:,}",
                   "wakeups", "p99 ratio", 2.0, wake_ratio, applies=len(wakeups) > 1),
        target_row("duplicates", "0 tasks completed twice in the drain", "drain", "duplicates", 0,
                   None if drain is None else drain["duplicates"], applies=drain is not None),
    ]
    return {"benchmark": "scale", "started_at": started_at(t0), "duration_s": round(time.time() - t0, 1),
            "machine": machine_info(),
            "gc": {"threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()},
            "n": n, "runs": runs, "raw": raw, "wakeups": wakeups, "drain": drain, "targets": targets}


async def _board_run(url: str, size: int, n: int, progress: Progress | None) -> dict[str, Any]:
    """Import a board of ``size``, then time ``next_task`` one-shot and long-lived."""
    phase = f"board of {size:,}"
    run = f"benchscale{uuid.uuid4().hex[:10]}"
    ns_url = with_namespace(url, run)
    async with connect(ns_url) as bus:
        fleet = assemble(bus, signer=None, actor="bench")
        raw, _info = await open_raw(parse_url(url), bus, run + "raw", bus.timeout)
        try:
            if progress is not None:
                progress(phase, 0, 3)
            started = time.perf_counter()
            await fleet.coordinator.create_tasks(_board(size))
            took = time.perf_counter() - started
            await fleet.register_swarm(SWARM, [])
            if progress is not None:
                progress(phase, 1, 3)
            calls = min(n, size * 4 // 5 // 2)  # the available ones, half for each way
            hands, cas, raw_cas = await _hand_outs(bus, raw, None, calls, size, 0)
            lived: dict[str, Any]
            try:
                await fleet.coordinator.start()  # now as a long-lived server's coordinator
                watched, more_cas, more_raw = await _hand_outs(bus, raw, fleet, calls, size, 1)
                cas, raw_cas = cas + more_cas, raw_cas + more_raw
                lived = summarize(watched)
            except InfraFabricError as exc:  # reported beside the figures, not hidden
                lived = {**summarize([]), "error": f"{type(exc).__name__}: {exc.message}"}
            if progress is not None:
                progress(phase, 2, 3)
        finally:
            await fleet.close()
            if raw is not None:
                await raw.close(cleanup=True)
        await clean_namespace(bus, None)
    return {"tasks": size, "import_s": round(took, 3), "import_per_s": round(size / took, 1),
            "next_task": summarize(hands), "next_task_long_lived": lived,
            "bus_cas": summarize(cas), "raw_cas": summarize(raw_cas) if raw_cas else None}


async def _hand_outs(bus: EventBus, raw: Driver | None, fleet: Fleet | None, calls: int, size: int,
                     run: int) -> tuple[list[int], list[int], list[int]]:
    """``calls`` hand-outs through ``fleet`` (long-lived), or each through a
    fleet of its own (None: one-shot, as ``ifctl task next`` assembles one
    per process, nothing learnt by the call before), each beside a bus CAS
    and a CAS through the engine's own client (``raw``, if there is one, on
    a key of this ``run``'s)."""
    hands, cas, raw_cas = [], [], []
    await bus.put("bench/cas", b"x" * 200)
    raw_rev = None if raw is None else await raw.create("cas", run)
    for _ in range(calls):
        own = assemble(bus, signer=None, actor="bench") if fleet is None else fleet
        if fleet is not None:  # what the last call left to do after it answered, done
            await asyncio.gather(fleet.coordinator.ready.settle(10), fleet.witness.settle(10))
        started_ns = time.perf_counter_ns()
        outcome = await own.coordinator.next_task(SWARM)
        hands.append(time.perf_counter_ns() - started_ns)
        if fleet is None:
            await own.close()  # (its witness entry lands here, as a CLI process's does before it exits)
        if outcome is None:
            raise BenchError(f"next_task found nothing on a board of {size}")
        entry = await bus.get("bench/cas")
        assert entry is not None
        started_ns = time.perf_counter_ns()
        await bus.update("bench/cas", entry.value, entry.revision)
        cas.append(time.perf_counter_ns() - started_ns)
        if raw is not None and raw_rev is not None:
            started_ns = time.perf_counter_ns()
            raw_rev = await raw.update("cas", run, raw_rev)
            raw_cas.append(time.perf_counter_ns() - started_ns)
    return hands, cas, raw_cas


async def _raw_rates(url: str, n: int, progress: Progress | None) -> dict[str, Any] | None:
    """The engine's own client: one CAS at a time (p50), and fresh creates, 256 in flight."""
    if progress is not None:
        progress("raw engine", 0, 1)
    run = f"benchraw{uuid.uuid4().hex[:10]}"
    async with connect(with_namespace(url, run)) as bus:
        raw, _info = await open_raw(parse_url(url), bus, run, bus.timeout)
        if raw is None:
            return None
        try:
            rev = await raw.create("cas", 0)
            assert rev is not None
            cas = []
            for _ in range(max(n, 20)):
                started = time.perf_counter_ns()
                new = await raw.update("cas", 0, rev)
                cas.append(time.perf_counter_ns() - started)
                assert new is not None
                rev = new
            gate = asyncio.Semaphore(256)

            async def create(i: int) -> None:
                async with gate:
                    await raw.create("new", i)

            started_s = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(RAW_CREATES)))
            rate = RAW_CREATES / (time.perf_counter() - started_s)
        finally:
            await raw.close(cleanup=True)
    return {"cas": summarize(cas), "creates_per_s": round(rate, 1), "creates": RAW_CREATES}


async def _wakeup_run(url: str, agents: int, rounds: int, progress: Progress | None) -> dict[str, Any]:
    """``agents`` waiting in next_task (one long-lived fleet); another fleet
    creates a task ``rounds`` times: create→first claim, and agents woken."""
    phase = f"wake-ups, {agents:,} agents"
    ns_url = with_namespace(url, f"benchwake{uuid.uuid4().hex[:10]}")
    async with connect(ns_url) as bus, connect(ns_url) as maker_bus:
        waiters = assemble(bus, signer=None, actor="bench")
        maker = assemble(maker_bus, signer=None, actor="bench")
        names = [f"agent-{i:04d}" for i in range(agents)]
        try:
            gate = asyncio.Semaphore(64)

            async def register(name: str) -> None:
                async with gate:
                    await waiters.register_swarm(name, [])

            await asyncio.gather(*(register(name) for name in names))
            await waiters.coordinator.start()
            claimed: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
            woken: Counter[str] = Counter()
            original = waiters.coordinator._claim_whole

            async def counted(swarm_id: str, task_id: str, lease_ttl: float | None) -> Any:
                woken[task_id] += 1
                return await original(swarm_id, task_id, lease_ttl)

            waiters.coordinator._claim_whole = counted  # type: ignore[method-assign]
            pushed: Counter[str] = Counter()
            for side in (maker, waiters):  # the maker pushes first; the waiters' watcher follows up
                side.coordinator.push_task_to_swarm = _counting(  # type: ignore[method-assign,assignment]
                    side.coordinator.push_task_to_swarm, pushed)

            async def agent(name: str) -> None:
                while True:
                    got = await waiters.coordinator.next_task(name, wait=120)
                    if got is not None:
                        await claimed.put((name, got.task_id, time.perf_counter_ns()))

            crowd = [asyncio.ensure_future(agent(name)) for name in names]
            try:
                await _until_waiting(waiters, agents)
                latencies, wakes, pushes = [], [], []
                first = 0
                for r in range(-1, rounds):
                    if progress is not None:
                        progress(phase, r + 1, rounds + 1)
                    started = time.perf_counter_ns()
                    await maker.coordinator.create_task({"id": f"W{r:04d}", "title": "wake"})
                    _winner, task_id, at = await asyncio.wait_for(claimed.get(), 60)
                    await _until_waiting(waiters, agents)  # the winner waits again; pushes settle
                    if r < 0:  # the board's first task: founds the index, finds the witness head
                        first = at - started
                        continue
                    latencies.append(at - started)
                    wakes.append(woken[task_id])
                    pushes.append(pushed[task_id])
            finally:
                for job in crowd:
                    job.cancel()
                await asyncio.gather(*crowd, return_exceptions=True)
        finally:
            await maker.close()
            await waiters.close()
        await clean_namespace(bus, None)
    return {"agents": agents, "rounds": rounds, "create_to_claim": summarize(latencies),
            "first_create_to_claim_ms": round(first / 1e6, 3),
            "pushes_per_task": {"mean": round(statistics.fmean(pushes), 2), "max": max(pushes)},
            "claim_attempts_per_task": {"mean": round(statistics.fmean(wakes), 2), "max": max(wakes)}}


def _counting(push: Callable[[str, Any], Awaitable[None]], pushed: Counter[str]
              ) -> Callable[[str, Any], Awaitable[None]]:
    async def counted(swarm_id: str, task: Any) -> None:
        pushed[task.id if hasattr(task, "id") else str(task.get("id"))] += 1
        await push(swarm_id, task)

    return counted


async def _until_waiting(fleet: Fleet, agents: int) -> None:
    for _ in range(3000):
        now = time.time()
        marks = await fleet.coordinator.waiting.list()  # read, not a barrier per look
        if sum(v.value.seen_at + v.value.ttl >= now for v in marks) >= agents:
            return
        await asyncio.sleep(0.01)
    raise BenchError(f"the {agents} agents did not all start waiting")


async def _drain(url: str, agents: int, tasks: int, processes: int, progress: Progress | None
                 ) -> dict[str, Any]:
    """``agents`` simulated agents in ``processes`` processes drain a board of ``tasks``."""
    phase = f"drain: {agents:,} agents, {tasks:,} tasks"
    ns_url = with_namespace(url, f"benchdrain{uuid.uuid4().hex[:10]}")
    names = [f"d{i:04d}" for i in range(agents)]
    async with connect(ns_url) as bus:
        fleet = assemble(bus, signer=None, actor="bench")
        try:
            if progress is not None:
                progress(phase, 0, 3)
            await fleet.coordinator.create_tasks([{"id": f"D{i:06d}", "title": "drain"}
                                                  for i in range(tasks)])
            gate = asyncio.Semaphore(64)

            async def register(name: str) -> None:
                async with gate:
                    await fleet.register_swarm(name, [])

            await asyncio.gather(*(register(name) for name in names))
        finally:
            await fleet.close()
        if progress is not None:
            progress(phase, 1, 3)
        share = [names[i::processes] for i in range(processes)]
        specs = [json.dumps({"url": ns_url, "agents": group, "idle_s": 3.0}) for group in share]
        started = await asyncio.gather(*(WorkerProcess.start(f"drain agents {i}", DRAIN_WORKER, [spec], 120)
                                         for i, spec in enumerate(specs)), return_exceptions=True)
        workers = [w for w in started if isinstance(w, WorkerProcess)]
        try:
            failed = [w for w in started if isinstance(w, BaseException)]
            if failed:
                raise failed[0]
            for w in workers:
                w.send(b"go\n")
            reports = []
            for w in workers:
                line = await w.readline(3600)
                if not line:
                    raise BenchError(f"the {w.what} process ended without a report: {w.error_tail()}")
                reports.append(json.loads(line))
        finally:
            await asyncio.gather(*(w.close() for w in workers))
        if progress is not None:
            progress(phase, 2, 3)
        # the board says what was done, and how often: each completion is a transition in its history
        board = [v.value async for v in fleet.coordinator.tasks.scan()]
        await clean_namespace(bus, None)
    completions = [[h.to for h in t.history].count(TaskStatus.COMPLETED) for t in board]
    span = (max(r["end_ns"] for r in reports) - min(r["start_ns"] for r in reports)) / 1e9
    distinct = sum(1 for c in completions if c)
    return {"agents": agents, "tasks": tasks, "processes": processes,
            "completed": sum(completions), "distinct": distinct,
            "reported_by_agents": sum(r["done"] for r in reports),
            "duplicates": sum(c - 1 for c in completions if c > 1),
            "left_undone": sum(1 for t in board if t.status is not TaskStatus.COMPLETED),
            "agent_errors": sum(r["error_count"] for r in reports),
            "agent_error_samples": [e for r in reports for e in r["errors"]][:10],
            "duration_s": round(span, 2), "tasks_per_s": round(distinct / span, 1) if span else None}
