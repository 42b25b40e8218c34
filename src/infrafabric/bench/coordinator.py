"""``ifctl bench coordinator``: :class:`~infrafabric.coordinator.IFCoordinator`
timed on a real server, with the raw engine client measured in the same run.

Every run works in a fresh namespace (``?namespace=bench<random>``) on the
server of the URL, so it never sees or touches anyone's board; with
``cleanup`` it deletes every key it wrote there afterwards.

What is measured (every latency: ``n`` samples after ``warmup`` discarded
ones, one call at a time):

* **claim (win)**: ``claim_task(swarm, id)`` of a fresh available task by a
  registered swarm; must return True. Interleaved with the **raw CAS**: the
  engine's own compare-and-swap at the key's current revision, on the same
  server over its own connection (nats-py ``kv.update(key, value,
  last=rev)`` on a bucket copied from ours; aetcd ``txn`` with ``mod(key) ==
  rev``), writing exactly the bytes a claim writes (a claimed task record).
  Which side goes first alternates. ``ratio`` = claim p50 / raw CAS p50: what
  a claim costs beyond the one CAS it must make (the parallel read of task
  and swarm, validation, encoding).
* **claim (lose)**: ``claim_task`` of a task another swarm holds; must
  return False (it reads and refuses; it writes nothing).
* **push**: ``push_task_to_swarm(swarm, task)`` until
  ``pushed_tasks(swarm)`` in another process yields the decoded task. The
  sender puts ``time.monotonic_ns()`` in the task's ``description``; the
  subscriber process (:mod:`infrafabric.bench._subscriber`) stamps its own
  on arrival (CLOCK_MONOTONIC is system-wide on Linux). Paced: the next push
  waits for the previous one to arrive plus ``pace_ms``. Interleaved with
  the raw engine pub/sub of a message of the same size (core NATS; for etcd
  a leased put watched by prefix, as our etcd bus does it).
* **blocker**: ``detect_blocker(swarm, info)`` until ``blockers()`` in
  another process yields the report; same technique, same raw baseline.
* **sustained**: claims per second from this one process with ``inflight``
  ``claim_task`` calls in flight over fresh tasks, against raw CASes per
  second the same way, in segments run ABBA ABBA ...; also this process's
  CPU time per claim, and the time 1,000 claims take at that rate.

``memory://`` has no raw client and no second process: raw figures are None
and push/blocker are measured within this process. The coordinator that
claims runs no watcher (``async with``) and has no observers or admission
hook: it measures the calls themselves. Targets are reported with ``pass``
and ``applies``; a benchmark never fails because of a timing.

On a cluster (``server["nodes"] > 1``, e.g. a temporary
:class:`~infrafabric.bench.cluster.NatsCluster` whose URL names every node and
``?replicas=3``) the same run measures replicated writes; every target then
has ``applies: false`` (they are defined for one node).
:func:`compare_topologies` puts a single-node and a cluster report side by
side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from infrafabric.bench._common import (
    BenchError,
    Progress,
    clean_namespace,
    interleaved,
    latency_entry,
    machine_info,
    metric_value,
    nats_scope,
    raw_client_errors,
    segmented_throughput,
    start_run,
    started_at,
    target_row,
    throughput_rounds,
    with_namespace,
)
from infrafabric.bench._delivery import InProcessReceiver, ProcessReceiver, Receiver, Send
from infrafabric.bench._wire import encode, parse
from infrafabric.bench.bus import Driver, open_raw
from infrafabric.bench.stats import QUANTILE_METHOD, ratio
from infrafabric.bus import EventBus, connect
from infrafabric.bus.layout import task_key
from infrafabric.coordinator import IFCoordinator, Task, TaskSpec, TaskStatus, Transition

__all__ = ["COMPARED", "OPERATIONS", "PHASES", "TARGETS", "bench_coordinator", "compare_topologies",
           "with_namespace"]

#: operation id -> (label, what is timed)
OPERATIONS: dict[str, tuple[str, str]] = {
    "claim_win": ("claim (win)",
                  "claim_task of a fresh available task by a registered swarm; must return True"),
    "claim_lose": ("claim (lose)",
                   "claim_task of a task another swarm holds; must return False"),
    "push": ("push→swarm",
             "push_task_to_swarm until pushed_tasks(swarm) in another process (memory://: "
             "this one) yields the task"),
    "blocker": ("blocker→orchestrator",
                "detect_blocker until blockers() in another process (memory://: this one) "
                "yields the report"),
    "sustained": ("sustained claims",
                  "claim_task calls per second from one process with `inflight` in flight"),
}
#: progress phases, in order (setup and cleanup are not timed)
PHASES: dict[str, str] = {"setup": "setting up tasks", **{k: v[0] for k, v in OPERATIONS.items()},
                          "cleanup": "cleaning up"}

#: (id, operation, metric, compare, threshold, description, scope); scope is
#: "nats" (durable local NATS), "etcd" or "floor" (the seeds' floor: every backend)
TARGETS: list[tuple[str, str, str, str, float, str, str]] = [
    ("claim_p95", "claim_win", "ours.p95", "<=", 2.5, "claim (win) p95 <= 2.5 ms", "nats"),
    ("claim_p99", "claim_win", "ours.p99", "<=", 5.0, "claim (win) p99 <= 5 ms", "nats"),
    ("claim_ratio", "claim_win", "ratio", "<=", 2.0,
     "claim (win) p50 <= 2x the raw CAS p50", "nats"),
    ("push_p99", "push", "ours.p99", "<=", 2.0, "push to another process p99 <= 2 ms", "nats"),
    ("claims_per_s", "sustained", "ours.ops_per_s", ">=", 1000.0,
     ">= 1,000 claims/s from one process", "nats"),
    ("etcd_claim_p95", "claim_win", "ours.p95", "<=", 5.0, "etcd: claim (win) p95 <= 5 ms", "etcd"),
    ("floor_claim_p95", "claim_win", "ours.p95", "<", 10.0,
     "seeds' floor: claim (win) p95 < 10 ms", "floor"),
    ("floor_claim_p99", "claim_win", "ours.p99", "<", 15.0,
     "seeds' floor: claim (win) p99 < 15 ms", "floor"),
    ("floor_1000_claims", "sustained", "ours.seconds_per_1000", "<", 5.0,
     "seeds' floor: 1,000 claims in < 5 s", "floor"),
    ("floor_ops_per_s", "sustained", "ours.ops_per_s", ">=", 100.0,
     "seeds' floor: >= 100 claims/s", "floor"),
]

CLAIMER = "bench-a"
LOSER = "bench-b"
PUSHED = "bench-push"  # never registered: only the benchmark's own pushes reach it
CAPABILITIES = ["python", "testing"]
SETUP_INFLIGHT = 64
BLOCKER_REASON = "waiting on credentials for the staging database"


@dataclasses.dataclass(frozen=True)
class _Side:
    side: str


OURS, RAW = _Side("ours"), _Side("raw")


def _available(task_id: str, now: float) -> Task:
    """The record create_task writes for a new task without dependencies (its
    ready-index slot is not written: these tasks are claimed by id)."""
    spec = TaskSpec.model_validate(_spec(task_id))
    return Task(**spec.model_dump(), status=TaskStatus.AVAILABLE, created_at=now, updated_at=now,
                ready_seq=1, history=[Transition(at=now, to=TaskStatus.AVAILABLE, reason="created")])


def _spec(task_id: str) -> dict[str, Any]:
    return {"id": task_id, "title": f"bench task {task_id}",
            "description": "a task created by ifctl bench coordinator",
            "acceptance_criteria": ["claimed exactly once"], "capabilities": CAPABILITIES,
            "priority": 1, "estimate_hours": "0.5"}


async def bench_coordinator(
    url: str,
    n: int,
    *,
    inflight: int = 64,
    warmup: int | None = None,
    pace_ms: float = 1.0,
    op_timeout: float = 10.0,
    server: dict[str, Any] | None = None,
    cleanup: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Benchmark the coordinator on the server of ``url`` (see the module docs).

    ``n`` samples per latency (after ``warmup`` discarded ones, default
    :func:`~infrafabric.bench.default_warmup`) and ``n`` claims (and raw
    CASes) for the sustained rate with ``inflight`` in flight; ``pace_ms``
    pause between deliveries; ``op_timeout`` for any single wait; ``server``
    describes the server and is copied into the result; ``cleanup`` deletes
    every key of the run's namespace afterwards. Returns a JSON-ready dict;
    never raises because of a timing.
    """
    start = start_run(url, n, inflight, warmup, server)
    run, namespace, run_url, parsed = start.run, start.namespace, start.url, start.parsed
    warmup, server_info = start.warmup, start.server_info

    async with raw_client_errors(), connect(run_url) as bus:
        raw: Driver | None = None
        extra: dict[str, Any] = {}
        cleaned: dict[str, Any] | None = None
        try:
            raw, extra = await open_raw(parsed, bus, run, op_timeout, "coordinator")
            bench = _Bench(bus, raw, run_url, n, warmup, inflight, pace_ms, op_timeout, progress)
            try:
                ops = await bench.measure()
            except BaseException:
                if cleanup:  # best effort, never masking what went wrong
                    with contextlib.suppress(Exception):
                        await clean_namespace(bus, None, inflight=SETUP_INFLIGHT)
                raise
            if cleanup:
                cleaned = await clean_namespace(bus, progress, inflight=SETUP_INFLIGHT)
        finally:
            if raw is not None:
                with contextlib.suppress(Exception):
                    await raw.close(cleanup)

    engine = extra.pop("engine")
    server_info.update(extra)
    return {
        "benchmark": "coordinator",
        "backend": parsed.scheme,
        "url": run_url,
        "namespace": namespace,
        "n": n,
        "warmup": warmup,
        "inflight": inflight,
        "pace_ms": pace_ms,
        "quantile_method": QUANTILE_METHOD,
        "units": {"latency": "ms", "throughput": "claims/s (raw: CAS/s)",
                  "ratio": "ours / raw (p50); sustained: raw CAS/s / claims/s; >1 = ours slower"},
        "engine": engine,
        "server": server_info,
        "machine": machine_info(),
        "swarms": {"claimer": CLAIMER, "loser": LOSER, "pushed_to": PUSHED,
                   "capabilities": CAPABILITIES},
        "setup": bench.setup,
        "operations": ops,
        "targets": _targets(ops, parsed.scheme, server_info),
        "cleanup": cleaned,
        "started_at": started_at(start.started),
        "duration_s": start.duration_s(),
    }


class _Bench:
    """One run: the board, the raw side, and the measurements."""

    def __init__(self, bus: EventBus, raw: Driver | None, url: str, n: int, warmup: int,
                 inflight: int, pace_ms: float, op_timeout: float,
                 progress: Progress | None) -> None:
        self.bus = bus
        # a lease longer than any run: the "lose" phase relies on claims still being held
        self.coord = IFCoordinator(bus, lease_ttl=24 * 3600)
        self.raw = raw
        self.url = url
        self.n = n
        self.warmup = warmup
        self.total = warmup + n
        self.inflight = inflight
        self.pace_s = pace_ms / 1000
        self.op_timeout = op_timeout
        self.progress = progress
        self.cross_process = bus.scheme != "memory"
        self.sides = [OURS] if raw is None else [OURS, RAW]
        self.setup: dict[str, Any] = {}
        #: the bytes of a claimed task record: what the raw CAS writes
        self.claimed_record = b""
        self.cas_revs: dict[str, dict[int, int]] = {"cas": {}, "tp": {}}

    async def _each(self, phase: str, count: int, fn: Callable[[int], Awaitable[None]]) -> None:
        sem = asyncio.Semaphore(SETUP_INFLIGHT)
        done = 0
        step = max(1, count // 100)

        async def one(i: int) -> None:
            nonlocal done
            async with sem:
                await fn(i)
            done += 1
            if self.progress is not None and (done % step == 0 or done == count):
                self.progress(phase, done, count)

        await asyncio.gather(*(one(i) for i in range(count)))

    async def prepare(self) -> None:
        """Fresh available tasks (w* for claims, s* for the sustained run),
        the swarms, then the raw side's keys holding a claimed task record.

        The tasks are written as the records ``create_task`` writes (an
        available task with its "created" transition), with ``bus.create``:
        ``create_task`` itself lists the swarms on every call (to push the new
        task), and on NATS every list leaves an ephemeral consumer behind for
        30 s, so thousands of creates in a row hit the server's limit of 1,000
        consumers. One task is made with ``create_task`` and claimed first: its
        stored record (checked against ours) is what every claim writes."""
        coord = self.coord
        await coord.register_swarm(CLAIMER, CAPABILITIES)
        await coord.register_swarm(LOSER, CAPABILITIES)
        await coord.create_task(_spec("probe"))
        reference = await coord.get_task("probe")
        ids = [f"w{i}" for i in range(self.total)] + [f"s{i}" for i in range(self.n)]
        if self.progress is not None:
            self.progress("setup", 0, len(ids))
        c0, t0 = time.process_time(), time.perf_counter()

        async def create(i: int) -> None:
            task = _available(ids[i], time.time())
            if await self.bus.create(task_key(task.id), task.model_dump_json()) is None:
                raise BenchError(f"task {task.id} of a fresh namespace already exists")

        await self._each("setup", len(ids), create)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        written = await coord.get_task(ids[0])
        same = {"id", "title", "created_at", "updated_at", "history"}
        if written.model_dump(exclude=same) != reference.model_dump(exclude=same) or [
                (h.to, h.by, h.reason) for h in written.history] != [
                (h.to, h.by, h.reason) for h in reference.history]:
            raise BenchError("the benchmark's task records differ from create_task's")
        if not await coord.claim_task(CLAIMER, "probe"):
            raise BenchError(f"the probe claim lost: {coord.last_claim and coord.last_claim.reason}")
        entry = await self.bus.get(task_key("probe"))
        assert entry is not None
        self.claimed_record = entry.value
        self.setup = {
            "tasks": len(ids), "inflight": SETUP_INFLIGHT, "seconds": round(seconds, 3),
            "claimed_record_bytes": len(entry.value),
            "client_cpu_us_per_task": round(cpu / len(ids) * 1e6, 1),
            "how": "records identical to create_task's (checked), written with bus.create, "
                   f"{SETUP_INFLIGHT} in flight; not timed",
        }
        raw = self.raw
        if raw is None:
            return
        value = self.claimed_record

        async def raw_create(kind: str, i: int) -> None:
            rev = await raw.create(kind, i, value)
            if rev is None:
                raise BenchError(f"raw create of the fresh key {raw.key(kind, i)!r} lost")
            self.cas_revs[kind][i] = rev

        await self._each("setup", self.total, lambda i: raw_create("cas", i))
        await self._each("setup", self.n, lambda i: raw_create("tp", i))

    async def measure(self) -> dict[str, dict[str, Any]]:
        await self.prepare()
        ops: dict[str, dict[str, Any]] = {}
        gc.collect()
        ops["claim_win"] = await self._claim_win()
        gc.collect()
        ops["claim_lose"] = await self._claim_lose()
        gc.collect()
        ops["push"] = await self._delivery("push", self._push_sender(), self._push_receiver)
        gc.collect()
        ops["blocker"] = await self._delivery("blocker", self._blocker_sender(),
                                              self._blocker_receiver)
        gc.collect()
        ops["sustained"] = await self._sustained()
        return ops

    def _calls(self, op: str) -> dict[str, str]:
        raw = self.bus.scheme
        ours = {
            "claim_win": f"coord.claim_task({CLAIMER!r}, task_id) -> True",
            "claim_lose": f"coord.claim_task({LOSER!r}, task_id) -> False",
            "push": f"coord.push_task_to_swarm({PUSHED!r}, task) + coord.pushed_tasks({PUSHED!r})"
                    + (" in another process" if self.cross_process else ", in-process"),
            "blocker": f"coord.detect_blocker({CLAIMER!r}, info) + coord.blockers()"
                       + (" in another process" if self.cross_process else ", in-process"),
            "sustained": f"coord.claim_task({CLAIMER!r}, task_id) -> True",
        }
        raws = {
            "nats": {
                "cas": "kv.update(key, claimed_record, last=revision)",
                "pubsub": "nc.publish(subject, same-size data) + nc.subscribe(subject) "
                          "in another process",
            },
            "etcd": {
                "cas": "client.transaction([mod(k) == revision], [put(k, claimed_record)])",
                "pubsub": "client.put(prefix + unique id, same-size data, lease=lease) + "
                          "client.watch_prefix(prefix) in another process",
            },
        }.get(raw)
        out = {"ours": ours[op]}
        if raws is not None and op != "claim_lose":
            out["raw"] = raws["pubsub" if op in ("push", "blocker") else "cas"]
        return out

    # -- claims -----------------------------------------------------------------

    async def _raw_cas(self, kind: str, i: int) -> None:
        assert self.raw is not None
        if await self.raw.update(kind, i, self.cas_revs[kind][i], self.claimed_record) is None:
            raise BenchError(f"raw CAS of {self.raw.key(kind, i)!r} at its revision lost")

    async def _claim_win(self) -> dict[str, Any]:
        coord = self.coord

        async def sample(side: _Side, i: int) -> int:
            if side is OURS:
                t0 = time.perf_counter_ns()
                won = await coord.claim_task(CLAIMER, f"w{i}")
                t1 = time.perf_counter_ns()
                if not won:
                    reason = coord.last_claim.reason if coord.last_claim else "?"
                    raise BenchError(f"claim of the fresh task w{i} lost: {reason}")
                return t1 - t0
            t0 = time.perf_counter_ns()
            await self._raw_cas("cas", i)
            return time.perf_counter_ns() - t0

        samples = await interleaved("claim_win", self.sides, self.total, self.warmup, sample,
                                    self.progress)
        return latency_entry(*OPERATIONS["claim_win"], samples, self._calls("claim_win"))

    async def _claim_lose(self) -> dict[str, Any]:
        coord = self.coord
        false = 0

        async def sample(side: _Side, i: int) -> int:
            nonlocal false
            t0 = time.perf_counter_ns()
            won = await coord.claim_task(LOSER, f"w{i}")
            t1 = time.perf_counter_ns()
            outcome = coord.last_claim
            if won or outcome is None or outcome.task is None or outcome.task.owner != CLAIMER:
                raise BenchError(f"claim of w{i}, held by {CLAIMER}, by {LOSER} did not lose as "
                                 f"it must: {outcome.reason if outcome else '?'}")
            false += 1
            return t1 - t0

        samples = await interleaved("claim_lose", [OURS], self.total, self.warmup, sample,
                                    self.progress)
        entry = latency_entry(*OPERATIONS["claim_lose"], samples, self._calls("claim_lose"))
        entry["returned_false"] = false
        entry["calls_made"] = self.total
        return entry

    async def _sustained(self) -> dict[str, Any]:
        coord = self.coord

        async def claim(i: int) -> None:
            if not await coord.claim_task(CLAIMER, f"s{i}"):
                raise BenchError(f"sustained claim of the fresh task s{i} lost")

        async def cas(i: int) -> None:
            await self._raw_cas("tp", i)

        sides: list[tuple[str, Callable[[int], Awaitable[None]]]] = [("ours", claim)]
        if self.raw is not None:
            sides.append(("raw", cas))
        per_side = await segmented_throughput("sustained", sides, self.n, self.inflight,
                                              self.progress)
        label, what = OPERATIONS["sustained"]
        entry: dict[str, Any] = {"label": label, "what": what, **per_side}
        for side in per_side.values():
            side["seconds_per_1000"] = round(1000 * side["seconds"] / side["ops"], 3)
        entry.setdefault("raw", None)
        raw = entry["raw"]
        ours = entry["ours"]
        entry["ratio"] = ratio(raw["ops_per_s"], ours["ops_per_s"]) if raw else None
        entry["cpu_ratio"] = (ratio(ours["client_cpu_us_per_op"], raw["client_cpu_us_per_op"])
                              if raw else None)
        entry["inflight"] = self.inflight
        entry["rounds"] = throughput_rounds(self.n)
        entry["calls"] = self._calls("sustained")
        # every sustained task must now be claimed, exactly once, by the claimer
        claimed = [t for t in await coord.list_tasks()
                   if t.id.startswith("s") and t.status is TaskStatus.CLAIMED and t.owner == CLAIMER
                   and sum(h.to is TaskStatus.CLAIMED for h in t.history) == 1]
        entry["tasks_claimed"] = len(claimed)
        return entry

    # -- deliveries -------------------------------------------------------------

    def _push_sender(self) -> tuple[Send, int]:
        """send(seq) for push, and the size of what it publishes."""
        template = Task(**_spec("push"), status=TaskStatus.AVAILABLE, created_at=time.time(),
                        updated_at=time.time())
        coord = self.coord

        async def send(seq: int) -> None:
            mark = encode(seq, time.monotonic_ns()).decode()
            task = template.model_copy(update={"id": f"push{seq}", "description": mark})
            await coord.push_task_to_swarm(PUSHED, task)

        size = len(template.model_copy(update={
            "id": "push0", "description": encode(0, time.monotonic_ns()).decode()}).model_dump_json())
        return send, size

    def _blocker_sender(self) -> tuple[Send, int]:
        coord = self.coord

        def info(seq: int, sent: int) -> dict[str, Any]:
            return {"task_id": f"w{max(seq, 0)}", "reason": BLOCKER_REASON,
                    "bench": encode(seq, sent).decode()}

        async def send(seq: int) -> None:
            await coord.detect_blocker(CLAIMER, info(seq, time.monotonic_ns()))

        size = len(json.dumps({"type": "blocker_detected", "swarm_id": CLAIMER,
                               "blocker_info": info(0, time.monotonic_ns()),
                               "timestamp": time.time()}))
        return send, size

    async def _push_receiver(self, send: Send) -> Receiver:
        if self.cross_process:
            return await ProcessReceiver.start("ours", send, ["push", self.url, PUSHED],
                                               self.op_timeout)
        feed = self.coord.pushed_tasks(PUSHED)
        await feed.__aenter__()

        def parse_task(task: Task) -> tuple[int, int] | None:
            return parse(task.description.encode())

        return await InProcessReceiver.start("ours", send, feed, parse_task, feed.close,
                                             self.op_timeout)

    async def _blocker_receiver(self, send: Send) -> Receiver:
        if self.cross_process:
            return await ProcessReceiver.start("ours", send, ["blockers", self.url, "-"],
                                               self.op_timeout)
        feed = self.coord.blockers()
        await feed.__aenter__()

        def parse_report(report: dict[str, Any]) -> tuple[int, int] | None:
            info = report.get("blocker_info")
            mark = info.get("bench") if isinstance(info, dict) else None
            return parse(mark.encode()) if isinstance(mark, str) else None

        return await InProcessReceiver.start("ours", send, feed, parse_report, feed.close,
                                             self.op_timeout)

    async def _delivery(self, op: str, sender: tuple[Send, int],
                        ours_receiver: Callable[[Send], Awaitable[Receiver]]) -> dict[str, Any]:
        send, size = sender
        receivers: dict[str, Receiver] = {}
        try:
            receivers["ours"] = await ours_receiver(send)
            raw = self.raw
            if raw is not None:
                spec = raw.subscriber()
                assert spec is not None

                async def raw_send(seq: int) -> None:
                    await raw.publish(encode(seq, time.monotonic_ns(), size))

                receivers["raw"] = await ProcessReceiver.start("raw", raw_send, spec,
                                                               self.op_timeout)
            for r in receivers.values():
                await r.sync()

            async def sample(side: _Side, i: int) -> int | None:
                return await receivers[side.side].measure(i, self.pace_s)

            samples = await interleaved(op, self.sides, self.total, self.warmup, sample,
                                        self.progress)
        finally:
            for r in receivers.values():
                await r.close()
        entry = latency_entry(*OPERATIONS[op], samples, self._calls(op))
        entry["cross_process"] = self.cross_process
        entry["lost"] = {side: r.lost for side, r in receivers.items()}
        entry["message_bytes"] = size
        return entry


def _targets(ops: dict[str, dict[str, Any]], backend: str,
             server: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    nodes = int(server.get("nodes", 1))
    for tid, op, metric, compare, threshold, description, scope in TARGETS:
        value = metric_value(ops, op, metric)
        if op == "push" and not ops.get(op, {}).get("cross_process", False):
            value = None
        if scope == "nats":
            applies, note = nats_scope(backend, server)
        elif scope == "etcd":
            applies = backend == "etcd"
            note = "" if applies else "the target is defined for etcd; shown for comparison"
        else:
            applies = True
            note = ""
        if nodes > 1:
            applies = False
            note = (f"the target is defined for one node; shown for comparison on this {nodes}-node "
                    "cluster")
        out.append(target_row(tid, description, op, metric, threshold, value, applies=applies,
                              note=note, compare=compare))
    return out


#: the latency operations :func:`compare_topologies` puts side by side (and ``sustained``)
COMPARED = ("claim_win", "claim_lose", "push", "blocker")


def compare_topologies(single: dict[str, Any], cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per operation, the single-node and the cluster figures of two
    :func:`bench_coordinator` reports: ours p50/p99 (``single_p50``,
    ``cluster_p50``...), ``ratio`` = cluster p50 / single p50 (>1 = the
    cluster is slower; ``ratio_p99`` likewise), the raw engine's p50/p99 on
    each (``raw_single_p50``...) and ``raw_ratio``, and ours / raw p50 on
    each (``single_ours_over_raw``...). ``sustained``: claims/s on each and
    ``ratio`` = single claims/s / cluster claims/s (>1 = the cluster is
    slower), with the raw CAS/s likewise."""
    out: dict[str, dict[str, Any]] = {}
    for op in COMPARED:
        s_op, c_op = single["operations"][op], cluster["operations"][op]
        row: dict[str, Any] = {}
        for side, prefix in (("ours", ""), ("raw", "raw_")):
            s_side, c_side = s_op.get(side) or {}, c_op.get(side) or {}
            for stat in ("p50", "p99"):
                row[f"{prefix}single_{stat}"] = s_side.get(stat)
                row[f"{prefix}cluster_{stat}"] = c_side.get(stat)
        row["ratio"] = ratio(row["cluster_p50"], row["single_p50"])
        row["ratio_p99"] = ratio(row["cluster_p99"], row["single_p99"])
        row["raw_ratio"] = ratio(row["raw_cluster_p50"], row["raw_single_p50"])
        row["single_ours_over_raw"] = s_op.get("ratio")
        row["cluster_ours_over_raw"] = c_op.get("ratio")
        out[op] = row
    s_sus, c_sus = single["operations"]["sustained"], cluster["operations"]["sustained"]
    s_raw, c_raw = s_sus.get("raw") or {}, c_sus.get("raw") or {}
    out["sustained"] = {
        "single_ops_per_s": s_sus["ours"]["ops_per_s"], "cluster_ops_per_s": c_sus["ours"]["ops_per_s"],
        "ratio": ratio(s_sus["ours"]["ops_per_s"], c_sus["ours"]["ops_per_s"]),
        "raw_single_ops_per_s": s_raw.get("ops_per_s"), "raw_cluster_ops_per_s": c_raw.get("ops_per_s"),
        "raw_ratio": ratio(s_raw.get("ops_per_s"), c_raw.get("ops_per_s")),
        "single_raw_over_ours": s_sus.get("ratio"), "cluster_raw_over_ours": c_sus.get("ratio"),
    }
    return out
