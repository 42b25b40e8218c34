"""``FleetView``: what the dashboard shows, kept current by bus watches.

One view per web server. It loads the board, the swarms (coordinator records,
governor profiles, budgets, breakers, chassis reputation and SLO status) and
the witness chain once, then follows every change through watches started at
the revision it loaded from, and subscribes to the blocker and escalation
subjects. Each change updates the view and is handed to every listener (the
event streams of open pages): nothing here polls. If the bus goes away for
longer than its watches can ride out, the view loads again from scratch and
sends every listener a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from infrafabric.bus import EventBus, EventKind, WatchEvent
from infrafabric.bus.layout import (
    BLOCKERS,
    BREAKERS,
    BUDGETS,
    ENTRIES,
    ESCALATIONS,
    POLICY,
    PRESENCE,
    PROFILES,
    SWARMS,
    TASKS,
    WAITING,
)
from infrafabric.bus.layout import REPUTATION as REPUTATION_PREFIX
from infrafabric.bus.layout import SLO as SLO_PREFIX
from infrafabric.chassis.reputation import ReputationRecord
from infrafabric.coordinator.models import Presence, SwarmRecord, Task, TaskKind, TaskStatus
from infrafabric.coordinator.presence import Liveness, liveness, unattended
from infrafabric.errors import InfraFabricError
from infrafabric.fleet import Fleet, assemble
from infrafabric.governor import Breaker, BreakerState, Budget, ResourcePolicy, SwarmProfile
from infrafabric.witness import Witness
from infrafabric.witness.entry import WitnessEntry
from infrafabric.witness.log import decode_block

__all__ = ["FleetCounts", "FleetView"]

log = logging.getLogger(__name__)

EVENTS_KEPT = 200
TAIL_KEPT = 50
SPEND_POINTS = 500
WAITING_MESSAGES_KEPT = 100
#: chassis witness operations that end a task in the sandbox, and the kind they count as
TRAP_OPERATIONS = ("task_trapped", "task_limit_exceeded")
#: (first, longest) pause before loading the view again after the bus went away
RELOAD_BACKOFF = (0.5, 5.0)
#: how often liveness is judged again: a mark goes stale, a lease lapses, with no event on the bus
LIVENESS_EVERY = 2.0
#: how long after a task's change liveness is judged (changes meanwhile are judged with it)
JUDGE_DELAY = 0.1
#: unattended tasks listed by name among what needs a human (the count is always whole)
UNATTENDED_LISTED = 20
#: upper bounds (seconds) of the task wait histogram: available → claimed
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, math.inf)

Listener = Callable[[str, Any], None]


class FleetCounts:
    """Monotonic counts the view derives from the bus, for ``/metrics``.

    Claims and lease lapses are counted from the task histories on the board
    (the board records every claim); sandbox traps from the witness chain
    (the chassis witnesses every trap). They start from what the bus holds
    when the view loads, so they describe the fleet, not this process."""

    def __init__(self) -> None:
        self.claims_won: collections.Counter[str] = collections.Counter()
        self.lease_lapses: collections.Counter[str] = collections.Counter()
        self.traps: collections.Counter[tuple[str, str]] = collections.Counter()
        #: seconds from available to claimed: a histogram over WAIT_BUCKETS (cumulative at export)
        self.wait_buckets = [0] * len(WAIT_BUCKETS)
        self.wait_sum = 0.0
        self.last_claim_at: float | None = None

    def observe_wait(self, seconds: float) -> None:
        self.wait_buckets[bisect.bisect_left(WAIT_BUCKETS, seconds)] += 1
        self.wait_sum += seconds


def _task_json(task: Task, revision: int) -> dict[str, Any]:
    return {
        "id": task.id, "title": task.title, "status": task.status.value, "kind": task.kind.value,
        "priority": task.priority, "owner": task.owner, "lease_until": task.lease_until,
        "attempts": task.attempts, "max_attempts": task.max_attempts,
        "dependencies": list(task.dependencies), "capabilities": list(task.capabilities),
        "section": task.section,
        "estimate_hours": None if task.estimate_hours is None else str(task.estimate_hours),
        "error": task.error, "updated_at": task.updated_at, "revision": revision,
    }


def critical_path(tasks: Iterable[Task]) -> list[str]:
    """The longest chain of unfinished critical-kind tasks through their
    dependencies, weighted by estimate (1 hour when none): what gates the end
    of the board now. Empty when nothing critical is left."""
    live = {t.id: t for t in tasks if t.kind is TaskKind.CRITICAL
            and t.status not in (TaskStatus.COMPLETED, TaskStatus.CANCELLED)}
    best: dict[str, tuple[Decimal, str | None]] = {}
    state: dict[str, int] = {}  # 1 visiting, 2 done: a cycle must not hang or recurse forever
    for root in sorted(live):
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            tid, i = stack.pop()
            if i == 0:
                if state.get(tid) == 2:
                    continue
                state[tid] = 1
            deps = [d for d in live[tid].dependencies if d in live and state.get(d) != 1]
            if i < len(deps):
                stack.append((tid, i + 1))
                if state.get(deps[i]) != 2:
                    stack.append((deps[i], 0))
                continue
            weight = live[tid].estimate_hours or Decimal(1)
            prev = max(((best[d][0], d) for d in deps if d in best), default=(Decimal(0), None))
            best[tid] = (prev[0] + weight, prev[1])
            state[tid] = 2
    if not best:
        return []
    end = max(best, key=lambda t: (best[t][0], t))
    path: list[str] = []
    node: str | None = end
    while node is not None and node not in path:
        path.append(node)
        node = best[node][1]
    return path[::-1]


class _Swarm:
    def __init__(self, swarm_id: str) -> None:
        self.id = swarm_id
        self.record: SwarmRecord | None = None
        self.profile: SwarmProfile | None = None
        self.budget: Budget | None = None
        self.breaker: Breaker | None = None
        self.reputation: ReputationRecord | None = None
        self.slo_violations: list[str] | None = None
        self.spend: collections.deque[tuple[float, int]] = collections.deque(maxlen=SPEND_POINTS)

    def reputation_value(self) -> float | None:
        if self.reputation is not None:
            return float(self.reputation.reputation)
        if self.profile is not None:
            return float(self.profile.reputation)
        return None

    def stopped(self) -> bool:
        """Whether the governor refuses its claims now (breaker open, budget spent)."""
        return (self.breaker is not None and self.breaker.state is BreakerState.OPEN) or (
            self.budget is not None and self.budget.remaining_micros <= 0)

    def capabilities(self) -> list[str]:
        return (self.profile.capabilities if self.profile is not None
                else self.record.capabilities if self.record is not None else [])

    def as_json(self, holding: list[str], live: Liveness | None = None) -> dict[str, Any]:
        caps = self.capabilities()
        b = self.budget
        k = self.breaker
        return {
            "id": self.id, "capabilities": list(caps), "registered": self.record is not None,
            "reputation": self.reputation_value(),
            "cost_per_hour_micros": self.profile.cost_per_hour_micros if self.profile else None,
            "budget": None if b is None else {"limit_micros": b.limit_micros, "spent_micros": b.spent_micros,
                                              "reserved_micros": b.reserved_micros},
            "spend": [list(p) for p in self.spend],
            "breaker": None if k is None else {"state": k.state.value, "reason": k.reason,
                                               "changed_at": k.changed_at, "changed_by": k.changed_by},
            "slo": None if self.slo_violations is None else {
                "compliant": not self.slo_violations, "violations": list(self.slo_violations)},
            "holding": holding,
            "live": Liveness.of(live),
        }


class FleetView:
    """The dashboard's live picture of one bus namespace (see the module docs)."""

    def __init__(self, bus: EventBus, *, home: str | os.PathLike[str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        #: the state directory whose witness key signs what the dashboard's actions write
        self.home = home
        self.clock = clock
        self.tasks: dict[str, Task] = {}
        self.revisions: dict[str, int] = {}
        self.swarms: dict[str, _Swarm] = {}
        self.critical: list[str] = []
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        self.messages: collections.deque[dict[str, Any]] = collections.deque(maxlen=WAITING_MESSAGES_KEPT)
        self.tail: collections.deque[WitnessEntry] = collections.deque(maxlen=TAIL_KEPT)
        self.witness_length = 0
        self.witness_head = ""
        self.verify_result: dict[str, Any] | None = None
        self.counts = FleetCounts()
        self.connected = False
        #: the agents connected now and those waiting for work (marks, fresh or stale), by swarm
        self.presence: dict[str, Presence] = {}
        self.waiting_marks: dict[str, Presence] = {}
        self.policy = ResourcePolicy()
        #: liveness as last judged, and the unattended tasks then (see :meth:`_judge`)
        self.live: dict[str, Liveness] = {}
        self.unattended: list[str] = []
        self._judging: asyncio.TimerHandle | None = None
        self._listeners: set[Listener] = set()
        self._runner: asyncio.Task[None] | None = None
        self._verifying: asyncio.Task[dict[str, Any]] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load the view and follow the bus; returns once loaded (raises if the
        first load fails, so a server never starts on a bus it cannot read)."""
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(first), name="fleet-view")
        await first

    async def close(self) -> None:
        if self._judging is not None:
            self._judging.cancel()
        for task in (self._runner, self._verifying):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event, data)`` for every change; returns the unsubscribe call."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def _emit(self, event: str, data: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, data)
            except Exception:  # one broken page must not stop the others
                log.exception("dashboard listener failed")

    async def _run(self, first: asyncio.Future[None]) -> None:
        backoff = RELOAD_BACKOFF[0]
        while True:
            try:
                streams = await self._load()
            except InfraFabricError as exc:
                if not first.done():
                    first.set_exception(exc)
                    return
                log.warning("dashboard: cannot load the view: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RELOAD_BACKOFF[1])
                continue
            backoff = RELOAD_BACKOFF[0]
            self.connected = True
            if not first.done():
                first.set_result(None)
            self._emit("snapshot", self.snapshot())
            try:
                await self._follow(streams)
            except InfraFabricError as exc:
                log.warning("dashboard: lost the bus: %s", exc)
            self.connected = False
            self._emit("bus", self.bus_info())

    # -- loading ---------------------------------------------------------------

    async def _load(self) -> list[Any]:
        bus = self.bus
        start = await bus.revision() + 1
        prefixes = (TASKS, SWARMS, PROFILES, BUDGETS, BREAKERS, REPUTATION_PREFIX, SLO_PREFIX,
                    PRESENCE, WAITING, POLICY)
        # subscribe and watch before reading, so nothing written meanwhile is missed
        streams: list[Any] = [bus.watch(p, start_revision=start) for p in (*prefixes, ENTRIES)]
        streams += [bus.subscribe(BLOCKERS), bus.subscribe(ESCALATIONS)]
        try:
            for s in streams:
                await s.start()
            listed = await asyncio.gather(*(bus.list(p) for p in prefixes))
            self.tasks.clear()
            self.revisions.clear()
            self.swarms.clear()
            self.presence.clear()
            self.waiting_marks.clear()
            self.policy = ResourcePolicy()
            self.counts = FleetCounts()
            for prefix, entries in zip(prefixes, listed, strict=True):
                for entry in entries:
                    self._apply(prefix, entry.key, entry.value, entry.revision, initial=True)
            await self._load_witness()
        except BaseException:
            for s in streams:
                with contextlib.suppress(Exception):
                    await s.close()
            raise
        self.critical = critical_path(self.tasks.values())
        self._judge(emit=False)
        return streams

    async def _load_witness(self) -> None:
        self.tail.clear()
        self.witness_length, self.witness_head = 0, ""
        async for entry in self.bus.scan(ENTRIES):
            self._witness_block(entry.value, initial=True)

    async def _follow(self, streams: list[Any]) -> None:
        *watches, blockers, escalations = streams
        prefixes = (TASKS, SWARMS, PROFILES, BUDGETS, BREAKERS, REPUTATION_PREFIX, SLO_PREFIX,
                    PRESENCE, WAITING, POLICY, ENTRIES)

        async def follow_watch(prefix: str, watch: Any) -> None:
            async with watch:
                async for ev in watch:
                    self._on_watch(prefix, ev)

        async def follow_messages(kind: str, sub: Any) -> None:
            async with sub:
                async for msg in sub:
                    self._on_message(kind, msg.data)

        async with asyncio.TaskGroup() as tg:
            for prefix, watch in zip(prefixes, watches, strict=True):
                tg.create_task(follow_watch(prefix, watch))
            tg.create_task(follow_messages("blocker", blockers))
            tg.create_task(follow_messages("escalation", escalations))
            tg.create_task(self._judge_often())

    async def _judge_often(self) -> None:
        # a dead agent's mark goes stale and a lease lapses without any write: the time does it
        while True:
            await asyncio.sleep(LIVENESS_EVERY)
            self._judge(emit=True)  # also what task changes did: a burst of them costs one pass

    # -- applying changes --------------------------------------------------------

    def _on_watch(self, prefix: str, ev: WatchEvent) -> None:
        if prefix == ENTRIES:
            if ev.kind is EventKind.PUT and ev.value is not None:
                self._witness_block(ev.value, initial=False)
            return
        self._apply(prefix, ev.key, ev.value if ev.kind is EventKind.PUT else None, ev.revision,
                    initial=False)

    def _apply(self, prefix: str, key: str, value: bytes | None, revision: int, *, initial: bool) -> None:
        if self.revisions.get(key, 0) >= revision:
            return  # listed already (the watch started before the listing)
        self.revisions[key] = revision
        name = key[len(prefix):]
        try:
            if prefix == TASKS:
                self._apply_task(name, value, revision, initial)
                return
            if prefix in (PRESENCE, WAITING, POLICY):
                self._apply_mark(prefix, name, value, initial)
                return
            swarm_id = name.split("/", 1)[0]
            if prefix in (REPUTATION_PREFIX, SLO_PREFIX):
                if name != f"{swarm_id}/" + ("current" if prefix == REPUTATION_PREFIX else "status"):
                    return  # samples and history: not shown
            elif "/" in name:
                return
            swarm = self.swarms.get(swarm_id)
            if swarm is None:
                if value is None:
                    return
                swarm = self.swarms[swarm_id] = _Swarm(swarm_id)
            self._apply_swarm(prefix, swarm, value, initial)
        except (ValidationError, ValueError) as exc:
            log.warning("dashboard: ignoring malformed %s: %s", key, exc)
            return
        if not initial:
            self._emit("swarm", {"id": swarm_id, "value": self.swarm_json(swarm_id)})
            if prefix == BREAKERS:
                self._emit("waiting", self.waiting())

    def _apply_mark(self, prefix: str, name: str, value: bytes | None, initial: bool) -> None:
        if prefix == POLICY:
            if name == "":  # the policy's own key (the prefix is the key)
                self.policy = ResourcePolicy() if value is None else ResourcePolicy.model_validate_json(value)
        else:
            marks = self.presence if prefix == PRESENCE else self.waiting_marks
            if value is None:
                marks.pop(name, None)
            else:
                marks[name] = Presence.model_validate_json(value)
        if not initial:
            self._judge(emit=True)

    def _judge_soon(self) -> None:
        # a claim or a task becoming available changes who is live and what is unattended; a
        # burst of such changes is judged once, a moment later (each judgement reads the board)
        if self._judging is None:
            def judge() -> None:
                self._judging = None
                self._judge(emit=True)

            self._judging = asyncio.get_running_loop().call_later(JUDGE_DELAY, judge)

    def _judge(self, *, emit: bool) -> None:
        """Judge liveness and unattended work again; tell the pages what changed."""
        live = liveness(self.swarms, presence=self.presence.values(), waiting=self.waiting_marks.values(),
                        tasks=self.tasks.values(), now=self.clock())
        caps = {sid: s.capabilities() for sid, s in self.swarms.items() if s.record is not None}
        waits = sorted(t.id for t in unattended(
            self.tasks.values(), caps, [sid for sid, st in live.items() if st.live],
            threshold=float(self.policy.min_capability_match),
            refused={sid for sid, s in self.swarms.items() if s.stopped()}))
        changed = [sid for sid in self.swarms if (sid in live) != (sid in self.live) or (
            sid in live and live[sid].live != self.live[sid].live)]
        before, self.live, self.unattended = self.unattended, live, waits
        if emit:
            for sid in changed:
                self._emit("swarm", {"id": sid, "value": self.swarm_json(sid)})
            if waits != before:
                self._emit("waiting", self.waiting())

    def _apply_swarm(self, prefix: str, swarm: _Swarm, value: bytes | None, initial: bool) -> None:
        if prefix == SWARMS:
            swarm.record = None if value is None else SwarmRecord.model_validate_json(value)
        elif prefix == PROFILES:
            swarm.profile = None if value is None else SwarmProfile.model_validate_json(value)
        elif prefix == BUDGETS:
            budget = None if value is None else Budget.model_validate_json(value)
            self._spend(swarm, budget, initial)
            swarm.budget = budget
        elif prefix == BREAKERS:
            before = swarm.breaker
            swarm.breaker = None if value is None else Breaker.model_validate_json(value)
            if not initial and swarm.breaker is not None and (
                    before.state is not swarm.breaker.state if before is not None
                    else swarm.breaker.state is not BreakerState.CLOSED):
                k = swarm.breaker
                if k.state is BreakerState.CLOSED:  # what it escalated is dealt with
                    kept = [m for m in self.messages
                            if m["kind"] != "escalation" or m.get("swarm") != swarm.id]
                    self.messages.clear()
                    self.messages.extend(kept)
                self._event("breaker", f"breaker of {swarm.id} {k.state.value}"
                            + (f": {k.reason}" if k.reason else "") + (f" (by {k.changed_by})" if
                                                                      k.changed_by else ""),
                            swarm=swarm.id, at=k.changed_at or None)
        elif prefix == REPUTATION_PREFIX:
            swarm.reputation = None if value is None else ReputationRecord.model_validate_json(value)
        else:
            swarm.slo_violations = None if value is None else [str(v) for v in json.loads(value)
                                                               .get("violations", [])]

    def _spend(self, swarm: _Swarm, budget: Budget | None, initial: bool) -> None:
        if budget is None:
            return
        if initial:
            later = 0
            points = []
            for e in sorted(budget.journal, key=lambda e: e.at, reverse=True):
                points.append((e.at, budget.spent_micros - later))
                later += e.cost_micros
            swarm.spend.extend(reversed(points))
        at = budget.updated_at or self.clock()
        if not swarm.spend or swarm.spend[-1][1] != budget.spent_micros:
            swarm.spend.append((at, budget.spent_micros))

    def _apply_task(self, task_id: str, value: bytes | None, revision: int, initial: bool) -> None:
        before = self.tasks.get(task_id)
        if value is None:
            self.tasks.pop(task_id, None)
            task: Task | None = None
        else:
            task = Task.model_validate_json(value)
            self.tasks[task_id] = task
            self._count(before, task)
        if initial:
            return
        if task is None or before is None or before.status is not task.status or \
                before.dependencies != task.dependencies:
            self.critical = critical_path(self.tasks.values())
        self._emit("task", {"id": task_id, "value": None if task is None else _task_json(task, revision),
                            "critical_path": self.critical})
        if task is not None and (before is None or before.status is not task.status
                                 or before.owner != task.owner):
            self._task_event(before, task)
        if task is None or before is None or before.status is not task.status or before.owner != task.owner:
            self._judge_soon()
        if task is not None and (task.status is TaskStatus.FAILED) != (
                before is not None and before.status is TaskStatus.FAILED):
            self._emit("waiting", self.waiting())
        for owner in {o for o in (task.owner if task else None, before.owner if before else None) if o}:
            if owner in self.swarms:
                self._emit("swarm", {"id": owner, "value": self.swarm_json(owner)})

    def _count(self, before: Task | None, task: Task) -> None:
        history = task.history
        start = 0
        if before is not None and before.history:
            # the transitions after the last one already counted (the history is capped, so find it)
            last = before.history[-1]
            start = next((i + 1 for i in range(len(history) - 1, -1, -1) if history[i] == last), 0)
        available_at: float | None = None
        for i, tr in enumerate(history):
            if tr.to is TaskStatus.AVAILABLE:
                available_at = tr.at
            if i < start:
                continue
            if tr.to is TaskStatus.CLAIMED and tr.by:
                self.counts.claims_won[tr.by] += 1
                if self.counts.last_claim_at is None or tr.at > self.counts.last_claim_at:
                    self.counts.last_claim_at = tr.at
                if available_at is not None and tr.at >= available_at:
                    self.counts.observe_wait(tr.at - available_at)
            elif tr.reason.startswith("lease of ") and tr.reason.endswith(" lapsed"):
                self.counts.lease_lapses[tr.reason[len("lease of "):-len(" lapsed")]] += 1

    def _task_event(self, before: Task | None, task: Task) -> None:
        last = task.history[-1] if task.history else None
        arrow = f"{before.status.value} → {task.status.value}" if before else f"created {task.status.value}"
        text = f"{task.id} {arrow}"
        if task.status is TaskStatus.CLAIMED and task.owner:
            text += f" by {task.owner}"
        elif last is not None and last.by and last.by not in last.reason:
            text += f" by {last.by}"
        if last is not None and last.reason not in ("", "created", task.status.value) and \
                task.status is not TaskStatus.CLAIMED:
            text += f" ({last.reason})"
        self._event("task", text, task=task.id, swarm=task.owner or (last.by if last else None),
                    status=task.status.value, at=last.at if last else task.updated_at)

    def _event(self, kind: str, text: str, *, at: float | None = None, **fields: Any) -> None:
        item = {"at": at or self.clock(), "kind": kind, "text": text,
                **{k: v for k, v in fields.items() if v is not None}}
        self.events.append(item)
        self._emit("event", item)

    def _on_message(self, kind: str, data: bytes) -> None:
        try:
            report = json.loads(data)
        except ValueError:
            return
        if not isinstance(report, dict):
            return
        swarm = report.get("swarm_id") or report.get("blocked_swarm_id")
        raw_info = report.get("blocker_info")
        info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
        task = report.get("task_id") or info.get("task_id")
        reason = (report.get("reason") or info.get("reason") or info.get("description")
                  or report.get("type") or kind)
        at = report.get("timestamp") if isinstance(report.get("timestamp"), int | float) else self.clock()
        item = {"kind": kind, "swarm": swarm, "task": task, "reason": str(reason), "at": at}
        self.messages.append({k: v for k, v in item.items() if v is not None})
        self._event(kind, f"{kind} from {swarm or '?'}: {reason}", swarm=swarm, task=task, at=at)
        self._emit("waiting", self.waiting())

    def _witness_block(self, data: bytes, *, initial: bool) -> None:
        try:
            entries = decode_block(data)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("dashboard: malformed witness block: %s", exc)
            return
        fresh = [e for e in entries if e.seq > self.witness_length]
        if not fresh:
            return
        for e in fresh:
            self.tail.append(e)
            if e.operation in TRAP_OPERATIONS:
                swarm = e.params.get("swarm_id") if isinstance(e.params.get("swarm_id"), str) else "?"
                kind = e.params.get("limit") if isinstance(e.params.get("limit"), str) else "trap"
                self.counts.traps[(str(swarm), str(kind))] += 1
        self.witness_length, self.witness_head = fresh[-1].seq, fresh[-1].hash
        if not initial:
            self._emit("witness", {"length": self.witness_length, "head": self.witness_head,
                                   "entries": [_entry_json(e) for e in fresh[-TAIL_KEPT:]]})

    # -- reading the view --------------------------------------------------------

    def bus_info(self) -> dict[str, Any]:
        return {"url": str(self.bus.url), "namespace": self.bus.namespace, "connected": self.connected}

    def holding(self) -> dict[str, list[str]]:
        held: dict[str, list[str]] = collections.defaultdict(list)
        for t in self.tasks.values():
            if t.status is TaskStatus.CLAIMED and t.owner:
                held[t.owner].append(t.id)
        return held

    def swarm_json(self, swarm_id: str, held: dict[str, list[str]] | None = None) -> dict[str, Any] | None:
        swarm = self.swarms.get(swarm_id)
        if swarm is None:
            return None
        if held is None:
            held = {swarm_id: sorted(t.id for t in self.tasks.values()
                                     if t.status is TaskStatus.CLAIMED and t.owner == swarm_id)}
        return swarm.as_json(sorted(held.get(swarm_id, [])), self.live.get(swarm_id))

    def waiting(self) -> list[dict[str, Any]]:
        """What needs a human: available work no live qualified agent can take,
        open breakers and failed tasks (from the bus), then the blocker reports
        and escalations heard since start."""
        items: list[dict[str, Any]] = []
        if self.unattended:
            named = self.unattended[:UNATTENDED_LISTED]
            items.append({"kind": "unattended", "count": len(self.unattended), "tasks": named,
                          "reason": f"{len(self.unattended)} available task"
                                    f"{'s' if len(self.unattended) != 1 else ''} with no live qualified "
                                    "agent" + (f" ({len(named)} shown)" if len(self.unattended) > len(named)
                                               else ""),
                          "at": self.clock()})
        for s in sorted(self.swarms.values(), key=lambda s: s.id):
            if s.breaker is not None and s.breaker.state is not BreakerState.CLOSED:
                items.append({"kind": "breaker", "swarm": s.id, "reason": s.breaker.reason,
                              "state": s.breaker.state.value, "at": s.breaker.changed_at})
        for t in sorted(self.tasks.values(), key=lambda t: t.id):
            if t.status is TaskStatus.FAILED:
                last = t.history[-1] if t.history else None
                reason = t.error or (last.reason if last else "")
                items.append({"kind": "failed", "task": t.id, "reason": reason,
                              "at": last.at if last else t.updated_at})
        items.extend(reversed(self.messages))
        return items

    def witness_json(self) -> dict[str, Any]:
        return {"length": self.witness_length, "head": self.witness_head,
                "tail": [_entry_json(e) for e in self.tail], "verify": self.verify_result}

    def snapshot(self) -> dict[str, Any]:
        held = self.holding()
        return {
            "bus": self.bus_info(),
            "now": self.clock(),
            "tasks": {tid: _task_json(t, self.revisions.get(TASKS + tid, 0))
                      for tid, t in sorted(self.tasks.items())},
            "critical_path": list(self.critical),
            "swarms": {sid: self.swarm_json(sid, held) for sid in sorted(self.swarms)},
            "waiting": self.waiting(),
            "events": list(self.events),
            "witness": self.witness_json(),
        }

    # -- actions ------------------------------------------------------------------

    async def verify(self) -> dict[str, Any]:
        """Verify the whole witness chain (one run at a time: a click while a
        run is going waits for that run). Broadcast and kept as the last result."""
        if self._verifying is None or self._verifying.done():
            self.verify_result = {**(self.verify_result or {}), "running": True}
            self._emit("verify", self.verify_result)
            self._verifying = asyncio.create_task(self._verify())
        return await asyncio.shield(self._verifying)

    async def _verify(self) -> dict[str, Any]:
        try:
            report = await Witness(self.bus).verify()
            result: dict[str, Any] = {"ok": report.ok, "entries": report.entries, "problem": report.problem,
                                      "first_bad_seq": report.first_bad_seq,
                                      "checkpoints": report.checkpoints_checked}
        except InfraFabricError as exc:
            result = {"ok": False, "entries": None, "problem": f"could not verify: {exc}",
                      "first_bad_seq": None, "checkpoints": 0}
        result.update(at=self.clock(), running=False)
        self.verify_result = result
        self._emit("verify", result)
        return result

    def fleet(self, by: str) -> Fleet:
        """The fleet assembled for an action of ``by``, as every front end builds
        it: governed (a reopened task is pushed only to qualified swarms whose
        breaker is closed), witnessed with the same severities, signed."""
        return assemble(self.bus, home=self.home, actor=by, clock=self.clock)

    async def reopen_task(self, task_id: str, *, by: str, reason: str) -> Task:
        """Give a failed task a fresh set of attempts through the fleet's coordinator,
        witnessed with ``by``."""
        return await self.fleet(by).coordinator.reopen_task(task_id, by=by, reason=reason)

    async def reset_breaker(self, swarm_id: str, *, by: str, budget_micros: int | None) -> Breaker:
        """Close ``swarm_id``'s breaker through the fleet's governor, witnessed with ``by``."""
        gov = self.fleet(by).governor
        return await gov.reset_circuit_breaker(swarm_id, by=by, budget_micros=budget_micros)


def _entry_json(e: WitnessEntry) -> dict[str, Any]:
    return {"seq": e.seq, "ts": e.ts, "component": e.component, "operation": e.operation,
            "actor": e.actor, "severity": e.severity, "hash": e.hash, "params": e.params}
