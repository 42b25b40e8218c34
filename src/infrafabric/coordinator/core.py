"""``IFCoordinator``: the task board as shared state on the bus.

Records (see :mod:`infrafabric.bus.layout`): one :class:`Task` per task under
``tasks/``, one :class:`SwarmRecord` per registered swarm under ``swarms/``;
pushed tasks go to the subject ``swarms/<id>/tasks``, blocker reports to
``orchestrator/blockers``. Every change of a task is one compare-and-swap on
its revision, made through :class:`~infrafabric.bus.records.Records` and its
one retry policy.

A coordinator object is a thin client: any number of them, in any number of
processes, see one board. Correctness never depends on a particular process
staying alive: a lapsed lease is claimable by anyone (the claim checks it),
and a stored ``blocked`` status is re-derived from the dependencies when a
claim looks at it. What a long-lived coordinator adds (``async with``) is
timeliness: it watches the board, and when a lease lapses or a completion
unblocks a task it makes the task available and pushes it to the swarms that
can take it — timers and watches, never a polling loop.

**Who may take work** is the :class:`~infrafabric.coordinator.policy.ClaimPolicy`
given at construction. Without one, the coordinator is *bare*: every
registered swarm that covers a task may claim it, and nothing is metered or
witnessed. That is a low-level tool (benchmarks, tests, embedding);
applications open the fleet with :func:`infrafabric.open_fleet`, which builds
the coordinator with the governor as its policy and the witness observing.

**One lifecycle**: every transition (claim, release, completion, failure,
reopening, lease expiry, unblocking) is one compare-and-swap followed by the
same settling step: observers are told, the policy counts the outcome, a task
that became available is pushed through the policy's routing, and a
completion unblocks its dependents. No front end has a path of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, JsonValue, ValidationError

from infrafabric.bus import EventBus, EventKind, Message, Subscription, Watch, WatchEvent
from infrafabric.bus.bounds import check_text
from infrafabric.bus.layout import BLOCKERS, PRESENCE, SWARMS, TASKS, WAITING, WATCHERS, push_subject
from infrafabric.bus.records import Mirrored, Records, Versioned, decode, encode, one_look
from infrafabric.coordinator.copy import BoardCopy
from infrafabric.coordinator.leases import Conflict, PathLeases, needs_lease
from infrafabric.coordinator.models import (
    Presence,
    SwarmRecord,
    Task,
    TaskEvent,
    TaskKind,
    TaskSpec,
    TaskStatus,
    Transition,
    WorkspaceRecord,
    coverage,
)
from infrafabric.coordinator.policy import ClaimPolicy
from infrafabric.coordinator.presence import Liveness
from infrafabric.coordinator.presence import liveness as judge_liveness
from infrafabric.coordinator.presence import unattended as find_unattended
from infrafabric.coordinator.ready import GRACE, Offer, ReadyIndex, Whole, is_live
from infrafabric.errors import (
    BreakerOpenError,
    ConfigurationError,
    CorruptRecordError,
    InfraFabricError,
    InvalidStateError,
    NotOwnerError,
    SwarmStoppedError,
    TaskExistsError,
    TaskNotFoundError,
    is_transient,
)

__all__ = [
    "BLOCKERS",
    "DEFAULT_LEASE_TTL",
    "SWARMS",
    "TASKS",
    "ClaimOutcome",
    "ClaimPolicy",
    "EmptyHand",
    "Feed",
    "IFCoordinator",
    "LostClaim",
    "Observer",
]

HISTORY_LIMIT = 50
#: writes (and settlements) a bulk import keeps in flight at once
IMPORT_CONCURRENCY = 256
DEFAULT_LEASE_TTL = 15.0
#: a presence record not refreshed for this long is stale (its agent is gone)
PRESENCE_TTL = 30.0
#: the barrier a watcher writes under ``waiting/`` to know its view of the waiting agents has
#: caught up (one key for all: each write is its own revision); a mark nobody counts as fresh
SYNC_ID = "~sync"
SYNC_KEY = WAITING + SYNC_ID
_SYNC_MARK = Presence(swarm_id=SYNC_ID, via="barrier", host="-", pid=0, since=0.0, seen_at=0.0,
                      ttl=1.0).model_dump_json().encode()
#: waiting agents a task that becomes available is pushed to at once (a policy may set its own)
PUSH_FANOUT = 3
#: seconds after which a task still available is pushed to the next waiting agents
PUSH_WINDOW = 1.0
#: seconds after a claim that its slot is marked dead by a loser too (its winner does it at once,
#: unless it died first): losers of a fresh race leave it, so a herd does not all write it
BURY_AFTER = 2.0
#: a push is routed among this many times ``push_fanout`` waiting agents (the policy ranks them;
#: each costs a read of its records per push)
PUSH_SAMPLE = 2
#: a process with no watcher that pushes a task reads waiting marks only until it has found this
#: many times the sample that cover the task (a page of marks, not all a thousand agents' marks)
WAITING_LOOK = 4
#: seconds past its expiry after which a waiting mark read while looking for whom to push is
#: deleted (its agent died without removing it; it would only lengthen every later look)
STALE_MARK = 60.0
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)

#: ``async (operation, params) -> None``: told of every successful operation
#: (the witness observes here: :meth:`infrafabric.witness.Witness.observer`).
Observer = Callable[[str, dict[str, Any]], Awaitable[None]]


def _metrics() -> ModuleType:
    """:mod:`infrafabric.metrics`, imported on the first claim or push: prometheus-client
    costs a command that claims nothing (``ifctl task heartbeat``) a third of its start-up."""
    from infrafabric import metrics

    return metrics


def _decode_push(message: Message) -> Task | None:
    try:
        return Task.model_validate_json(message.data)
    except ValidationError:
        return None


def _became_available(task: Task) -> float | None:
    """When the task last became available (its newest such transition), if known."""
    for transition in reversed(task.history):
        if transition.to is TaskStatus.AVAILABLE:
            return transition.at
    return None


def _decode_blocker(message: Message) -> dict[str, Any] | None:
    try:
        report = json.loads(message.data)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


@dataclass
class ClaimOutcome:
    """The result of a claim attempt, with every check made (for ``--why``)."""

    won: bool
    task_id: str
    swarm_id: str
    reason: str
    checks: list[str] = field(default_factory=list)
    task: Task | None = None
    #: the fencing token of the claim, if won
    claim_id: str | None = None
    #: not won because another claimant holds the task or won the race, as
    #: opposed to refused by a check (availability, dependencies, coverage, policy)
    lost: bool = False
    #: the task is not on the board (never was, or removed)
    gone: bool = False

    def __bool__(self) -> bool:
        return self.won


@dataclass
class EmptyHand:
    """Why :meth:`IFCoordinator.next_task` found nothing for a swarm.

    ``reason`` is one of ``breaker_open`` / ``budget_exhausted`` (the governor
    stopped the swarm: :attr:`stopped` holds the error, with the command that
    resumes it), ``no_covered_task`` (nothing on the board needs what it
    offers), ``all_done`` (everything it covers is completed) or ``waiting``
    (what it covers is claimed, blocked, failed or refused right now: each
    named in :attr:`details`). A stopped swarm's :attr:`stopped` carries the
    command that resumes it as its ``hint``."""

    swarm_id: str
    reason: str
    summary: str
    details: list[str] = field(default_factory=list)
    stopped: SwarmStoppedError | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"reason": self.reason, "summary": self.summary, "details": self.details}
        if self.stopped is not None and self.stopped.hint:
            data["hint"] = self.stopped.hint
        return data


class LostClaim(asyncio.Event):
    """What :meth:`IFCoordinator.holding` yields: set when the claim is lost,
    with :attr:`reason` saying how (lapsed and taken, task deleted...)."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None
        self.error: InfraFabricError | None = None

    def lose(self, reason: str, error: InfraFabricError | None = None) -> None:
        self.reason, self.error = reason, error
        self.set()


class Feed(Generic[T]):
    """A decoded live stream over a bus watch or subscription.

    ``async with coord.blockers() as feed:`` establishes it (nothing sent
    after entry is missed); then iterate it or ``await feed.get(timeout)``.
    """

    def __init__(self, stream: Watch | Subscription,
                 decode: Callable[[Any], T | None],
                 mark: contextlib.AbstractAsyncContextManager[Any] | None = None) -> None:
        self._stream = stream
        self._decode = decode
        self._mark = mark  # entered once the stream is established, left before it closes

    async def __aenter__(self) -> Self:
        await self._stream.start()
        if self._mark is not None:
            try:
                await self._mark.__aenter__()
            except BaseException:
                await self._stream.close()
                raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self._mark is not None:
                await self._mark.__aexit__(None, None, None)
        finally:
            await self._stream.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        while True:
            item = self._decode(await self._stream.__anext__())
            if item is not None:
                return item

    async def get(self, timeout: float | None = None) -> T:  # noqa: ASYNC109 - a convenience
        """The next item, or TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    async def close(self) -> None:
        await self._stream.close()


def _backoff(first: float = 0.1, most: float = 2.0) -> Iterator[float]:
    """The pauses before each retry of a transient failure: doubling from ``first`` to ``most``."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


def sort_key(task: Task) -> tuple[int, int, float, str]:
    """Critical path before filler, then higher priority, then older, then id."""
    return (0 if task.kind is TaskKind.CRITICAL else 1, -task.priority, task.created_at, task.id)




class IFCoordinator:
    """The coordinator: tasks, claims with leases, push delivery, blockers.

    ``policy`` decides who may take work (default: the open
    :class:`ClaimPolicy` of a bare coordinator; see the module docs);
    ``lease_ttl`` is how long a claim lasts without a heartbeat, unless a
    claim asks for its own; ``min_coverage`` is the share of a task's
    required capabilities a swarm must offer to claim it or be pushed it (a
    policy may set its own); ``max_attempts`` is how many failed or lapsed
    attempts a task created here may have before it is failed for good;
    ``observers`` are told of every operation. Use it as ``async with
    IFCoordinator(bus) as coord`` to also run the lease and dependency
    watcher (see the module docs); one-shot callers may skip that.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        policy: ClaimPolicy | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        min_coverage: float = 0.7,
        max_attempts: int = 3,
        push_fanout: int = PUSH_FANOUT,
        observers: Iterable[Observer] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_lease(lease_ttl, "lease_ttl")
        if not 0 <= min_coverage <= 1:
            raise ConfigurationError(f"min_coverage must be within 0..1, got {min_coverage}")
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {max_attempts}")
        if push_fanout < 1:
            raise ConfigurationError(f"push_fanout must be at least 1, got {push_fanout}")
        self.bus = bus
        self.event_bus = bus  # the seeds' name
        self.policy = policy if policy is not None else ClaimPolicy()
        self.lease_ttl = lease_ttl
        self.min_coverage = min_coverage
        self.max_attempts = max_attempts
        self.push_fanout = push_fanout
        self.observers: list[Observer] = list(observers)
        self.clock = clock
        self.last_claim: ClaimOutcome | None = None
        self.tasks = Records(bus, TASKS, Task)
        self.swarms = Mirrored(bus, SWARMS, SwarmRecord)  # (read once per hand-out: one_look)
        self.presence = Records(bus, PRESENCE, Presence)
        #: the coordinators running a board watcher now (their timers hand lapsed claims back)
        self.watchers = Records(bus, WATCHERS, Presence)
        #: the agents waiting in ``next_task`` now: live, idle and listening for pushes
        self.waiting = Records(bus, WAITING, Presence)
        #: the claims' path leases (see :mod:`infrafabric.coordinator.leases`)
        self.leases = PathLeases(bus, self.tasks, lambda: self.clock(), self.expire_lease)
        #: the available tasks by capability set and band (see :mod:`infrafabric.coordinator.ready`)
        self.ready = ReadyIndex(bus, lambda: self.clock())
        self._watcher: asyncio.Task[None] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._marks = contextlib.AsyncExitStack()
        self._watcher_id = f"{os.getpid()}-{secrets.token_hex(4)}"
        #: (when judged, whether this coordinator leads the follow-up pushes)
        #: live view of the running watchers' marks while the watcher runs (None otherwise)
        self._watchers_view: dict[str, Presence] | None = None
        self._watchers_watcher: asyncio.Task[None] | None = None
        #: live view of the waiting agents while the watcher runs (None otherwise)
        self._waiting: dict[str, Presence] | None = None
        #: the newest revision the waiting view has applied, the barriers waiting to be passed,
        #: and the barrier the next callers share (see :meth:`_catch_up`)
        self._waiting_seen = 0
        self._waiting_sync: list[tuple[int, asyncio.Future[None]]] = []
        self._catching: asyncio.Future[None] | None = None
        #: the watcher's copy of the board, each task with the revision that wrote it (its
        #: compare-and-swap base)
        self._board = BoardCopy()
        #: task id → done when this process's claim attempt on it ends: another hand-out of this
        #: process passes over it instead of racing its own neighbour for it (cf. SKIP LOCKED)
        self._trying: dict[str, asyncio.Future[None]] = {}
        #: live swarm registry while the watcher runs (None otherwise)
        self._swarms: dict[str, SwarmRecord] | None = None
        self._swarm_watcher: asyncio.Task[None] | None = None
        self._waiting_watcher: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> Self:
        """Start the lease/dependency watcher (idempotent)."""
        if self._watcher is None:
            loop = asyncio.get_running_loop()
            board_ready: asyncio.Future[None] = loop.create_future()
            swarms_ready: asyncio.Future[None] = loop.create_future()
            waiting_ready: asyncio.Future[None] = loop.create_future()
            watchers_ready: asyncio.Future[None] = loop.create_future()
            self._watcher = asyncio.create_task(self._watch_board(board_ready), name="if-coordinator-watch")
            self._swarm_watcher = asyncio.create_task(self._watch_swarms(swarms_ready),
                                                      name="if-coordinator-swarms")
            self._waiting_watcher = asyncio.create_task(self._watch_waiting(waiting_ready),
                                                        name="if-coordinator-waiting")
            self._watchers_watcher = asyncio.create_task(
                self._mirror(self.watchers, watchers_ready, self._keep_watchers),
                name="if-coordinator-watchers")
            await asyncio.gather(board_ready, swarms_ready, waiting_ready, watchers_ready,
                                 self.policy.follow(), self.ready.follow())
            # say so on the bus: a one-shot hand-out that finds the index empty leaves lapsed claims
            # to this watcher's timers instead of reading the board itself
            await self._marks.enter_async_context(self._marked(
                self.watchers, self._watcher_id, via="watcher", ttl=PRESENCE_TTL))
        return self

    async def close(self) -> None:
        """Stop the watcher and its timers (the bus stays open)."""
        await self.ready.settle(self.bus.timeout)
        await self._marks.aclose()
        if self._watcher is not None:
            await asyncio.gather(self.policy.unfollow(), self.ready.unfollow())
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = [t for t in (self._watcher, self._swarm_watcher, self._waiting_watcher,
                             self._watchers_watcher, *self._background) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._watcher = self._swarm_watcher = self._waiting_watcher = self._watchers_watcher = None
        self._swarms = self._waiting = self._watchers_view = None
        for _, seen in self._waiting_sync:  # the view is gone: a barrier waiting on it never passes
            if not seen.done():
                seen.cancel()
        if self._catching is not None:
            self._catching.cancel()
        self._waiting_seen, self._waiting_sync, self._catching = 0, [], None
        self._background.clear()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- reading --------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task:
        """The task, or :class:`TaskNotFoundError`."""
        task = await self.tasks.read(task_id)
        if task is None:
            raise _no_task(task_id)
        return task

    async def list_tasks(self) -> list[Task]:
        """Every task, in hand-out order (critical first, then priority).
        Streamed a page at a time (each page has the bus deadline): a board of
        100,000 tasks is more than one listing returns in time."""
        return sorted([v.value async for v in self.tasks.scan()], key=sort_key)

    async def _find(self, candidates: Callable[[BoardCopy], Iterable[str]],
                    match: Callable[[Task], bool]) -> list[Task]:
        """The tasks ``match`` picks, as they are on the bus now. With the
        watcher running, ``candidates`` narrows them to a few ids from its copy
        of the board without listing, and each is read back (the watcher may
        lag a change just made, so ``candidates`` must not depend on what can
        lag); without it, one listing."""
        if self._watcher is None:
            return [t for t in await self.list_tasks() if match(t)]
        found = []
        for task_id in list(candidates(self._board)):
            task = await self.tasks.read(task_id)
            if task is not None and match(task):
                found.append(task)
        return sorted(found, key=sort_key)

    async def held_by(self, swarm_id: str) -> list[Task]:
        """The tasks ``swarm_id`` holds a claim on now (a lapsed lease still
        counts until someone else claims the task)."""
        return await self._find(lambda copy: [t.id for t in copy.claimed_by(swarm_id)],
                                lambda t: t.status is TaskStatus.CLAIMED and t.owner == swarm_id)

    async def unblocked_by(self, task_id: str) -> list[Task]:
        """The dependents of ``task_id`` that are available now (after it
        completed: those it unblocked, unless claimed since)."""
        def dependents(copy: BoardCopy) -> list[str]:  # (linked before each dependent is created)
            done = copy.get(task_id)
            return [] if done is None else done.dependents

        return await self._find(dependents,
                                lambda t: task_id in t.dependencies and t.status is TaskStatus.AVAILABLE)

    async def get_task_owner(self, task_id: str) -> str | None:
        """The swarm holding a live claim on the task, else None."""
        task = await self.get_task(task_id)
        if task.status is TaskStatus.CLAIMED and not self._lapsed(task):
            return task.owner
        return None

    # -- creating -------------------------------------------------------------

    async def create_task(self, spec: TaskSpec | Mapping[str, Any], *, completed: bool = False,
                          by: str | None = None) -> Task:
        """Put a new task on the board; its status is derived from its
        dependencies (which must exist), and it is pushed if it is available.

        ``completed`` records work already finished elsewhere (a migrated
        board's COMPLETED rows): the task starts completed, ``by`` naming who
        did it if known, and is never handed out."""
        made = await self._create(self.validate_spec(spec), completed=completed, by=by)
        await self._settle(None, made.value, "task_created", self._created_params(made.value, completed, by))
        await self._settle_new([made.value])
        return made.value

    @staticmethod
    def _created_params(task: Task, completed: bool, by: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"task_id": task.id, "status": task.status.value}
        if completed and by:
            params["completed_by"] = by  # who did the work: not who imports it (the entry's actor)
        return params

    def _new_task(self, spec: TaskSpec, status: TaskStatus, reason: str, *, completed: bool,
                  by: str | None) -> Task:
        now = self.clock()
        return Task(**spec.model_dump(), status=status, created_at=now, updated_at=now,
                    max_attempts=self.max_attempts, owner=by if completed else None,
                    ready_seq=1 if status is TaskStatus.AVAILABLE else 0,
                    history=[Transition(at=now, to=status, by=by, reason=reason)])

    async def _create(self, spec: TaskSpec, *, completed: bool, by: str | None) -> Versioned[Task]:
        """Write a new task (status derived from its dependencies, each linked
        to it first); nothing else."""
        if await self.tasks.exists(spec.id):
            raise TaskExistsError(f"task {spec.id!r} already exists")
        await self._dependency_states(spec.dependencies, for_task=spec.id)  # each exists
        await self._link(spec.dependencies, [spec.id])
        deps = await self._dependency_states(spec.dependencies, for_task=spec.id)  # as of after the links
        if completed:
            status, reason = TaskStatus.COMPLETED, "imported as completed"
        elif all(s is TaskStatus.COMPLETED for s in deps.values()):
            status, reason = TaskStatus.AVAILABLE, "created"
        else:
            status, reason = TaskStatus.BLOCKED, "created"
        new = self._new_task(spec, status, reason, completed=completed, by=by)
        if new.status is TaskStatus.AVAILABLE:
            await self.ready.offer([new])  # indexed before it is on the board (see coordinator.ready)
        made = await self.tasks.create(spec.id, new)
        if made is None:
            raise TaskExistsError(f"task {spec.id!r} already exists")
        return made

    async def _link(self, dependencies: Iterable[str], dependents: list[str]) -> None:
        """Add ``dependents`` to each of ``dependencies``' records, before the
        dependents exist: a completion from then on unblocks them. (One that
        completed before the link is seen when the dependents' status is
        derived after it; see :meth:`_settle_new`.)"""
        async def link(dep: str) -> None:
            def add(task: Task | None) -> Task | None:
                if task is None:
                    return None
                new = [d for d in dependents if d not in task.dependents]
                return task.model_copy(update={"dependents": [*task.dependents, *new]}) if new else None

            await self.tasks.mutate(dep, add)

        await self._bounded_all(link(d) for d in dict.fromkeys(dependencies))

    async def _settle_new(self, tasks: Iterable[Task]) -> None:
        """Make available each new blocked task whose dependencies all
        completed between the derivation of its status and its creation
        (their completions did not find it on the board yet)."""
        for task in tasks:
            if task.status is TaskStatus.BLOCKED and task.dependencies:
                states = await self._dependency_states(task.dependencies, for_task=task.id)
                if all(state is TaskStatus.COMPLETED for state in states.values()):
                    await self._make_available(task.id)

    async def create_tasks(self, specs: Iterable[TaskSpec | Mapping[str, Any]], *,
                           completed: Mapping[str, str | None] | None = None) -> list[Task]:
        """Create several tasks, all or nothing. ``completed`` maps the ids of
        tasks already finished to who finished them (or None): they are created
        completed (see :meth:`create_task`).

        One validation pass before anything is written: every task valid and
        storable, no id twice, no cycle, none on the board yet, every
        dependency in the batch or on the board; each task's status is derived
        then (dependencies in the batch from the batch, others read once). The
        tasks are then written :data:`IMPORT_CONCURRENCY` at a time, neither
        pushed nor witnessed. If any write fails — the bus, a concurrent import
        that took one of the ids, an interruption — every task this call wrote
        is removed again (each only if unchanged since, so a task an agent
        already claimed is left and named; a write whose outcome was unknown
        is read back first) and the error is raised. Only when all are written
        are they witnessed (group-committed) and the available ones pushed."""
        done_elsewhere = dict(completed or {})
        order = self._dependency_order([self.validate_spec(s) for s in specs])
        ids = [s.id for s in order]
        twice = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
        if twice:
            raise ConfigurationError(f"task id(s) listed twice: {', '.join(twice[:8])}")
        in_batch = set(ids)
        outside = sorted({d for s in order for d in s.dependencies if d not in in_batch})
        found, existing = await asyncio.gather(self._bounded(self.tasks.read(d) for d in outside),
                                               self.bus.which_exist([self.tasks.key(i) for i in ids]))
        present = [self.tasks.key(i) in existing for i in ids]
        missing = [d for d, t in zip(outside, found, strict=True) if t is None]
        if missing:
            needing = [s.id for s in order if set(s.dependencies) & set(missing)]
            raise TaskNotFoundError(f"task(s) {', '.join(needing[:8])} depend on unknown task(s): "
                                    f"{', '.join(missing[:8])}")
        there = [i for i, yes in zip(ids, present, strict=True) if yes]
        if there:
            shown = ", ".join(there[:8]) + (f" and {len(there) - 8} more" if len(there) > 8 else "")
            raise TaskExistsError(f"{len(there)} of the tasks already exist on the board: {shown}")
        states = {d: t.status for d, t in zip(outside, found, strict=True) if t is not None}
        dependents: dict[str, list[str]] = {}
        for spec in order:
            for dep in spec.dependencies:
                dependents.setdefault(dep, []).append(spec.id)
        tasks: list[Task] = []
        for spec in order:  # dependencies first: each one's status is known when its dependents ask
            if spec.id in done_elsewhere:
                status, reason = TaskStatus.COMPLETED, "imported as completed"
            elif all(states[d] is TaskStatus.COMPLETED for d in spec.dependencies):
                status, reason = TaskStatus.AVAILABLE, "created"
            else:
                status, reason = TaskStatus.BLOCKED, "created"
            states[spec.id] = status
            task = self._new_task(spec, status, reason, completed=spec.id in done_elsewhere,
                                  by=done_elsewhere.get(spec.id))
            if spec.id in dependents:
                task = task.model_copy(update={"dependents": dependents[spec.id]})
            encode(task, self.tasks.key(spec.id))  # storable (size, read-back), before any write
            tasks.append(task)
        written: dict[str, Versioned[Task]] = {}

        async def write(group: list[Task]) -> None:
            made = await self.tasks.create_many([(t.id, t) for t in group])
            for task, got in zip(group, made, strict=True):
                if got is not None:
                    written[task.id] = got
            taken = [t.id for t, got in zip(group, made, strict=True) if got is None]
            if taken:
                raise TaskExistsError(f"task(s) {', '.join(taken[:8])} already exist "
                                      "(another writer made them meanwhile)")

        try:
            # dependencies on the board are linked to their new dependents, and the available tasks
            # indexed (see coordinator.ready), before any is on the board; if the import fails, links
            # and slots naming tasks that never were, or were removed again, are dead to every reader
            await asyncio.gather(*(self._link([d], dependents[d]) for d in outside))
            await self.ready.offer([t for t in tasks if t.status is TaskStatus.AVAILABLE])
            size = self.bus.batch_limit  # one round trip each (see EventBus.create_many)
            await self._bounded_all(write(tasks[i:i + size]) for i in range(0, len(tasks), size))
        except BaseException as exc:
            removed, left = await _finish_value(asyncio.ensure_future(self._remove_created(tasks, written)))
            if isinstance(exc, InfraFabricError):
                exc.message += ("; nothing was imported" + (
                    f": the {removed} task(s) written were removed" if removed else "")
                    + (f", except {', '.join(left)} (changed since)" if left else ""))
            raise
        # the waiting agents, read once for the batch after every task is written (one that marks
        # itself waiting later reads the index before it sleeps)
        waiting = await self._waiting_now() if any(t.status is TaskStatus.AVAILABLE for t in tasks) else {}
        await self._bounded_all(self._settle(None, t, "task_created", self._created_params(
            t, t.id in done_elsewhere, done_elsewhere.get(t.id)), waiting) for t in tasks)
        await self._settle_new(t for t in tasks if set(t.dependencies) & set(outside))
        return tasks

    async def _bounded(self, calls: Iterable[Awaitable[T]]) -> list[T]:
        """The results of ``calls``, at most :data:`IMPORT_CONCURRENCY` in flight."""
        gate = asyncio.Semaphore(IMPORT_CONCURRENCY)

        async def one(call: Awaitable[T]) -> T:
            async with gate:
                return await call

        return list(await asyncio.gather(*(one(c) for c in calls)))

    async def _bounded_all(self, calls: Iterable[Awaitable[None]]) -> None:
        """Run ``calls``, at most :data:`IMPORT_CONCURRENCY` at a time; on the
        first failure the rest are cancelled and awaited, and that failure is
        raised (not an exception group)."""
        gate = asyncio.Semaphore(IMPORT_CONCURRENCY)

        async def one(call: Awaitable[None]) -> None:
            async with gate:
                await call

        try:
            async with asyncio.TaskGroup() as group:
                for call in calls:
                    group.create_task(one(call))
        except BaseExceptionGroup as grouped:
            first = grouped.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    @staticmethod
    def _dependency_order(specs: list[TaskSpec]) -> list[TaskSpec]:
        known = {s.id for s in specs}
        order: list[TaskSpec] = []
        done: set[str] = set()
        pending = list(specs)
        while pending:
            ready = [s for s in pending if all(d in done or d not in known for d in s.dependencies)]
            if not ready:
                raise ConfigurationError("dependency cycle among: " + ", ".join(s.id for s in pending))
            order += ready
            done |= {s.id for s in ready}
            pending = [s for s in pending if s.id not in done]
        return order

    async def _remove_created(self, tasks: list[Task], written: dict[str, Versioned[Task]]
                              ) -> tuple[int, list[str]]:
        """Delete the tasks of ``tasks`` this call wrote: those in ``written``
        at the revision written, and any whose write's outcome was unknown if
        the record holds exactly what was written; each only if unchanged
        since. Returns how many were removed, and the ids left because they
        changed meanwhile."""
        async def remove(task: Task) -> bool | None:
            made = written.get(task.id)
            if made is None:  # failed, never sent, or its outcome unknown: read it back
                got = await self.tasks.get(task.id)
                if got is None or got.value != task:
                    return None
                made = got
            return await self.tasks.delete(task.id, made.revision)

        outcomes = await self._bounded(remove(t) for t in reversed(tasks))
        left = [t.id for t, gone in zip(reversed(tasks), outcomes, strict=True) if gone is False]
        return sum(gone is True for gone in outcomes), left

    @staticmethod
    def validate_spec(spec: TaskSpec | Mapping[str, Any]) -> TaskSpec:
        """A :class:`TaskSpec` from a spec, a live :class:`Task` or a mapping;
        :class:`ConfigurationError` naming each bad field otherwise."""
        if isinstance(spec, TaskSpec):
            return TaskSpec.model_validate(spec.model_dump(include=set(TaskSpec.model_fields)))
        try:
            return TaskSpec.model_validate(dict(spec))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigurationError(f"invalid task: {problems}") from exc

    async def _dependency_states(self, deps: list[str], *, for_task: str) -> dict[str, TaskStatus]:
        found = await asyncio.gather(*(self.tasks.read(d) for d in deps))
        missing = [d for d, t in zip(deps, found, strict=True) if t is None]
        if missing:
            raise TaskNotFoundError(f"task {for_task!r} depends on unknown task(s): {', '.join(missing)}")
        return {d: t.status for d, t in zip(deps, found, strict=True) if t is not None}

    # -- swarms and push --------------------------------------------------------

    async def register_swarm(self, swarm_id: str, capabilities: Iterable[str] = ()) -> SwarmRecord:
        """Register (or update) a swarm and its capabilities. Its pushed tasks
        arrive on :meth:`pushed_tasks`."""
        record = make_swarm_record(swarm_id, capabilities, self.clock())
        await self.swarms.put(swarm_id, record)
        if self._swarms is not None:
            self._swarms[swarm_id] = record
        await self._notify("swarm_registered", {"swarm_id": swarm_id, "capabilities": record.capabilities})
        return record

    async def get_swarm(self, swarm_id: str) -> SwarmRecord | None:
        return await self.swarms.read(swarm_id)

    async def list_swarms(self) -> list[SwarmRecord]:
        return [v.value for v in await self.swarms.list()]

    async def push_task_to_swarm(self, swarm_id: str, task: Task | Mapping[str, Any]) -> None:
        """Publish a task to one swarm's subject (delivery only; no state changes)."""
        payload = task.model_dump_json() if isinstance(task, Task) else json.dumps(dict(task))
        await self.bus.publish(push_subject(swarm_id), payload)

    def pushed_tasks(self, swarm_id: str, *, waiting: bool = True) -> Feed[Task]:
        """A :class:`Feed` of the tasks pushed to ``swarm_id``. While it is
        open (``async with``), the swarm is marked as waiting for work (tasks
        are pushed only to waiting agents: see :meth:`_announce`), unless
        ``waiting`` is False (the caller marks it when it does wait)."""
        clock = self.clock

        def decode(message: Message) -> Task | None:
            task = _decode_push(message)
            if task is not None:
                with contextlib.suppress(Exception):  # metrics never break a feed
                    since = _became_available(task)
                    if since is not None:
                        _metrics().record_push_latency(clock() - since)
            return task

        mark = self._marked(self.waiting, swarm_id, via="pushed_tasks", ttl=PRESENCE_TTL) if waiting else None
        return Feed(self.bus.subscribe(push_subject(swarm_id)), decode, mark)

    async def _announce(self, task: Task, round_: int = 0,
                        waiting: Mapping[str, Presence] | None = None) -> list[str]:
        """Push an available task to ``push_fanout`` of the agents waiting for
        work: the best the policy routes it to among a sample of
        :data:`PUSH_SAMPLE` x ``push_fanout`` waiting agents that cover it,
        taken in an order rotated by the task's id, so a burst of tasks
        spreads over the waiting agents instead of waking the same few.
        ``round_`` n > 0 (a follow-up: none of the earlier ones took it)
        ranks a sample n + 1 times as wide and pushes to the n-th next group.
        Nobody waiting: nobody is pushed (the ready index has it for the next
        hand-out). ``waiting``: the waiting agents, if the caller read them
        after the task became available (a batch reads them once). Returns
        who was pushed."""
        if waiting is not None and not waiting:  # (an import's burst, with nobody waiting: no read)
            return []
        with one_look():  # the policy once, and each candidate's records in one round of reads
            threshold, fanout = await asyncio.gather(self._min_coverage(),
                                                     self.policy.push_fanout(self.push_fanout))
            if waiting is None:
                waiting = await self._waiting_now(
                    covering=(task, threshold, WAITING_LOOK * PUSH_SAMPLE * fanout * (round_ + 1)))
            if not waiting:
                return []
            covering = sorted(m.swarm_id for m in waiting.values() if _covers(m, task, threshold))
            if not covering:
                return []
            turn = int(hashlib.sha256(task.id.encode()).hexdigest()[:8], 16) % len(covering)
            order = covering[turn:] + covering[:turn]
            sample = order[:PUSH_SAMPLE * fanout * (round_ + 1)]  # each round ranks a wider sample
            known = self._swarms or {}
            records, _ = await asyncio.gather(
                asyncio.gather(*(self._registered(swarm_id, known) for swarm_id in sample)),
                asyncio.gather(*(self.policy.prepare(swarm_id) for swarm_id in sample)))
            ranked = await self.policy.route(task, [r for r in records if r is not None], threshold)
        chosen = ranked[round_ * fanout:(round_ + 1) * fanout]
        await asyncio.gather(*(self.push_task_to_swarm(swarm_id, task) for swarm_id in chosen))
        return chosen

    async def _registered(self, swarm_id: str, known: Mapping[str, SwarmRecord]) -> SwarmRecord | None:
        return known.get(swarm_id) or await self.swarms.read(swarm_id)

    async def _waiting_now(self, covering: tuple[Task, float, int] | None = None) -> dict[str, Presence]:
        """The agents waiting in ``next_task`` now (fresh marks), by swarm:
        the watcher's live view once it has caught up with every mark written
        before this call (see :meth:`_catch_up`), else one listing.

        ``covering`` (a task, the coverage threshold, how many): without a
        watcher, read marks only until that many waiting agents that cover
        the task are found (see :meth:`_waiting_covering`)."""
        marks = None
        if self._waiting is not None:
            try:
                async with asyncio.timeout(self.bus.timeout):
                    await self._catch_up()
                marks = list(self._waiting.values()) if self._waiting is not None else None
            except (TimeoutError, InfraFabricError) as exc:
                log.debug("the waiting view did not catch up (%s): reading the marks", exc)
        if marks is None and covering is not None:
            return await self._waiting_covering(*covering)
        if marks is None:  # no watcher, or its watch is behind (an outage): read them
            marks = [v.value for v in await self.waiting.list()]
        now = self.clock()
        return {m.swarm_id: m for m in marks if m.seen_at + m.ttl >= now and m.swarm_id != SYNC_ID}

    async def _waiting_covering(self, task: Task, threshold: float, want: int) -> dict[str, Presence]:
        """Fresh waiting marks of agents that cover ``task``, read a page at a
        time until ``want`` are found: whom to push to costs the same with ten
        agents waiting or a thousand. (On NATS the marks come in the order
        they were last written, those waiting longest first; on etcd by id.)
        Marks long expired on the way are deleted (once per agent that died
        waiting: every later look would read them again)."""
        now = self.clock()
        found: dict[str, Presence] = {}
        dead: list[Versioned[Presence]] = []
        async with contextlib.aclosing(self.waiting.scan(batch=want)) as marks:
            async for seen in marks:
                mark = seen.value
                if mark.swarm_id == SYNC_ID:
                    continue
                if mark.seen_at + mark.ttl < now:
                    if now - mark.seen_at - mark.ttl > STALE_MARK:
                        dead.append(seen)
                    continue
                if _covers(mark, task, threshold):
                    found[mark.swarm_id] = mark
                    if len(found) >= want:
                        break
        if dead:  # each only if not rewritten since (an agent of that swarm waits again)
            with contextlib.suppress(InfraFabricError):  # tidying: the next look tries again
                await self._bounded(self.waiting.delete(self.waiting.id_of(v.key), v.revision)
                                    for v in dead)
        return found

    def _catch_up(self) -> asyncio.Future[None]:
        """Wait until the waiting view holds every mark written before this
        call. A view kept by a watch lags the bus (by a moment, or by an
        outage): an agent that marked itself waiting, read the index empty
        and went to sleep must still be pushed a task offered right after,
        or it sleeps through available work. So a barrier is written under
        the view's prefix and the call returns once the watch has brought it
        back (a watch delivers in revision order). Calls made before the
        barrier is written share it: a burst of offers costs one write."""
        if self._catching is None:
            self._catching = asyncio.ensure_future(self._barrier())
        return asyncio.shield(self._catching)

    async def _barrier(self) -> None:
        await asyncio.sleep(0)  # the offers of this turn of the loop join this barrier
        self._catching = None  # a later call needs a later barrier
        revision = await self.bus.put(SYNC_KEY, _SYNC_MARK)
        if self._waiting is not None and self._waiting_seen < revision:  # (None: closed meanwhile)
            seen = asyncio.get_running_loop().create_future()
            self._waiting_sync.append((revision, seen))
            await seen

    def _leads_follow_ups(self) -> bool:
        """Whether this coordinator's watcher is the one that pushes tasks
        still available after :data:`PUSH_WINDOW` to the next waiting agents:
        the fresh watcher with the least id, judged from the watch-kept view
        of ``coordinators/`` (no read inside the board's event loop)."""
        now = self.clock()
        fresh = [m.swarm_id for m in (self._watchers_view or {}).values() if m.seen_at + m.ttl >= now]
        return min([*fresh, self._watcher_id]) == self._watcher_id

    async def _follow_up(self, task_id: str, ready_seq: int, round_: int) -> None:
        """Push a task still available (since the same offer) to the next
        group of waiting agents, and come back after the window while some
        are left (see :meth:`_announce`)."""
        if not await self._waiting_now():
            return
        task = await self.tasks.read(task_id)
        if task is None or task.status is not TaskStatus.AVAILABLE or task.ready_seq != ready_seq:
            return
        if await self._announce(task, round_):
            self._later_follow_up(task, round_ + 1)

    def _later_follow_up(self, task: Task, round_: int) -> None:
        asyncio.get_running_loop().call_later(
            PUSH_WINDOW, self._spawn, lambda _: self._follow_up(task.id, task.ready_seq, round_), "")

    # -- one lifecycle ------------------------------------------------------------

    async def _settle(self, before: Task | None, after: Task, operation: str | None,
                      params: dict[str, Any], waiting: Mapping[str, Presence] | None = None) -> None:
        """What follows every transition, whoever made it: observers are told,
        the policy counts a finished attempt, a task that became available is
        pushed, and a completion unblocks its dependents."""
        previous = before.status if before is not None else None
        try:
            if operation is not None:
                await self._notify(operation, params)
        finally:  # the transition is committed: its consequences must not depend on the audit write
            ended = before is not None and before.status is TaskStatus.CLAIMED and (
                after.status is not TaskStatus.CLAIMED or after.claim_id != before.claim_id)
            if ended and before is not None and needs_lease(before):
                await self.leases.drop(before.id, before.claim_id)  # it ended with its claim; tidy it away
                await self._announce_freed(before)
            if ended and before is not None and before.owner and before.claim_id:
                await self.policy.release(before.owner, before.claim_id, before.id)  # the rest of its hold
            if operation == "task_completed" and before is not None and before.owner:
                await self.policy.on_outcome(before.owner, after, success=True)
            elif operation == "task_failed" and before is not None and before.owner:
                await self.policy.on_outcome(before.owner, after, success=False)
            if after.status is TaskStatus.AVAILABLE and (previous is not TaskStatus.AVAILABLE):
                await self._announce(after, waiting=waiting)
            if after.status is TaskStatus.COMPLETED and previous is not None \
                    and previous is not TaskStatus.COMPLETED:
                await self._unblock_dependents(after)

    async def _change(self, task_id: str, change: Callable[[Task], Task | Awaitable[Task | None] | None],
                      *, missing: Callable[[], InfraFabricError] | None = None
                      ) -> tuple[Task, Task] | None:
        """One compare-and-swap transition of a task (retried by the record
        layer's policy). ``change`` gets the current task and returns the new
        one, None to leave it, or raises to refuse. Returns (before, after)
        if it wrote; None if the task is absent (or ``missing()`` is raised)
        or ``change`` left it.

        The transition this call appends to the history is tagged with an
        operation id, so a write whose outcome was unknown (a timeout) and
        that landed is recognised on the re-read even when another writer
        changed the task since: it is reported as done, never applied twice."""
        before: Task | None = None
        applied: Task | None = None
        op = secrets.token_hex(6)

        async def step(current: Task | None) -> Task | None:
            nonlocal before, applied
            if current is None:
                if missing is not None:
                    raise missing()
                return None
            if before is not None and any(h.op == op for h in current.history):
                applied = current  # this call's earlier write landed; ``before`` is what it was based on
                return None
            before = current
            out = change(current)
            new = await out if isinstance(out, Awaitable) else out
            if new is not None and new.status is TaskStatus.AVAILABLE \
                    and current.status is not TaskStatus.AVAILABLE:
                # it becomes available: indexed first, under the ready_seq this write sets (coordinator.ready)
                new = new.model_copy(update={"ready_seq": current.ready_seq + 1})
                await self.ready.offer([new])
            if new is not None and new.history and (not current.history
                                                    or new.history[-1] is not current.history[-1]):
                tagged = new.history[-1].model_copy(update={"op": op})
                new = new.model_copy(update={"history": [*new.history[:-1], tagged]})
            return new

        result = await self.tasks.mutate(task_id, step)
        if applied is not None and before is not None:
            return before, applied
        if result is None or before is None or result.value is before:
            return None
        return before, result.value

    # -- claims -------------------------------------------------------------------

    async def claim_task(self, swarm_id: str, task_id: str) -> bool:
        """Claim a task with one compare-and-swap. True for exactly one of any
        number of concurrent claimers; False at once otherwise (the reason is
        in :attr:`last_claim`)."""
        return (await self.try_claim(swarm_id, task_id)).won

    async def try_claim(self, swarm_id: str, task_id: str, *, lease_ttl: float | None = None,
                        dry_run: bool = False) -> ClaimOutcome:
        """Like :meth:`claim_task`, returning every check made. ``lease_ttl``
        (seconds) overrides the coordinator's lease for this claim; heartbeats
        renew it for as long. With ``dry_run``, make every check but write
        nothing (``won`` then means "would win now")."""
        if lease_ttl is not None:
            _check_lease(lease_ttl, "lease_ttl")
        started = time.perf_counter()
        with one_look():  # the swarm's record and the governor's read once for the attempt
            outcome = await self._try_claim(swarm_id, task_id, lease_ttl or self.lease_ttl, dry_run)
        self.last_claim = outcome
        if dry_run:
            return outcome
        try:
            if outcome.won:
                await self._notify("task_claimed", {"task_id": task_id, "swarm_id": swarm_id,
                                                    "claim_id": outcome.claim_id})
        finally:  # the claim is decided even if an observer fails
            _metrics().record_claim("won" if outcome.won else "lost" if outcome.lost else "refused",
                                 time.perf_counter() - started)
        return outcome

    async def _try_claim(self, swarm_id: str, task_id: str, ttl: float, dry_run: bool) -> ClaimOutcome:
        checks: list[str] = []

        def refuse(reason: str, task: Task | None = None, *, lost: bool = False,
                   gone: bool = False) -> ClaimOutcome:
            checks.append(f"refused: {reason}")
            return ClaimOutcome(False, task_id, swarm_id, reason, checks, task, lost=lost, gone=gone)

        cached = self._swarms.get(swarm_id) if self._swarms is not None else None
        watched = None if dry_run else self._claimable_copy(task_id)
        read_task = _given(watched) if watched is not None else self.tasks.get(task_id)
        if cached is not None:  # the watcher keeps the registry live: one read fewer
            first, threshold = await asyncio.gather(read_task, self._min_coverage())
            swarm: SwarmRecord | None = cached
        else:
            first, swarm, threshold = await asyncio.gather(
                read_task, self.swarms.read(swarm_id), self._min_coverage())
            if swarm is None:
                return refuse(f"swarm {swarm_id!r} is not registered (ifctl swarm register)")
        assert swarm is not None
        who: SwarmRecord = swarm
        refusal: ClaimOutcome | None = None
        reads = 0
        from_cache = cached is not None
        # one fencing token for the whole attempt: a re-read that finds it on the task means this
        # attempt's write landed (an unknown outcome that succeeded), whatever the re-read is for
        claim_id = secrets.token_hex(8)
        lease = None  # this attempt's path lease, once taken
        asked = False  # whether the policy was asked to hold this attempt's cost
        holding = False  # whether it holds some for it (then given back if the claim is refused)
        replaced: tuple[str, str] | None = None  # (owner, claim id) of a lapsed claim this one takes over

        class _Refused(Exception):
            pass

        async def claim(task: Task | None) -> Task | None:
            nonlocal refusal, reads, who, from_cache, lease, asked, holding, replaced
            replaced = None
            reads += 1
            raced = reads > 1  # a compare-and-swap lost: the rival may have finished or removed the task
            if raced:
                checks.append("compare-and-swap lost; re-reading")
            if task is None:
                refusal = refuse(f"no task {task_id!r} on the board", lost=raced, gone=True)
                raise _Refused
            now = self.clock()
            if task.status is TaskStatus.CLAIMED and task.claim_id == claim_id:
                return None  # ours already: the write whose answer was lost had landed
            if task.status is TaskStatus.CLAIMED:
                if not self._lapsed(task, now):
                    # another claimant holds it (for the owner's own swarm: another of its workers)
                    if task.owner == swarm_id:
                        refusal = refuse(f"already claimed by {swarm_id} itself", task, lost=True)
                    else:
                        left = (task.lease_until or now) - now
                        refusal = refuse(f"claimed by {task.owner} (lease {left:.1f} s left)", task,
                                         lost=True)
                    raise _Refused
                checks.append(f"lease of {task.owner} lapsed {now - (task.lease_until or now):.1f} s ago")
                if task.owner and task.claim_id:
                    replaced = (task.owner, task.claim_id)
            elif task.status is TaskStatus.BLOCKED:
                open_deps = [d for d, s in (await self._dependency_states(
                    task.dependencies, for_task=task.id)).items() if s is not TaskStatus.COMPLETED]
                if open_deps:
                    refusal = refuse("waiting on dependencies: " + ", ".join(open_deps), task)
                    raise _Refused
                checks.append("dependencies all completed (stored status was stale)")
            elif task.status is not TaskStatus.AVAILABLE:
                refusal = refuse(f"task is {task.status.value}", task, lost=raced)
                raise _Refused
            else:
                checks.append("task is available")
            cov = coverage(task.capabilities, who.capabilities)
            if cov < threshold and from_cache:  # the watcher's copy may predate a re-registration
                who, from_cache = await self.swarms.read(swarm_id) or who, False
                cov = coverage(task.capabilities, who.capabilities)
            checks.append(f"capability coverage {cov:.0%} (needs {threshold:.0%})")
            if cov < threshold:
                missing = sorted(set(task.capabilities) - set(who.capabilities))
                refusal = refuse(f"capability coverage {cov:.0%} below {threshold:.0%}; "
                                 f"missing {', '.join(missing)}", task)
                raise _Refused
            reason = await self.policy.admit(who, task)
            if reason:
                refusal = refuse(reason, task)
                raise _Refused
            checks.append(f"admitted by the {self.policy.name} policy")
            if dry_run:
                if needs_lease(task):
                    conflict = self.leases.conflict(task, await self.leases.held(self.live_board()))
                    if conflict is not None:
                        refusal = refuse(conflict.reason, task)
                        raise _Refused
                    checks.append("its paths are free")
                checks.append("would compare-and-swap on the task's revision")
                refusal = ClaimOutcome(True, task_id, swarm_id, "would claim", checks, task)
                raise _Refused
            if not asked:  # before the compare-and-swap, so the same budget cannot cover two claims
                asked = True
                ok, note = await self.policy.hold(who, task, claim_id)
                if not ok:
                    refusal = refuse(note, task)
                    raise _Refused
                if note:  # something held (an unmetered swarm holds nothing: no release to make)
                    holding = True
                    checks.append(note)
            if needs_lease(task):
                if lease is None:  # the path lease first: see infrafabric.coordinator.leases
                    try:
                        taken = await self.leases.take(task, swarm_id, claim_id)
                    except InvalidStateError as exc:  # the lease table is full
                        refusal = refuse(exc.message, task)
                        raise _Refused from exc
                    if isinstance(taken, Conflict):
                        refusal = refuse(taken.reason, task, lost=not taken.mine)
                        raise _Refused
                    lease = taken
                    now = self.clock()  # the claim (and its lease) starts once its paths are held
                    checks.append("path lease taken on " + ", ".join(
                        [*task.paths, *([f"branch {task.branch}"] if task.branch else [])]))
                elif task.claim_seq != lease.seq:
                    refusal = refuse("another claimant overlapping its paths voided this claim before it "
                                     "landed", task, lost=True)
                    raise _Refused
                seq = lease.seq
            else:
                seq = task.claim_seq
            # the claim id tags the transition: the task_claimed witness entry, written after the claim
            # is acknowledged, is recoverable from it (infrafabric.doctor.unwitnessed_claims)
            return self._transition(task, TaskStatus.CLAIMED, now, by=swarm_id, reason="claimed",
                                    op=claim_id, owner=swarm_id, claim_id=claim_id, lease_until=now + ttl,
                                    lease_ttl=ttl, claim_seq=seq + 1)

        before = len(checks)
        try:
            try:
                # no turn-taking with this process's other claimers: a loser must hear False at once
                written = await self.tasks.mutate(task_id, claim, first=first, take_turns=False)
            except _Refused:
                if watched is None or reads != 1 or lease is not None:
                    raise
                # refused on the watcher's copy alone: a refusal rests on the task as it is (the
                # copy may be behind a claim, and say "coverage" where the task says "claimed")
                del checks[before:]
                refusal, reads = None, 0
                written = await self.tasks.mutate(task_id, claim, take_turns=False)
        except _Refused:
            assert refusal is not None
            if lease is not None:
                await self.leases.drop(task_id, claim_id)  # holds nothing: its claim never landed
            if holding:
                await self.policy.release(swarm_id, claim_id, task_id)
            return refusal
        # (On any other error the claim may have landed: its entry stays, and holds if it did;
        # if it did not, the next overlapping claimant voids it.)
        assert written is not None
        claimed = written.value
        checks.append(f"compare-and-swap won (revision {written.revision}); lease {ttl:g} s")
        if replaced is not None:  # the lapsed claim ended here: what it held comes back
            await self.policy.release(replaced[0], replaced[1], task_id)
        return ClaimOutcome(True, task_id, swarm_id, "claimed", checks, claimed, claimed.claim_id)

    def _claimable_copy(self, task_id: str) -> Versioned[Task] | None:
        """The watcher's copy of ``task_id`` with its revision, if it shows the
        task available and needing no path lease: a claim may compare-and-swap
        on it without reading the task first. The copy may lag; then the swap
        loses and the claim reads the task and decides on what it finds, as
        after any lost race. (Anything else is read from the bus: a refusal
        must rest on the task as it is, and a path lease on its claim count: a claim
        the copy would refuse is decided again on the task as read.)"""
        if self._watcher is None:
            return None
        row = self._board.row(task_id)
        if row is None or not row.revision or row.status != TaskStatus.AVAILABLE.value or row.leased:
            return None
        task = self._board.get(task_id)
        return None if task is None else Versioned(self.tasks.key(task_id), task, row.revision)

    def live_board(self) -> BoardCopy | None:
        """The watcher's copy of the board (task id → task), if it runs; else
        None (read what is needed). A moment behind the bus: decide nothing
        that must be exact from it."""
        return self._board if self._watcher is not None else None

    async def _min_coverage(self) -> float:
        return await self.policy.min_coverage(self.min_coverage)

    def _lapsed(self, task: Task, now: float | None = None) -> bool:
        return task.lease_until is not None and (now or self.clock()) >= task.lease_until

    def _transition(self, task: Task, status: TaskStatus, now: float, *, by: str | None,
                    reason: str, op: str | None = None, **changes: Any) -> Task:
        try:
            step = Transition(at=now, to=status, by=by, reason=reason, op=op)
        except ValidationError as exc:  # a reason built from what a caller passed (an error text)
            raise ConfigurationError(f"task {task.id}: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])) from exc
        history = [*task.history, step][-HISTORY_LIMIT:]
        return task.model_copy(update={"status": status, "updated_at": now, "history": history, **changes})

    async def _owned(self, swarm_id: str, task_id: str, claim_id: str | None,
                     change: Callable[[Task, float], Task], op: str) -> tuple[Task, Task]:
        """A transition only the current claim holder may make."""
        def step(task: Task) -> Task:
            if task.status is not TaskStatus.CLAIMED or task.owner != swarm_id:
                holder = f"held by {task.owner}" if task.status is TaskStatus.CLAIMED else task.status.value
                raise NotOwnerError(f"{op} {task_id}: {swarm_id} does not hold the claim (task is {holder})")
            if claim_id is not None and task.claim_id != claim_id:
                raise NotOwnerError(f"{op} {task_id}: claim {claim_id} is stale (the task was re-claimed)")
            return change(task, self.clock())

        changed = await self._change(task_id, step, missing=lambda: _no_task(task_id))
        assert changed is not None
        return changed

    async def check_owned(self, swarm_id: str, task_id: str, claim_id: str | None = None) -> list[str]:
        """Why ``swarm_id`` could not act on ``task_id`` as its owner now
        (empty if it could). Writes nothing."""
        return _ownership_problems(await self.tasks.read(task_id), task_id, swarm_id, claim_id)

    # -- leases -------------------------------------------------------------------

    async def heartbeat(self, swarm_id: str, task_id: str, claim_id: str | None = None, *,
                        lease_ttl: float | None = None, note: str | None = None) -> float:
        """Renew the claim's lease for the lease it was claimed with (or
        ``lease_ttl`` seconds, which then becomes the claim's lease); returns
        the new expiry (epoch seconds). ``note`` records the holder's progress
        on the task (:attr:`Task.progress`: whoever takes the task over after
        a lapse reads it). Raises :class:`NotOwnerError` if the claim was
        lost, :class:`TaskNotFoundError` if the task is gone."""
        if lease_ttl is not None:
            _check_lease(lease_ttl, "lease_ttl")
        if note is not None:
            _check_note(note)

        def renew(t: Task, now: float) -> Task:
            if needs_lease(t) and self._lapsed(t, now):
                # its path lease lapsed with it and may be another claim's by now: renewing would
                # make two holders of the same paths
                ago = now - (t.lease_until or now)
                raise NotOwnerError(f"heartbeat {task_id}: the lease lapsed {ago:.1f} s ago, and with it the "
                                    "lease on the task's paths",
                                    hint=f"claim it again: ifctl task claim {task_id} --swarm {swarm_id}")
            ttl = lease_ttl or t.lease_ttl or self.lease_ttl
            update: dict[str, Any] = {"lease_until": now + ttl, "lease_ttl": ttl, "updated_at": now}
            if note is not None:
                update["progress"] = note
            return t.model_copy(update=update)

        _, task = await self._owned(swarm_id, task_id, claim_id, renew, "heartbeat")
        assert task.lease_until is not None
        if note is not None:  # a plain renewal is not worth an entry; what the holder says it did is
            await self._notify("task_progress", {"task_id": task_id, "swarm_id": swarm_id, "note": note})
        return task.lease_until

    @contextlib.asynccontextmanager
    async def holding(self, swarm_id: str, task_id: str, claim_id: str | None = None,
                      interval: float | None = None) -> AsyncIterator[LostClaim]:
        """Renew the lease every ``interval`` (default a third of the claim's
        lease) while the body runs. Yields a :class:`LostClaim` event, set
        (with its reason) as soon as the claim is found lost: taken by another
        swarm after a lapse, the task deleted or finished, or its lease run out
        while the bus could not be reached (another swarm may hold the task
        then; stop working on it). Bus trouble is retried until then; a
        refusal stops renewing at once."""
        lost = LostClaim()
        task = await self.tasks.read(task_id)
        problems = _ownership_problems(task, task_id, swarm_id, claim_id)
        if problems:
            lost.lose("; ".join(problems))
        period = interval or ((task.lease_ttl if task and task.lease_ttl else self.lease_ttl) / 3)

        until = task.lease_until if task is not None and task.lease_until is not None else self.clock()

        async def renew() -> None:
            nonlocal until
            while not lost.is_set():
                await asyncio.sleep(period)
                try:
                    until = await self.heartbeat(swarm_id, task_id, claim_id)
                except InfraFabricError as exc:
                    if not is_transient(exc):
                        lost.lose(exc.message, exc)
                        return
                    # the bus is unreachable or slow: the next beat may get through, unless the
                    # lease has run out meanwhile (another swarm may hold the task by now)
                    if self.clock() >= until:
                        lost.lose(f"the lease on {task_id} lapsed while heartbeats failed: {exc.message}",
                                  exc)
                        return

        beat = asyncio.create_task(renew(), name=f"if-holding-{task_id}")
        try:
            yield lost
        finally:
            await _stop(beat)

    async def release_task(self, swarm_id: str, task_id: str, claim_id: str | None = None,
                           reason: str = "released") -> Task:
        """Give a claimed task back; it becomes available and is pushed again."""
        before, task = await self._owned(
            swarm_id, task_id, claim_id,
            lambda t, now: self._transition(t, TaskStatus.AVAILABLE, now, by=swarm_id, reason=reason,
                                            owner=None, claim_id=None, lease_until=None, lease_ttl=None),
            "release")
        await self._settle(before, task, "task_released", _fencing({"task_id": task_id, "swarm_id": swarm_id},
                                                                   claim_id))
        return task

    async def record_workspace(self, swarm_id: str, task_id: str, claim_id: str | None, *,
                               worktree: str, host: str, head: str | None = None) -> Task:
        """Record where the holder works on the task (its worktree on ``host``),
        so that completion can record the branch's head commit and whoever
        takes the task over knows where the work was."""
        def change(t: Task, now: float) -> Task:
            record = WorkspaceRecord(branch=t.work_branch, worktree=worktree, host=host, head=head)
            return t.model_copy(update={"workspace": record, "updated_at": now})

        _, task = await self._owned(swarm_id, task_id, claim_id, change, "record the workspace of")
        return task

    async def complete_task(self, swarm_id: str, task_id: str, result: JsonValue = None,
                            claim_id: str | None = None, *, head: str | None = None) -> Task:
        """Complete a task the caller holds; its dependents whose dependencies
        are now all completed become available and are pushed. ``head``: the
        commit its work branch ended at, recorded in :attr:`Task.workspace`
        and in the result (added to a result that is absent or an object)."""
        def change(t: Task, now: float) -> Task:
            kept: JsonValue = result
            update: dict[str, Any] = {}
            if head is not None or t.workspace is not None:
                record = (t.workspace or WorkspaceRecord(branch=t.work_branch)).model_copy(
                    update={"head": head} if head is not None else {})
                update["workspace"] = WorkspaceRecord.model_validate(record.model_dump())
                where: dict[str, JsonValue] = {"branch": record.branch, "head": record.head}
                if kept is None:
                    kept = where
                elif isinstance(kept, dict):
                    kept = {**where, **kept}
            return self._transition(t, TaskStatus.COMPLETED, now, by=swarm_id, reason="completed",
                                    result=kept, lease_until=None, **update)

        before, task = await self._owned(swarm_id, task_id, claim_id, change, "complete")
        params = _fencing({"task_id": task_id, "swarm_id": swarm_id}, claim_id)
        if task.workspace is not None:
            params.update(branch=task.workspace.branch, head=task.workspace.head)
        await self._settle(before, task, "task_completed", params)
        return task

    async def fail_task(self, swarm_id: str, task_id: str, error: str = "",
                        claim_id: str | None = None) -> Task:
        """Report a failed attempt: the task is retried (available again) until
        it has been attempted ``max_attempts`` times, then it is failed."""

        def change(t: Task, now: float) -> Task:
            attempts = t.attempts + 1
            status = TaskStatus.FAILED if attempts >= t.max_attempts else TaskStatus.AVAILABLE
            return self._transition(t, status, now, by=swarm_id, reason=f"attempt {attempts} failed: {error}",
                                    owner=None, claim_id=None, lease_until=None, lease_ttl=None,
                                    attempts=attempts, error=error)

        before, task = await self._owned(swarm_id, task_id, claim_id, change, "fail")
        await self._settle(before, task, "task_failed", _fencing({"task_id": task_id, "swarm_id": swarm_id,
                                                                  "attempts": task.attempts,
                                                                  "final": task.status.value}, claim_id))
        return task

    async def reopen_task(self, task_id: str, *, by: str, reason: str = "") -> Task:
        """Give a failed task (every attempt used) a fresh set of attempts: it
        becomes available again, or blocked while a dependency is open, and is
        pushed through the policy. Only a failed task can be reopened
        (:class:`InvalidStateError` otherwise); the caller is recorded."""
        if not by:
            raise ConfigurationError("reopen_task needs who reopens it (by=...)")

        async def change(task: Task) -> Task:
            if task.status is not TaskStatus.FAILED:
                raise InvalidStateError(f"task {task_id} is {task.status.value}, not failed: only a failed "
                                        "task can be reopened")
            states = await self._dependency_states(task.dependencies, for_task=task.id)
            ready = all(s is TaskStatus.COMPLETED for s in states.values())
            why = f"reopened by {by}" + (f": {reason}" if reason else "")
            return self._transition(task, TaskStatus.AVAILABLE if ready else TaskStatus.BLOCKED, self.clock(),
                                    by=by, reason=why, attempts=0, error=None, owner=None, claim_id=None,
                                    lease_until=None, lease_ttl=None)

        changed = await self._change(task_id, change, missing=lambda: _no_task(task_id))
        assert changed is not None
        before, task = changed
        await self._settle(before, task, "task_reopened", {"task_id": task_id, "by": by, "reason": reason,
                                                           "status": task.status.value})
        return task

    # -- work recorded from elsewhere (a replayed STATUS file) -------------------------

    async def record_completed(self, task_id: str, *, by: str, note: str = "") -> Task | None:
        """Record work finished outside the board (the seeds' STATUS files,
        ``ifctl board import-status``): an open task (blocked or available, or
        claimed with a lapsed lease) becomes completed, ``by`` its owner in the
        task's history, ``note`` the reason; its dependents are unblocked and
        pushed as after any completion. Returns the task, or None when it was
        completed already (nothing is changed: a replay is idempotent). A task
        claimed now, failed or cancelled is refused (:class:`InvalidStateError`)."""
        if not by:
            raise ConfigurationError("record_completed needs who did the work (by=...)")
        reason = note or f"completed by {by} (recorded)"

        def change(task: Task) -> Task | None:
            now = self.clock()
            if task.status is TaskStatus.COMPLETED:
                return None
            if task.status is TaskStatus.CLAIMED and not self._lapsed(task, now):
                raise InvalidStateError(f"task {task_id} is claimed by {task.owner}: its holder completes it")
            if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                raise InvalidStateError(f"task {task_id} is {task.status.value}: reopen it first")
            extra: dict[str, Any] = {}
            if task.status is TaskStatus.CLAIMED:  # a lapsed claim ends here: its path lease is dead by seq
                extra = {"claim_seq": task.claim_seq + 1}
            return self._transition(task, TaskStatus.COMPLETED, now, by=by, reason=reason, owner=by,
                                    claim_id=None, lease_until=None, lease_ttl=None, **extra)

        changed = await self._change(task_id, change, missing=lambda: _no_task(task_id))
        if changed is None:
            return None
        before, task = changed
        await self._settle(before, task, "task_completed_elsewhere", {"task_id": task_id, "completed_by": by,
                                                                      "reason": reason})
        return task

    async def record_progress(self, task_id: str, note: str, *, by: str) -> Task | None:
        """Keep a progress note on a task that is not claimed by someone else
        (:attr:`Task.progress`: shown by ``task show``, handed to whoever
        claims it next), e.g. a replayed STATUS file's milestone. Status and
        history are unchanged. Returns the task, or None when it already holds
        that note (or is completed)."""
        _check_note(note)

        def change(task: Task) -> Task | None:
            if task.progress == note or task.status is TaskStatus.COMPLETED:
                return None
            if task.status is TaskStatus.CLAIMED and task.owner != by and not self._lapsed(task):
                raise InvalidStateError(f"task {task_id} is claimed by {task.owner}: only its holder's notes "
                                        "are kept")
            return task.model_copy(update={"progress": note, "updated_at": self.clock()})

        changed = await self._change(task_id, change, missing=lambda: _no_task(task_id))
        if changed is None:
            return None
        await self._notify("task_progress", {"task_id": task_id, "swarm_id": by, "note": note})
        return changed[1]

    async def expire_lease(self, task_id: str) -> Task | None:
        """If the task's lease has lapsed, make it available again (counting an
        attempt) and push it. Returns the task if this call did it."""
        def change(task: Task) -> Task | None:
            now = self.clock()
            if task.status is not TaskStatus.CLAIMED or not self._lapsed(task, now):
                return None
            attempts = task.attempts + 1
            status = TaskStatus.FAILED if attempts >= task.max_attempts else TaskStatus.AVAILABLE
            # claim_seq moves on: a path lease of the ended claim is seen to be dead by its seq too
            return self._transition(task, status, now, by=None, reason=f"lease of {task.owner} lapsed",
                                    owner=None, claim_id=None, lease_until=None, lease_ttl=None,
                                    attempts=attempts, claim_seq=task.claim_seq + 1)

        changed = await self._change(task_id, change)
        if changed is None:
            return None
        before, task = changed
        # the actor is whoever noticed (this process), not the swarm whose lease lapsed
        await self._settle(before, task, "lease_expired", {"task_id": task_id, "owner": before.owner,
                                                           "attempts": task.attempts,
                                                           "final": task.status.value})
        return task

    async def _announce_freed(self, ended: Task) -> None:
        """Push again the available tasks that ``ended``'s claim kept from being
        taken (their paths overlapped its): a waiting agent skipped them."""
        board = self._board.leased_available() if self._watcher is not None else await self.list_tasks()
        for task in board:
            if task.status is TaskStatus.AVAILABLE and task.id != ended.id and needs_lease(task) \
                    and self.leases.tasks_clash(task, ended):
                await self._announce(task)

    async def _unblock_dependents(self, completed: Task) -> list[Task]:
        """Make available the dependents of ``completed`` whose dependencies
        are all completed now: those its record names (linked before each was
        created), so no board is read. (No read-back here: making one
        available is itself a compare-and-swap that checks.)"""
        made = await self._bounded(self._make_available(d) for d in completed.dependents)
        return [t for t in made if t is not None]

    async def _make_available(self, task_id: str) -> Task | None:
        async def change(task: Task) -> Task | None:
            if task.status is not TaskStatus.BLOCKED:
                return None
            states = await self._dependency_states(task.dependencies, for_task=task.id)
            if any(s is not TaskStatus.COMPLETED for s in states.values()):
                return None
            return self._transition(task, TaskStatus.AVAILABLE, self.clock(), by=None,
                                    reason="dependencies completed")

        changed = await self._change(task_id, change)
        if changed is None:
            return None
        before, task = changed
        await self._settle(before, task, None, {})
        return task

    # -- hand-out -----------------------------------------------------------------

    async def next_task(self, swarm_id: str, wait: float | None = 0, *,
                        lease_ttl: float | None = None) -> ClaimOutcome | None:
        """Claim the best task this swarm can take: critical path before filler,
        then priority. With ``wait`` > 0, block on pushes (never polling) up to
        that many seconds (``None``: forever) for one to become available.

        None means nothing could be claimed in time (:meth:`explain_empty`
        says why). A swarm the policy has stopped (breaker open, budget spent)
        gets :class:`~infrafabric.errors.SwarmStoppedError` at once instead:
        waiting could not help, and an agent's loop must stop, not spin."""
        cached = self._swarms.get(swarm_id) if self._swarms is not None else None
        with one_look():  # each governor record, the swarm's and the lane directory read once, at once
            swarm, stopped, threshold, _, _ = await asyncio.gather(
                _given(cached) if cached is not None else self.get_swarm(swarm_id),
                self.policy.stopped(swarm_id), self._min_coverage(), self.ready.directory.read(),
                self.policy.prepare(swarm_id))
            if swarm is None:
                raise TaskNotFoundError(f"swarm {swarm_id!r} is not registered on this board",
                                        hint=f"ifctl swarm register {swarm_id} --cap DOMAIN:SKILL "
                                             "(on the same bus: `ifctl coordinator status` names it)")
            if stopped is not None:
                raise stopped
            outcome = await self._hand_out(swarm, threshold, lease_ttl)
        if outcome is not None or (wait is not None and wait <= 0):
            return outcome
        # Listen, say it waits (a task that becomes available is pushed to waiting agents), then
        # look once more: one made available between the first look and the mark is not missed.
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        async with self._listening(swarm_id, deadline) as pushes:
            if pushes is None:  # the wait ran out while the feed would not open: one last look
                with one_look():
                    return await self._hand_out(swarm, threshold, lease_ttl, fresh=True)
            async with self._marked(self.waiting, swarm_id, via="next_task", ttl=PRESENCE_TTL,
                                    capabilities=swarm.capabilities):
                with one_look():
                    outcome = await self._hand_out(swarm, threshold, lease_ttl, fresh=True)
                return outcome if outcome is not None else await self._wait_for_push(
                    swarm, threshold, pushes, None if deadline is None else deadline - loop.time(),
                    lease_ttl)

    @contextlib.asynccontextmanager
    async def _listening(self, swarm_id: str, deadline: float | None) -> AsyncIterator[Feed[Task] | None]:
        """The swarm's push feed, established. A transient failure to open it
        (an etcd watch that timed out among a thousand others opening) is
        tried again, backing off, until the wait's ``deadline`` (loop time):
        waiting is what the agent asked for, and nothing was claimed yet.
        None if the wait ran out meanwhile (the caller looks once more: what
        became available meanwhile is in the index, pushed or not)."""
        loop = asyncio.get_running_loop()
        for delay in _backoff(0.05):
            feed = self.pushed_tasks(swarm_id, waiting=False)
            try:
                await feed.__aenter__()
                break
            except InfraFabricError as exc:
                if not is_transient(exc):
                    raise
                log.info("could not listen for pushes to %s (%s); trying again", swarm_id, exc.message)
                if deadline is not None and loop.time() + delay >= deadline:
                    yield None
                    return
            await asyncio.sleep(delay)
        try:
            yield feed
        finally:
            await feed.__aexit__(None, None, None)

    async def _wait_for_push(self, swarm: SwarmRecord, threshold: float, pushes: Feed[Task],
                             wait: float | None, lease_ttl: float | None) -> ClaimOutcome | None:
        """Wait up to ``wait`` seconds (None: for ever) for a pushed task and
        claim it; one a rival took first sends this agent back to the ready
        index (a push means work was there a moment ago)."""
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return None
            try:
                pushed = await pushes.get(left)
            except (TimeoutError, StopAsyncIteration):
                return None
            # The deadline bounds the wait for a push, never a claim in flight: a claim cut
            # off after its compare-and-swap landed would be held by nobody until it lapsed.
            with one_look():
                won = None if pushed.id in self._trying else await self._claim_here(
                    swarm.id, pushed.id, lease_ttl)  # (one a neighbour tries now: look in the index)
                if won is not None and won.won:
                    return won
                again = await self._hand_out(swarm, threshold, lease_ttl)
            if again is not None:
                return again

    async def _hand_out(self, swarm: SwarmRecord, threshold: float, lease_ttl: float | None, *,
                        fresh: bool = False) -> ClaimOutcome | None:
        """Claim the best task the ready index offers ``swarm`` now, or None.
        Reads the index's lanes and windows (never the board); each slot tried
        is judged by what its claim attempt saw (see coordinator.ready): one
        that moved on is marked dead, one whose offer never caught up for
        :data:`~infrafabric.coordinator.ready.GRACE` seconds is voided, and
        one still available but not for this swarm (coverage, policy, paths
        held by another claim) is skipped for the rest of this call.

        ``fresh``: read the lanes from the bus even where a watch keeps them
        (the look before an agent waits for pushes must not miss an offer made
        a moment ago).

        The first try is at the head of the best band, in hand-out order;
        once a rival took a task from under it, this swarm starts further
        into the window (by its id), so many agents at once spread out
        instead of all racing for the next task."""
        with self.ready.holding():  # its claim's compare-and-swap is not queued behind tidying
            return await self._hand_out_held(swarm, threshold, lease_ttl, fresh=fresh)

    async def _hand_out_held(self, swarm: SwarmRecord, threshold: float, lease_ttl: float | None, *,
                             fresh: bool) -> ClaimOutcome | None:
        tried: set[tuple[str, str, int]] = set()
        #: slots another hand-out of this process is trying now: looked at again once it is done
        busy: dict[tuple[str, str, int], asyncio.Future[None]] = {}
        held: list[Any] | None = None  # the path leases held now, read once if a task needs them
        spread = ""
        while True:
            offers = await self.ready.candidates(swarm.capabilities, threshold, spread=spread,
                                                 skip=tried | busy.keys(), fresh=fresh)
            if not offers:
                if busy:  # all this swarm may take is being tried here: see how those attempts end
                    await asyncio.wait(set(busy.values()))
                    busy.clear()
                    continue
                if await self.watched():
                    return None
                return await self._hand_out_by_reading(swarm, threshold, lease_ttl)
            for offer in offers:
                where = (offer.lane, offer.band, offer.position)
                if offer.task_id in self._trying:
                    busy[where] = self._trying[offer.task_id]
                    continue
                tried.add(where)
                seen = self._board.get(offer.task_id) if self._watcher is not None else None
                if seen is not None and needs_lease(seen):
                    held = await self.leases.held(self.live_board()) if held is None else held
                    if self.leases.conflict(seen, held) is not None:
                        continue  # its paths are another claim's: skip it, don't race for it
                outcome = await self._claim_here(swarm.id, offer.task_id, lease_ttl)
                if outcome.won:
                    self.ready.bury_later(offer)  # claimed from it: rivals need not try it
                    return outcome
                if outcome.lost:
                    spread = f"{swarm.id}/{len(tried)}"
                await self._judge(offer, None if outcome.gone else outcome.task, known=outcome.gone
                                  or outcome.task is not None)

    async def _hand_out_by_reading(self, swarm: SwarmRecord, threshold: float, lease_ttl: float | None
                                   ) -> ClaimOutcome | None:
        """With no watcher anywhere to hand lapsed claims back (and settle what
        a crashed process left), the index cannot know of a claim that lapsed
        or a blocked task whose dependencies completed meanwhile: read the
        board for them. Only when the index had nothing for this swarm."""
        now = self.clock()
        for task in await self.list_tasks():
            stale = task.status is TaskStatus.AVAILABLE or task.status is TaskStatus.BLOCKED or (
                task.status is TaskStatus.CLAIMED and self._lapsed(task, now))
            if stale and coverage(task.capabilities, swarm.capabilities) >= threshold:
                outcome = await self._claim_whole(swarm.id, task.id, lease_ttl)
                if outcome.won:
                    return outcome
        return None

    async def reindex(self, board: Iterable[Task] | None = None) -> list[str]:
        """Offer again each available task the ready index has no live slot
        for (one made before the index existed, or after a repair), with the
        same protocol as any transition: the slot first, then the task's
        ``ready_seq`` with a compare-and-swap that requires it still available.
        Returns the ids offered. A watcher does this when it starts."""
        async def offer(task_id: str) -> bool:
            async def step(current: Task | None) -> Task | None:
                if current is None or current.status is not TaskStatus.AVAILABLE:
                    return None
                new = current.model_copy(update={"ready_seq": current.ready_seq + 1})
                await self.ready.offer([new])
                return new

            got = await self.tasks.mutate(task_id, step)
            return got is not None and got.value.status is TaskStatus.AVAILABLE

        tasks = list(board) if board is not None else await self.list_tasks()
        missing = [t.id for t in await self.ready.unindexed(tasks)]
        done = await self._bounded(offer(t) for t in missing)
        if missing:
            log.info("re-indexed %d available task(s) the ready index did not name", sum(done))
        return [t for t, yes in zip(missing, done, strict=True) if yes]

    async def _reindex_once(self, board: Iterable[Task]) -> None:
        """:meth:`reindex` unless one has already found the index whole (its
        ``ready/whole`` record): reading every slot of a 100,000-task board
        each time a server starts would cost that server's first hand-outs."""
        if await self.ready.whole.read() is not None:
            return
        await self.reindex(board)
        await self.ready.whole.put("", Whole(at=self.clock()))

    async def _judge(self, offer: Offer, task: Task | None, *, known: bool) -> None:
        """Mark ``offer``'s slot dead if ``task`` (as a claim attempt saw it;
        ``known`` False if it saw nothing) has moved on from it; void it first
        if its offer has been in flight for longer than the grace period."""
        if not known:
            return
        live = is_live(offer.slot, task, self._lapsed)
        if live is None and self.clock() - offer.slot.at > GRACE:
            def void(current: Task | None) -> Task | None:
                if current is None or current.ready_seq >= offer.slot.seq:
                    return None
                return current.model_copy(update={"ready_seq": offer.slot.seq})

            await self.tasks.mutate(offer.task_id, void)  # its transition can no longer land
            live = False
        if live is not False:
            return
        if task is not None and task.status is TaskStatus.CLAIMED and task.ready_seq == offer.slot.seq:
            # claimed from this slot: live again only if that claim lapses (its lease says when)
            self.ready.not_live(offer, task.lease_until if task.lease_until is not None else math.inf)
            if self.clock() - task.updated_at < BURY_AFTER:
                return  # (a fresh claim's winner marks it itself)
        await self.ready.bury(offer)

    async def _claim_here(self, swarm_id: str, task_id: str, lease_ttl: float | None) -> ClaimOutcome:
        """:meth:`_claim_whole`, known to this process's other hand-outs while
        it is tried (they pass over the task meanwhile)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._trying[task_id] = done
        try:
            return await self._claim_whole(swarm_id, task_id, lease_ttl)
        finally:
            if self._trying.get(task_id) is done:
                del self._trying[task_id]
            done.set_result(None)

    async def _claim_whole(self, swarm_id: str, task_id: str, lease_ttl: float | None) -> ClaimOutcome:
        """:meth:`try_claim`, finished even if the caller is cancelled meanwhile;
        a claim that landed anyway is then given back (released and pushed
        again), not left held by nobody until its lease lapses."""
        attempt = asyncio.ensure_future(self.try_claim(swarm_id, task_id, lease_ttl=lease_ttl))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            await _finish(attempt)  # however often the caller is cancelled meanwhile
            if not attempt.cancelled() and attempt.exception() is None and attempt.result().won:
                won = attempt.result()
                await _finish(asyncio.ensure_future(self.release_task(
                    swarm_id, task_id, won.claim_id,
                    reason="the claimant was cancelled before it took the claim")))
            raise

    async def explain_empty(self, swarm_id: str) -> EmptyHand:
        """Why :meth:`next_task` has nothing for ``swarm_id`` now: stopped by
        the policy, nothing it covers, everything it covers done, or what it
        covers is claimed (by whom), blocked (by what), failed or refused
        (why). Reads the board; writes nothing."""
        swarm = await self.get_swarm(swarm_id)
        if swarm is None:
            raise TaskNotFoundError(f"swarm {swarm_id!r} is not registered on this board")
        stopped = await self.policy.stopped(swarm_id)
        if stopped is not None:
            reason = "breaker_open" if isinstance(stopped, BreakerOpenError) else "budget_exhausted"
            return EmptyHand(swarm_id, reason, stopped.message, [], stopped)
        threshold = await self._min_coverage()
        tasks = await self.list_tasks()
        covered = [t for t in tasks if coverage(t.capabilities, swarm.capabilities) >= threshold
                   and t.status is not TaskStatus.CANCELLED]
        offered = ", ".join(swarm.capabilities) or "no capabilities"
        if not covered:
            return EmptyHand(swarm_id, "no_covered_task",
                             f"no task on the board needs what {swarm_id} offers ({offered}; "
                             f"coverage {threshold:.0%} needed)",
                             [f"{len(tasks)} tasks on the board"])
        unfinished = [t for t in covered if t.status is not TaskStatus.COMPLETED]
        if not unfinished:
            return EmptyHand(swarm_id, "all_done", f"every task {swarm_id} covers is completed "
                                                   f"({len(covered)})")
        now = self.clock()
        details = []
        for t in unfinished:
            if t.status is TaskStatus.CLAIMED and not self._lapsed(t, now):
                left = (t.lease_until or now) - now
                details.append(f"{t.id}: claimed by {t.owner} (lease {left:.1f} s left)")
            elif t.status is TaskStatus.BLOCKED:
                states = await self._dependency_states(t.dependencies, for_task=t.id)
                waiting = [d for d, s in states.items() if s is not TaskStatus.COMPLETED]
                details.append(f"{t.id}: blocked by {', '.join(waiting) or 'nothing (stale; claimable)'}")
            elif t.status is TaskStatus.FAILED:
                details.append(f"{t.id}: failed after {t.attempts} attempts (ifctl task reopen {t.id})")
            else:
                trial = await self.try_claim(swarm_id, t.id, dry_run=True)
                details.append(f"{t.id}: {'claimable now' if trial.won else 'refused: ' + trial.reason}")
        return EmptyHand(swarm_id, "waiting",
                         f"every task {swarm_id} covers is claimed, blocked, failed or refused "
                         f"({len(unfinished)} open of {len(covered)})", details)

    # -- presence ------------------------------------------------------------------

    def present(self, swarm_id: str, *, via: str, ttl: float = PRESENCE_TTL
                ) -> contextlib.AbstractAsyncContextManager[Presence]:
        """Mark ``swarm_id`` present (an agent connected now, through ``via``)
        while the block runs: the record is refreshed every ``ttl / 3``
        seconds and removed on exit; a process that dies leaves it stale
        after ``ttl``. Presence says who is listening; it renews no claim."""
        return self._marked(self.presence, swarm_id, via=via, ttl=ttl)

    async def touch(self, swarm_id: str, *, via: str, ttl: float = PRESENCE_TTL) -> None:
        """Mark ``swarm_id`` present once, for ``ttl`` seconds: for a front end
        whose agents come and go by request (MCP over HTTP), which touches the
        mark as their requests arrive instead of holding it open."""
        now = self.clock()
        current = await self.presence.get(swarm_id)
        since = (current.value.since if current is not None and current.value.via == via
                 and current.value.seen_at + current.value.ttl >= now else now)
        await self.presence.put(swarm_id, Presence(
            swarm_id=swarm_id, via=via, host=socket.gethostname()[:200] or "-", pid=os.getpid(),
            since=since, seen_at=now, ttl=ttl))

    @contextlib.asynccontextmanager
    async def _marked(self, store: Records[Presence], swarm_id: str, *, via: str, ttl: float,
                      capabilities: list[str] | None = None) -> AsyncIterator[Presence]:
        now = self.clock()
        mark = Presence(swarm_id=swarm_id, via=via, host=socket.gethostname()[:200] or "-", pid=os.getpid(),
                        since=now, seen_at=now, ttl=ttl, capabilities=capabilities)
        await store.put(swarm_id, mark)

        async def refresh() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                with contextlib.suppress(InfraFabricError):  # the bus is away: the next refresh may land
                    await store.put(swarm_id, mark.model_copy(update={"seen_at": self.clock()}))

        beat = asyncio.create_task(refresh(), name=f"if-present-{swarm_id}")
        try:
            yield mark
        finally:
            await _stop(beat)
            with contextlib.suppress(InfraFabricError):
                current = await store.get(swarm_id)
                if current is not None and (current.value.pid, current.value.since) == (mark.pid, mark.since):
                    await store.delete(swarm_id, current.revision)  # not a newer session's mark

    async def present_swarms(self) -> dict[str, Presence]:
        """The swarms with an agent connected now (fresh presence records), by id."""
        now = self.clock()
        return {v.value.swarm_id: v.value for v in await self.presence.list()
                if v.value.seen_at + v.value.ttl >= now}

    async def liveness(self, tasks: list[Task] | None = None) -> dict[str, Liveness]:
        """Every registered swarm's liveness now (see
        :mod:`infrafabric.coordinator.presence`): connected, waiting for work,
        or holding a live claim. ``tasks`` is the board if the caller has
        read it already."""
        swarms, presence, waiting, board = await asyncio.gather(
            self.list_swarms(), self.presence.list(), self.waiting.list(),
            self.list_tasks() if tasks is None else _given(tasks))
        return judge_liveness((s.id for s in swarms), presence=[v.value for v in presence],
                        waiting=[v.value for v in waiting], tasks=board, now=self.clock())

    async def unattended(self, tasks: list[Task] | None = None,
                         live: Mapping[str, Liveness] | None = None) -> list[Task]:
        """The available tasks no live swarm could take now: none that is live,
        not stopped by the policy (breaker, budget) and covering the task by
        the policy's threshold. Work waits there until an agent joins."""
        board = await self.list_tasks() if tasks is None else tasks
        if not any(t.status is TaskStatus.AVAILABLE for t in board):
            return []
        states = await self.liveness(board) if live is None else live
        swarms = {s.id: s.capabilities for s in await self.list_swarms()}
        up = [sid for sid, state in states.items() if state.live and sid in swarms]
        stops = await asyncio.gather(*(self.policy.stopped(sid) for sid in up))
        threshold = await self.policy.min_coverage(self.min_coverage)
        return find_unattended(board, swarms, up, threshold=threshold,
                          refused={sid for sid, stop in zip(up, stops, strict=True) if stop is not None})

    async def watched(self) -> bool:
        """Whether some coordinator runs a board watcher now (this one, or a
        fresh record of another on the bus): its timers hand lapsed claims back."""
        if self._watcher is not None:
            return True
        now = self.clock()
        return any(v.value.seen_at + v.value.ttl >= now for v in await self.watchers.list())

    # -- blockers and events -----------------------------------------------------

    async def detect_blocker(self, swarm_id: str, info: Mapping[str, Any]) -> dict[str, Any]:
        """Report a blocker to the orchestrator subject; the policy may answer
        with help (the governor finds helpers). Returns the report."""
        report = {"type": "blocker_detected", "swarm_id": swarm_id, "blocker_info": dict(info),
                  "timestamp": self.clock()}
        await self.bus.publish(BLOCKERS, json.dumps(report, default=str))
        await self._notify("blocker_detected", {"swarm_id": swarm_id, "info": dict(info)})
        named = info.get("task") or info.get("task_id")
        task = await self.tasks.read(str(named)) if isinstance(named, str) and named else None
        help_ = await self.policy.on_blocker(swarm_id, report, task)
        if help_ is not None:
            report["help"] = help_
        return report

    def blockers(self) -> Feed[dict[str, Any]]:
        """A :class:`Feed` of blocker reports (what the orchestrator listens to)."""
        return Feed(self.bus.subscribe(BLOCKERS), _decode_blocker)

    def events(self, start_revision: int | None = None) -> Feed[TaskEvent]:
        """A :class:`Feed` of every status transition on the board, in order
        (heartbeats, which change no status, are not transitions)."""
        seen: dict[str, tuple[TaskStatus, int]] = {}

        def decode(ev: WatchEvent) -> TaskEvent | None:
            if ev.kind is EventKind.DELETE or ev.value is None:
                return None
            try:
                task = Task.model_validate_json(ev.value)
            except ValidationError:
                return None
            marker = (task.status, len(task.history))
            if seen.get(task.id) == marker:
                return None
            seen[task.id] = marker
            last = task.history[-1] if task.history else None
            return TaskEvent(task_id=task.id, status=task.status,
                             previous=task.history[-2].to if len(task.history) > 1 else None,
                             owner=task.owner, by=last.by if last else None,
                             reason=last.reason if last else "",
                             at=last.at if last else task.updated_at, revision=ev.revision)

        return Feed(self.bus.watch(TASKS, start_revision=start_revision), decode)

    # -- the watcher ----------------------------------------------------------------

    async def _watch_board(self, ready: asyncio.Future[None]) -> None:
        try:
            start = await self.bus.revision() + 1
            board = BoardCopy()
            snapshot = []
            async for entry in self.bus.scan(TASKS):
                try:
                    task = decode(Task, entry)
                except CorruptRecordError as exc:
                    log.warning("skipped %s (`ifctl doctor` repairs it)", exc.message)
                    continue
                board.put(task, entry.value, entry.revision)
                snapshot.append(task)
            snapshot.sort(key=sort_key)
            watch = self.bus.watch(TASKS, start_revision=start)
            await watch.start()
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        self._board = board
        for task in snapshot:
            self._track(task)
        for task in snapshot:  # finish what a crashed completer left undone (or one before dependents)
            self._unblock_if_ready(task.id)
        available = [t for t in snapshot if t.status is TaskStatus.AVAILABLE]

        def reindex(_: str, tasks: list[Task] = available) -> Awaitable[None]:
            return self._reindex_once(tasks)

        self._spawn(reindex, "")  # the tasks made available before the index existed
        # this frame lives as long as the watch: the decoded tasks must not (see coordinator.copy)
        del snapshot, available, reindex
        ready.set_result(None)
        async with watch:
            async for ev in watch:
                task_id = ev.key.removeprefix(TASKS)
                if ev.kind is EventKind.DELETE or ev.value is None:
                    self._board.remove(task_id)
                    self._cancel_timer(task_id)
                    continue
                try:
                    task = Task.model_validate_json(ev.value)
                except ValidationError:
                    self._board.unsure(task_id)  # (a stale copy must not be swapped on)
                    continue
                before = self._board.put(task, ev.value, ev.revision)
                self._track(task)
                offered = before is None or before.ready_seq != task.ready_seq
                if task.status is TaskStatus.AVAILABLE and offered and self._waiting \
                        and self._leads_follow_ups():
                    self._later_follow_up(task, 1)  # whoever made it available pushed the first group
                if task.status is TaskStatus.COMPLETED and (
                        before is None or before.status != TaskStatus.COMPLETED.value):
                    self._after_completion(task)

    async def _watch_swarms(self, ready: asyncio.Future[None]) -> None:
        await self._mirror(self.swarms, ready, self._keep_swarms)

    def _keep_swarms(self, view: dict[str, SwarmRecord]) -> None:
        self._swarms = view

    async def _watch_waiting(self, ready: asyncio.Future[None]) -> None:
        await self._mirror(self.waiting, ready, self._keep_waiting, self._saw_waiting)

    def _keep_waiting(self, view: dict[str, Presence]) -> None:
        self._waiting = view

    def _keep_watchers(self, view: dict[str, Presence]) -> None:
        self._watchers_view = view

    def _saw_waiting(self, revision: int) -> None:
        """The waiting view has every write up to ``revision``: release the barriers it passed."""
        self._waiting_seen = max(self._waiting_seen, revision)
        kept = []
        for rev, seen in self._waiting_sync:
            if rev <= revision:
                if not seen.done():
                    seen.set_result(None)
            else:
                kept.append((rev, seen))
        self._waiting_sync = kept

    async def _mirror(self, store: Records[M], ready: asyncio.Future[None],
                      keep: Callable[[dict[str, M]], None],
                      saw: Callable[[int], None] | None = None) -> None:
        """Keep a live copy of the records under ``store``'s prefix (id ->
        record), handed to ``keep`` once read, and updated from a watch;
        ``saw`` is told the revision of each event once it is applied."""
        try:
            start = await self.bus.revision() + 1
            view = {store.id_of(v.key): v.value for v in await store.list()}
            watch = self.bus.watch(store.prefix, start_revision=start)
            await watch.start()
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        keep(view)
        ready.set_result(None)
        if saw is not None:
            saw(start - 1)
        async with watch:
            async for ev in watch:
                record_id = store.id_of(ev.key)
                if ev.kind is EventKind.DELETE or ev.value is None:
                    view.pop(record_id, None)
                elif ev.key != SYNC_KEY:
                    with contextlib.suppress(ValidationError):
                        view[record_id] = store.model.model_validate_json(ev.value)
                if saw is not None:
                    saw(ev.revision)

    def _track(self, task: Task) -> None:
        """Arm a timer for the task's lease, if it has one."""
        self._cancel_timer(task.id)
        if task.status is TaskStatus.CLAIMED and task.lease_until is not None:
            delay = max(0.0, task.lease_until - self.clock()) + 0.05
            self._timers[task.id] = asyncio.get_running_loop().call_later(
                delay, self._spawn, self.expire_lease, task.id)

    def _after_completion(self, task: Task) -> None:
        """Unblock dependents the completer did not (it may have crashed)."""
        for dep_id in task.dependents:
            self._unblock_if_ready(dep_id)

    def _unblock_if_ready(self, task_id: str) -> None:
        if self._board.status(task_id) is not TaskStatus.BLOCKED:
            return
        dep = self._board.get(task_id)
        if dep is not None and all(self._board.status(x) is TaskStatus.COMPLETED for x in dep.dependencies):
            self._spawn(self._make_available, dep.id)

    def _cancel_timer(self, task_id: str) -> None:
        handle = self._timers.pop(task_id, None)
        if handle is not None:
            handle.cancel()

    def _spawn(self, fn: Callable[[str], Awaitable[Any]], task_id: str) -> None:
        """Run a watcher action, retrying through bus outages: a lease that
        lapses while the bus is down must still be handed out afterwards."""
        async def guarded() -> None:
            for delay in _backoff():
                try:
                    await fn(task_id)
                    return
                except InfraFabricError as exc:
                    if not is_transient(exc):
                        return  # refused (the task is gone or moved on): nothing to retry
                    log.debug("retrying %s after %s", fn, exc)
                    await asyncio.sleep(delay)  # backoff while the bus is unreachable

        task = asyncio.ensure_future(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _notify(self, operation: str, params: dict[str, Any]) -> None:
        for observer in self.observers:
            await observer(operation, params)


async def _given(value: T) -> T:
    return value


async def _stop(job: asyncio.Task[Any]) -> None:
    """Cancel a helper task and wait for it to end. A cancellation of the
    caller meanwhile still propagates (suppressing CancelledError around
    ``await job`` would swallow it, and a cancelled agent loop would go on)."""
    job.cancel()
    await asyncio.wait([job])


async def _finish_value(job: asyncio.Future[T]) -> T:
    """``job``'s result, waited for even while this task is being cancelled."""
    await _finish(job)
    return job.result()


async def _finish(job: asyncio.Future[Any]) -> None:
    """Wait for ``job`` to end even while this task is being cancelled (again and
    again, as cancel scopes do); its own outcome is left on it."""
    while not job.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(job)
    if not job.cancelled():
        job.exception()  # retrieved: a failure here is reported by the caller's own error


def _covers(mark: Presence, task: Task, threshold: float) -> bool:
    """Whether the agent waiting under ``mark`` could take ``task`` (a mark
    without capabilities, an open ``pushed_tasks`` feed's, is let through:
    routing then judges the swarm's record)."""
    return mark.capabilities is None or coverage(task.capabilities, mark.capabilities) >= threshold


def _check_lease(seconds: float, what: str) -> None:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= 7 * 86400:
        raise ConfigurationError(f"{what} must be a number of seconds within (0, 604800], got {seconds!r}")


def _check_note(note: str) -> None:
    if not isinstance(note, str) or len(note) > 4000:
        raise ConfigurationError(f"a progress note is text of at most 4,000 characters, got "
                                 f"{len(note) if isinstance(note, str) else type(note).__name__}")
    try:
        check_text(note)
    except ValueError as exc:
        raise ConfigurationError(f"progress note: {exc}") from exc


def _fencing(params: dict[str, Any], claim_id: str | None) -> dict[str, Any]:
    """An owner's operation made without its claim token is witnessed as such:
    it acted on whatever claim its swarm holds now, which is unsafe when two
    workers share one swarm id (one may finish the other's newer claim)."""
    return {**params, "unfenced": True} if claim_id is None else params


def _ownership_problems(task: Task | None, task_id: str, swarm_id: str, claim_id: str | None) -> list[str]:
    """Why ``swarm_id`` could not act on the task as its owner (empty if it could)."""
    if task is None:
        return [f"no task {task_id!r} on the board"]
    if task.status is not TaskStatus.CLAIMED:
        return [f"task is {task.status.value}, not claimed"]
    if task.owner != swarm_id:
        return [f"task is held by {task.owner}, not {swarm_id}"]
    if claim_id is not None and task.claim_id != claim_id:
        return [f"claim {claim_id} is stale (current claim {task.claim_id})"]
    return []


def _no_task(task_id: str) -> TaskNotFoundError:
    return TaskNotFoundError(f"no task {task_id!r} on the board", hint="`ifctl board show` lists the tasks")


def make_swarm_record(swarm_id: str, capabilities: Iterable[str], now: float) -> SwarmRecord:
    """A valid :class:`SwarmRecord`, or :class:`ConfigurationError` naming each bad field."""
    try:
        return SwarmRecord(id=swarm_id, capabilities=sorted(set(capabilities)), registered_at=now)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid swarm {swarm_id!r}: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
