"""``IFCoordinator``: the task board as shared state on the bus.

Layout on the bus (all keys under the bus namespace):

* ``tasks/<id>``  — one JSON :class:`Task` per task; every change is one
  compare-and-swap on its revision.
* ``swarms/<id>`` — one JSON :class:`SwarmRecord` per registered swarm.
* subject ``swarms/<id>/tasks`` — tasks pushed to that swarm.
* subject ``orchestrator/blockers`` — blocker reports.

A coordinator object is a thin client: any number of them, in any number of
processes, see one board. Correctness never depends on a particular process
staying alive: a lapsed lease is claimable by anyone (the claim checks it),
and a stored ``blocked`` status is re-derived from the dependencies when a
claim looks at it. What a long-lived coordinator adds (``async with``) is
timeliness: it watches the board, and when a lease lapses or a completion
unblocks a task it makes the task available and pushes it to the swarms that
can take it — timers and watches, never a polling loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from pydantic import JsonValue, ValidationError

from infrafabric import metrics
from infrafabric.bus import Entry, EventBus, EventKind, Message, Subscription, Watch, WatchEvent
from infrafabric.coordinator.models import (
    SwarmRecord,
    Task,
    TaskEvent,
    TaskKind,
    TaskSpec,
    TaskStatus,
    Transition,
    coverage,
)
from infrafabric.errors import (
    ConfigurationError,
    ConflictError,
    InfraFabricError,
    NotOwnerError,
    TaskExistsError,
    TaskNotFoundError,
)

__all__ = [
    "AdmissionHook",
    "BlockerHook",
    "ClaimOutcome",
    "Feed",
    "IFCoordinator",
    "Observer",
    "Router",
]

TASKS = "tasks/"
SWARMS = "swarms/"
BLOCKERS = "orchestrator/blockers"
HISTORY_LIMIT = 50
DEFAULT_LEASE_TTL = 15.0
T = TypeVar("T")
CAS_RETRIES = 8

#: ``async (swarm, task) -> None | reason``: return a reason to refuse a claim.
AdmissionHook = Callable[[SwarmRecord, Task], Awaitable[str | None]]
#: ``async (task, registered swarms) -> swarm ids``: who a task is pushed to, in order
Router = Callable[[Task, list[SwarmRecord]], Awaitable[list[str]]]
#: ``async (swarm_id, blocker report) -> anything``: called after a blocker is published
BlockerHook = Callable[[str, dict[str, Any]], Awaitable[Any]]
#: ``async () -> share``: the coverage a claim needs, when someone else (the governor's policy) decides it
ThresholdHook = Callable[[], Awaitable[float]]
#: ``async (operation, params) -> None``: told of every successful operation
#: (the witness subscribes here; see issue 3/8).
Observer = Callable[[str, dict[str, Any]], Awaitable[None]]


def _task_key(task_id: str) -> str:
    return f"{TASKS}{task_id}"


def _swarm_key(swarm_id: str) -> str:
    return f"{SWARMS}{swarm_id}"


def _decode_task(entry: Entry) -> Task:
    try:
        return Task.model_validate_json(entry.value)
    except ValidationError as exc:
        raise InfraFabricError(
            f"corrupt task record {entry.key} at revision {entry.revision}: {exc}") from exc


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


def _encode(model: Task | SwarmRecord) -> bytes:
    return model.model_dump_json(exclude_defaults=False).encode()


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

    def __bool__(self) -> bool:
        return self.won


class Feed(Generic[T]):
    """A decoded live stream over a bus watch or subscription.

    ``async with coord.blockers() as feed:`` establishes it (nothing sent
    after entry is missed); then iterate it or ``await feed.get(timeout)``.
    """

    def __init__(self, stream: Watch | Subscription,
                 decode: Callable[[Any], T | None]) -> None:
        self._stream = stream
        self._decode = decode

    async def __aenter__(self) -> Self:
        await self._stream.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
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


def sort_key(task: Task) -> tuple[int, int, float, str]:
    """Critical path before filler, then higher priority, then older, then id."""
    return (0 if task.kind is TaskKind.CRITICAL else 1, -task.priority, task.created_at, task.id)


class IFCoordinator:
    """The coordinator: tasks, claims with leases, push delivery, blockers.

    ``lease_ttl`` is how long a claim lasts without a heartbeat;
    ``min_coverage`` is the share of a task's required capabilities a swarm
    must offer to claim it or be pushed it; ``max_attempts`` is how many failed
    or lapsed attempts a task created here may have before it is failed for
    good; ``admission`` lets the governor
    refuse claims; ``observers`` are told of every operation. Use it as
    ``async with IFCoordinator(bus) as coord`` to also run the lease and
    dependency watcher (see the module docs); one-shot callers may skip that.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        min_coverage: float = 0.7,
        max_attempts: int = 3,
        admission: AdmissionHook | None = None,
        observers: Iterable[Observer] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_ttl <= 0:
            raise ConfigurationError(f"lease_ttl must be positive, got {lease_ttl}")
        if not 0 <= min_coverage <= 1:
            raise ConfigurationError(f"min_coverage must be within 0..1, got {min_coverage}")
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {max_attempts}")
        self.bus = bus
        self.event_bus = bus  # the seeds' name
        self.lease_ttl = lease_ttl
        self.min_coverage = min_coverage
        self.max_attempts = max_attempts
        self.admission = admission
        self.observers: list[Observer] = list(observers)
        self.clock = clock
        self.last_claim: ClaimOutcome | None = None
        #: set by the governor: who gets pushes (default: every swarm that covers the task)
        self.router: Router | None = None
        #: set by the governor: what happens after a blocker is reported (help, escalation)
        self.blocker_hook: BlockerHook | None = None
        #: set by the governor: the policy's coverage threshold replaces :attr:`min_coverage`
        self.coverage_threshold: ThresholdHook | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._board: dict[str, Task] = {}
        #: live swarm registry while the watcher runs (None otherwise)
        self._swarms: dict[str, SwarmRecord] | None = None
        self._swarm_watcher: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> Self:
        """Start the lease/dependency watcher (idempotent)."""
        if self._watcher is None:
            loop = asyncio.get_running_loop()
            board_ready: asyncio.Future[None] = loop.create_future()
            swarms_ready: asyncio.Future[None] = loop.create_future()
            self._watcher = asyncio.create_task(self._watch_board(board_ready), name="if-coordinator-watch")
            self._swarm_watcher = asyncio.create_task(self._watch_swarms(swarms_ready),
                                                      name="if-coordinator-swarms")
            await asyncio.gather(board_ready, swarms_ready)
        return self

    async def close(self) -> None:
        """Stop the watcher and its timers (the bus stays open)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = [t for t in (self._watcher, self._swarm_watcher, *self._background) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._watcher = self._swarm_watcher = None
        self._swarms = None
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
        entry = await self.bus.get(_task_key(task_id))
        if entry is None:
            raise TaskNotFoundError(f"no task {task_id!r} on the board",
                                    hint="`ifctl board show` lists the tasks")
        return _decode_task(entry)

    async def list_tasks(self) -> list[Task]:
        """Every task, in hand-out order (critical first, then priority)."""
        return sorted((_decode_task(e) for e in await self.bus.list(TASKS)), key=sort_key)

    async def get_task_owner(self, task_id: str) -> str | None:
        """The swarm holding a live claim on the task, else None."""
        task = await self.get_task(task_id)
        if task.status is TaskStatus.CLAIMED and not self._lapsed(task):
            return task.owner
        return None

    # -- creating -------------------------------------------------------------

    async def create_task(self, spec: TaskSpec | Mapping[str, Any]) -> Task:
        """Put a new task on the board; its status is derived from its
        dependencies (which must exist). Pushes it if it is available."""
        spec = self.validate_spec(spec)
        deps = await self._dependency_states(spec.dependencies, for_task=spec.id)
        status = TaskStatus.AVAILABLE if all(s is TaskStatus.COMPLETED for s in deps.values()) \
            else TaskStatus.BLOCKED
        now = self.clock()
        task = Task(**spec.model_dump(), status=status, created_at=now, updated_at=now,
                    max_attempts=self.max_attempts,
                    history=[Transition(at=now, to=status, reason="created")])
        if await self.bus.create(_task_key(spec.id), _encode(task)) is None:
            raise TaskExistsError(f"task {spec.id!r} already exists")
        await self._notify("task_created", {"task_id": task.id, "status": status.value})
        if status is TaskStatus.AVAILABLE:
            await self._announce(task)
        return task

    async def create_tasks(self, specs: Iterable[TaskSpec | Mapping[str, Any]]) -> list[Task]:
        """Create several tasks in dependency order (dependencies first)."""
        pending = [self.validate_spec(s) for s in specs]
        known = {s.id for s in pending}
        created: list[Task] = []
        done: set[str] = set()
        while pending:
            ready = [s for s in pending if all(d in done or d not in known for d in s.dependencies)]
            if not ready:
                raise ConfigurationError("dependency cycle among: " + ", ".join(s.id for s in pending))
            for s in ready:
                created.append(await self.create_task(s))
                done.add(s.id)
            pending = [s for s in pending if s.id not in done]
        return created

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
        entries = await asyncio.gather(*(self.bus.get(_task_key(d)) for d in deps))
        missing = [d for d, e in zip(deps, entries, strict=True) if e is None]
        if missing:
            raise TaskNotFoundError(f"task {for_task!r} depends on unknown task(s): {', '.join(missing)}")
        return {d: _decode_task(e).status for d, e in zip(deps, entries, strict=True) if e is not None}

    # -- swarms and push --------------------------------------------------------

    async def register_swarm(self, swarm_id: str, capabilities: Iterable[str] = ()) -> SwarmRecord:
        """Register (or update) a swarm and its capabilities. Its pushed tasks
        arrive on :meth:`pushed_tasks`."""
        try:
            record = SwarmRecord(id=swarm_id, capabilities=sorted(set(capabilities)),
                                 registered_at=self.clock())
        except ValidationError as exc:
            raise ConfigurationError(f"invalid swarm {swarm_id!r}: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
        await self.bus.put(_swarm_key(swarm_id), _encode(record))
        if self._swarms is not None:
            self._swarms[swarm_id] = record
        await self._notify("swarm_registered", {"swarm_id": swarm_id, "capabilities": record.capabilities})
        return record

    async def get_swarm(self, swarm_id: str) -> SwarmRecord | None:
        entry = await self.bus.get(_swarm_key(swarm_id))
        return None if entry is None else SwarmRecord.model_validate_json(entry.value)

    async def list_swarms(self) -> list[SwarmRecord]:
        return [SwarmRecord.model_validate_json(e.value) for e in await self.bus.list(SWARMS)]

    async def push_task_to_swarm(self, swarm_id: str, task: Task | Mapping[str, Any]) -> None:
        """Publish a task to one swarm's subject (delivery only; no state changes)."""
        payload = task.model_dump_json() if isinstance(task, Task) else json.dumps(dict(task))
        await self.bus.publish(f"{SWARMS}{swarm_id}/tasks", payload)

    def pushed_tasks(self, swarm_id: str) -> Feed[Task]:
        """A :class:`Feed` of the tasks pushed to ``swarm_id``."""
        clock = self.clock

        def decode(message: Message) -> Task | None:
            task = _decode_push(message)
            if task is not None:
                with contextlib.suppress(Exception):  # metrics never break a feed
                    since = _became_available(task)
                    if since is not None:
                        metrics.record_push_latency(clock() - since)
            return task

        return Feed(self.bus.subscribe(f"{SWARMS}{swarm_id}/tasks"), decode)

    async def _announce(self, task: Task) -> list[str]:
        """Push an available task to every registered swarm that covers it."""
        swarms = list(self._swarms.values()) if self._swarms is not None else await self.list_swarms()
        if self.router is not None:
            targets = await self.router(task, swarms)
        else:
            targets = [s.id for s in swarms
                       if coverage(task.capabilities, s.capabilities) >= self.min_coverage]
        for swarm_id in targets:  # in order: the router puts the best swarm first
            await self.push_task_to_swarm(swarm_id, task)
        return targets

    # -- claims -------------------------------------------------------------------

    async def claim_task(self, swarm_id: str, task_id: str) -> bool:
        """Claim a task with one compare-and-swap. True for exactly one of any
        number of concurrent claimers; False at once otherwise (the reason is
        in :attr:`last_claim`)."""
        return (await self.try_claim(swarm_id, task_id)).won

    async def try_claim(self, swarm_id: str, task_id: str, *, dry_run: bool = False) -> ClaimOutcome:
        """Like :meth:`claim_task`, returning every check made. With
        ``dry_run``, make every check but write nothing (``won`` then means
        "would win now")."""
        started = time.perf_counter()
        outcome = await self._try_claim(swarm_id, task_id, dry_run)
        self.last_claim = outcome
        if dry_run:
            return outcome
        try:
            if outcome.won:
                await self._notify("task_claimed", {"task_id": task_id, "swarm_id": swarm_id,
                                                    "claim_id": outcome.claim_id})
        finally:  # the claim is decided even if an observer fails
            metrics.record_claim("won" if outcome.won else "lost" if outcome.lost else "refused",
                                 time.perf_counter() - started)
        return outcome

    async def _try_claim(self, swarm_id: str, task_id: str, dry_run: bool) -> ClaimOutcome:
        checks: list[str] = []

        def refuse(reason: str, task: Task | None = None, *, lost: bool = False) -> ClaimOutcome:
            checks.append(f"refused: {reason}")
            return ClaimOutcome(False, task_id, swarm_id, reason, checks, task, lost=lost)

        cached = self._swarms.get(swarm_id) if self._swarms is not None else None
        if cached is not None:  # the watcher keeps the registry live: one read fewer
            entry, threshold = await asyncio.gather(self.bus.get(_task_key(task_id)), self._min_coverage())
            swarm = cached
        else:
            entry, swarm_entry, threshold = await asyncio.gather(
                self.bus.get(_task_key(task_id)), self.bus.get(_swarm_key(swarm_id)), self._min_coverage())
            if swarm_entry is None:
                return refuse(f"swarm {swarm_id!r} is not registered (ifctl swarm register)")
            swarm = SwarmRecord.model_validate_json(swarm_entry.value)
        raced = False  # a compare-and-swap lost: the rival may have finished or removed the task since
        for _attempt in range(CAS_RETRIES):
            if entry is None:
                return refuse(f"no task {task_id!r} on the board", lost=raced)
            task = _decode_task(entry)
            now = self.clock()
            if task.status is TaskStatus.CLAIMED:
                if not self._lapsed(task, now):
                    # another claimant holds it (for the owner's own swarm: another of its workers)
                    if task.owner == swarm_id:
                        return refuse(f"already claimed by {swarm_id} itself", task, lost=True)
                    left = (task.lease_until or now) - now
                    return refuse(f"claimed by {task.owner} (lease {left:.1f} s left)", task, lost=True)
                checks.append(f"lease of {task.owner} lapsed {now - (task.lease_until or now):.1f} s ago")
            elif task.status is TaskStatus.BLOCKED:
                open_deps = [d for d, s in (await self._dependency_states(
                    task.dependencies, for_task=task.id)).items() if s is not TaskStatus.COMPLETED]
                if open_deps:
                    return refuse("waiting on dependencies: " + ", ".join(open_deps), task)
                checks.append("dependencies all completed (stored status was stale)")
            elif task.status is not TaskStatus.AVAILABLE:
                return refuse(f"task is {task.status.value}", task, lost=raced)
            else:
                checks.append("task is available")
            cov = coverage(task.capabilities, swarm.capabilities)
            checks.append(f"capability coverage {cov:.0%} (needs {threshold:.0%})")
            if cov < threshold:
                missing = sorted(set(task.capabilities) - set(swarm.capabilities))
                return refuse(f"capability coverage {cov:.0%} below {threshold:.0%}; "
                              f"missing {', '.join(missing)}", task)
            if self.admission is not None:
                reason = await self.admission(swarm, task)
                if reason:
                    return refuse(reason, task)
                checks.append("admitted by policy")
            if dry_run:
                checks.append(f"would compare-and-swap at revision {entry.revision}")
                return ClaimOutcome(True, task_id, swarm_id, "would claim", checks, task)
            claim_id = secrets.token_hex(8)
            claimed = self._transition(task, TaskStatus.CLAIMED, now, by=swarm_id, reason="claimed",
                                       owner=swarm_id, claim_id=claim_id,
                                       lease_until=now + self.lease_ttl)
            rev = await self.bus.update(_task_key(task_id), _encode(claimed), entry.revision)
            if rev is not None:
                checks.append(f"compare-and-swap at revision {entry.revision} won (revision {rev})")
                return ClaimOutcome(True, task_id, swarm_id, "claimed", checks, claimed, claim_id)
            checks.append(f"compare-and-swap at revision {entry.revision} lost; re-reading")
            raced = True
            entry = await self.bus.get(_task_key(task_id))
        return refuse("the task kept changing; gave up after retries", lost=True)

    async def _min_coverage(self) -> float:
        return self.min_coverage if self.coverage_threshold is None else await self.coverage_threshold()

    def _lapsed(self, task: Task, now: float | None = None) -> bool:
        return task.lease_until is not None and (now or self.clock()) >= task.lease_until

    def _transition(self, task: Task, status: TaskStatus, now: float, *, by: str | None,
                    reason: str, **changes: Any) -> Task:
        history = [*task.history, Transition(at=now, to=status, by=by, reason=reason)][-HISTORY_LIMIT:]
        return task.model_copy(update={"status": status, "updated_at": now, "history": history, **changes})

    async def _mutate_owned(self, swarm_id: str, task_id: str, claim_id: str | None,
                            change: Callable[[Task, float], Task], op: str) -> Task:
        """CAS loop for an operation only the current claim holder may do."""
        for _attempt in range(CAS_RETRIES):
            entry = await self.bus.get(_task_key(task_id))
            if entry is None:
                raise TaskNotFoundError(f"no task {task_id!r} on the board")
            task = _decode_task(entry)
            if task.status is not TaskStatus.CLAIMED or task.owner != swarm_id:
                holder = f"held by {task.owner}" if task.status is TaskStatus.CLAIMED else task.status.value
                raise NotOwnerError(f"{op} {task_id}: {swarm_id} does not hold the claim (task is {holder})")
            if claim_id is not None and task.claim_id != claim_id:
                raise NotOwnerError(f"{op} {task_id}: claim {claim_id} is stale (the task was re-claimed)")
            updated = change(task, self.clock())
            if await self.bus.update(_task_key(task_id), _encode(updated), entry.revision) is not None:
                return updated
        raise NotOwnerError(f"{op} {task_id}: the task kept changing; gave up after retries")

    async def check_owned(self, swarm_id: str, task_id: str, claim_id: str | None = None) -> list[str]:
        """Why ``swarm_id`` could not act on ``task_id`` as its owner now
        (empty if it could). Writes nothing."""
        entry = await self.bus.get(_task_key(task_id))
        if entry is None:
            return [f"no task {task_id!r} on the board"]
        task = _decode_task(entry)
        problems = []
        if task.status is not TaskStatus.CLAIMED:
            problems.append(f"task is {task.status.value}, not claimed")
        elif task.owner != swarm_id:
            problems.append(f"task is held by {task.owner}, not {swarm_id}")
        elif claim_id is not None and task.claim_id != claim_id:
            problems.append(f"claim {claim_id} is stale (current claim {task.claim_id})")
        return problems

    # -- leases -------------------------------------------------------------------

    async def heartbeat(self, swarm_id: str, task_id: str, claim_id: str | None = None) -> float:
        """Renew the claim's lease; returns the new expiry (epoch seconds).
        Raises :class:`NotOwnerError` if the claim was lost."""
        task = await self._mutate_owned(
            swarm_id, task_id, claim_id,
            lambda t, now: t.model_copy(update={"lease_until": now + self.lease_ttl, "updated_at": now}),
            "heartbeat")
        assert task.lease_until is not None
        return task.lease_until

    @contextlib.asynccontextmanager
    async def holding(self, swarm_id: str, task_id: str, claim_id: str | None = None,
                      interval: float | None = None) -> AsyncIterator[asyncio.Event]:
        """Renew the lease every ``interval`` (default a third of the TTL)
        while the body runs. Yields an event that is set if the claim is lost."""
        lost = asyncio.Event()
        period = interval or self.lease_ttl / 3

        async def renew() -> None:
            while True:
                await asyncio.sleep(period)
                try:
                    await self.heartbeat(swarm_id, task_id, claim_id)
                except NotOwnerError:
                    lost.set()
                    return
                except InfraFabricError:
                    continue  # transient bus trouble: the next beat may get through

        beat = asyncio.create_task(renew())
        try:
            yield lost
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def release_task(self, swarm_id: str, task_id: str, claim_id: str | None = None,
                           reason: str = "released") -> Task:
        """Give a claimed task back; it becomes available and is pushed again."""
        task = await self._mutate_owned(
            swarm_id, task_id, claim_id,
            lambda t, now: self._transition(t, TaskStatus.AVAILABLE, now, by=swarm_id, reason=reason,
                                            owner=None, claim_id=None, lease_until=None),
            "release")
        await self._notify("task_released", {"task_id": task_id, "swarm_id": swarm_id})
        await self._announce(task)
        return task

    async def complete_task(self, swarm_id: str, task_id: str, result: JsonValue = None,
                            claim_id: str | None = None) -> Task:
        """Complete a task the caller holds; its dependents whose dependencies
        are now all completed become available and are pushed."""
        task = await self._mutate_owned(
            swarm_id, task_id, claim_id,
            lambda t, now: self._transition(t, TaskStatus.COMPLETED, now, by=swarm_id, reason="completed",
                                            result=result, lease_until=None),
            "complete")
        await self._notify("task_completed", {"task_id": task_id, "swarm_id": swarm_id})
        await self._unblock_dependents(task_id)
        return task

    async def fail_task(self, swarm_id: str, task_id: str, error: str = "",
                        claim_id: str | None = None) -> Task:
        """Report a failed attempt: the task is retried (available again) until
        it has been attempted ``max_attempts`` times, then it is failed."""

        def change(t: Task, now: float) -> Task:
            attempts = t.attempts + 1
            status = TaskStatus.FAILED if attempts >= t.max_attempts else TaskStatus.AVAILABLE
            return self._transition(t, status, now, by=swarm_id, reason=f"attempt {attempts} failed: {error}",
                                    owner=None, claim_id=None, lease_until=None, attempts=attempts,
                                    error=error)

        task = await self._mutate_owned(swarm_id, task_id, claim_id, change, "fail")
        await self._notify("task_failed", {"task_id": task_id, "swarm_id": swarm_id,
                                           "attempts": task.attempts, "final": task.status.value})
        if task.status is TaskStatus.AVAILABLE:
            await self._announce(task)
        return task

    async def reopen_task(self, task_id: str, *, by: str, reason: str = "") -> Task:
        """Give a failed task (every attempt used) a fresh set of attempts: it
        becomes available again, or blocked while a dependency is open, and is
        pushed. Only a failed task can be reopened; the caller is recorded."""
        if not by:
            raise ConfigurationError("reopen_task needs who reopens it (by=...)")
        for _attempt in range(CAS_RETRIES):
            entry = await self.bus.get(_task_key(task_id))
            if entry is None:
                raise TaskNotFoundError(f"no task {task_id!r} on the board")
            task = _decode_task(entry)
            if task.status is not TaskStatus.FAILED:
                raise ConflictError(f"task {task_id} is {task.status.value}, not failed: only a failed task "
                                    "can be reopened")
            states = await self._dependency_states(task.dependencies, for_task=task.id)
            ready = all(s is TaskStatus.COMPLETED for s in states.values())
            status = TaskStatus.AVAILABLE if ready else TaskStatus.BLOCKED
            why = f"reopened by {by}" + (f": {reason}" if reason else "")
            updated = self._transition(task, status, self.clock(), by=by, reason=why, attempts=0, error=None,
                                       owner=None, claim_id=None, lease_until=None)
            if await self.bus.update(_task_key(task_id), _encode(updated), entry.revision) is not None:
                await self._notify("task_reopened", {"task_id": task_id, "by": by, "reason": reason,
                                                     "status": status.value})
                if ready:
                    await self._announce(updated)
                return updated
        raise ConflictError(f"task {task_id} kept changing; gave up reopening it after {CAS_RETRIES} tries")

    async def expire_lease(self, task_id: str) -> Task | None:
        """If the task's lease has lapsed, make it available again (counting an
        attempt) and push it. Returns the task if this call did it."""
        for _attempt in range(CAS_RETRIES):
            entry = await self.bus.get(_task_key(task_id))
            if entry is None:
                return None
            task = _decode_task(entry)
            now = self.clock()
            if task.status is not TaskStatus.CLAIMED or not self._lapsed(task, now):
                return None
            attempts = task.attempts + 1
            status = TaskStatus.FAILED if attempts >= task.max_attempts else TaskStatus.AVAILABLE
            updated = self._transition(task, status, now, by=None,
                                       reason=f"lease of {task.owner} lapsed",
                                       owner=None, claim_id=None, lease_until=None, attempts=attempts)
            if await self.bus.update(_task_key(task_id), _encode(updated), entry.revision) is not None:
                await self._notify("lease_expired", {"task_id": task_id, "swarm_id": task.owner})
                if status is TaskStatus.AVAILABLE:
                    await self._announce(updated)
                return updated
        return None

    async def _unblock_dependents(self, task_id: str) -> list[Task]:
        # With the watcher running, its live board finds the dependents without
        # listing; one it has not seen yet is unblocked by the watcher itself
        # when the completion event reaches it (events arrive in order).
        board = self._board.values() if self._watcher is not None else await self.list_tasks()
        unblocked = []
        for dep in list(board):
            if task_id in dep.dependencies and dep.status is TaskStatus.BLOCKED:
                task = await self._make_available(dep.id)
                if task is not None:
                    unblocked.append(task)
        return unblocked

    async def _make_available(self, task_id: str) -> Task | None:
        for _attempt in range(CAS_RETRIES):
            entry = await self.bus.get(_task_key(task_id))
            if entry is None:
                return None
            task = _decode_task(entry)
            if task.status is not TaskStatus.BLOCKED:
                return None
            states = await self._dependency_states(task.dependencies, for_task=task.id)
            if any(s is not TaskStatus.COMPLETED for s in states.values()):
                return None
            updated = self._transition(task, TaskStatus.AVAILABLE, self.clock(), by=None,
                                       reason="dependencies completed")
            if await self.bus.update(_task_key(task_id), _encode(updated), entry.revision) is not None:
                await self._announce(updated)
                return updated
        return None

    # -- hand-out -----------------------------------------------------------------

    async def next_task(self, swarm_id: str, wait: float | None = 0) -> ClaimOutcome | None:
        """Claim the best task this swarm can take: critical path before filler,
        then priority. With ``wait`` > 0, block on pushes (never polling) up to
        that many seconds (``None``: forever) for one to become available."""
        swarm = await self.get_swarm(swarm_id)
        if swarm is None:
            raise TaskNotFoundError(f"swarm {swarm_id!r} is not registered",
                                    hint=f"ifctl swarm register {swarm_id} --cap DOMAIN:SKILL")
        async with self.pushed_tasks(swarm_id) as pushes:
            now = self.clock()
            threshold = await self._min_coverage()
            for task in await self.list_tasks():
                claimable = task.status is TaskStatus.AVAILABLE or (
                    task.status is TaskStatus.CLAIMED and self._lapsed(task, now)) or (
                    task.status is TaskStatus.BLOCKED)
                if claimable and coverage(task.capabilities, swarm.capabilities) >= threshold:
                    outcome = await self.try_claim(swarm_id, task.id)
                    if outcome.won:
                        return outcome
            if wait is not None and wait <= 0:
                return None
            try:
                async with asyncio.timeout(wait):
                    async for pushed in pushes:
                        outcome = await self.try_claim(swarm_id, pushed.id)
                        if outcome.won:
                            return outcome
            except TimeoutError:
                return None
        return None

    # -- blockers and events -----------------------------------------------------

    async def detect_blocker(self, swarm_id: str, info: Mapping[str, Any]) -> dict[str, Any]:
        """Report a blocker to the orchestrator subject; returns the report."""
        report = {"type": "blocker_detected", "swarm_id": swarm_id, "blocker_info": dict(info),
                  "timestamp": self.clock()}
        await self.bus.publish(BLOCKERS, json.dumps(report, default=str))
        await self._notify("blocker_detected", {"swarm_id": swarm_id, "info": dict(info)})
        if self.blocker_hook is not None:
            report["help"] = await self.blocker_hook(swarm_id, report)
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
            snapshot = await self.list_tasks()
            watch = self.bus.watch(TASKS, start_revision=start)
            await watch.start()
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        self._board = {t.id: t for t in snapshot}
        for task in snapshot:
            self._track(task)
        for task in snapshot:  # finish what a crashed completer left undone
            if task.status is TaskStatus.COMPLETED:
                self._after_completion(task.id)
        ready.set_result(None)
        async with watch:
            async for ev in watch:
                task_id = ev.key.removeprefix(TASKS)
                if ev.kind is EventKind.DELETE or ev.value is None:
                    self._board.pop(task_id, None)
                    self._cancel_timer(task_id)
                    continue
                try:
                    task = Task.model_validate_json(ev.value)
                except ValidationError:
                    continue
                before = self._board.get(task.id)
                self._board[task.id] = task
                self._track(task)
                if task.status is TaskStatus.COMPLETED and (
                        before is None or before.status is not TaskStatus.COMPLETED):
                    self._after_completion(task.id)

    async def _watch_swarms(self, ready: asyncio.Future[None]) -> None:
        try:
            start = await self.bus.revision() + 1
            registry = {r.id: r for r in await self.list_swarms()}
            watch = self.bus.watch(SWARMS, start_revision=start)
            await watch.start()
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        self._swarms = registry
        ready.set_result(None)
        async with watch:
            async for ev in watch:
                swarm_id = ev.key.removeprefix(SWARMS)
                if ev.kind is EventKind.DELETE or ev.value is None:
                    registry.pop(swarm_id, None)
                    continue
                with contextlib.suppress(ValidationError):
                    registry[swarm_id] = SwarmRecord.model_validate_json(ev.value)

    def _track(self, task: Task) -> None:
        """Arm a timer for the task's lease, if it has one."""
        self._cancel_timer(task.id)
        if task.status is TaskStatus.CLAIMED and task.lease_until is not None:
            delay = max(0.0, task.lease_until - self.clock()) + 0.05
            self._timers[task.id] = asyncio.get_running_loop().call_later(
                delay, self._spawn, self.expire_lease, task.id)

    def _after_completion(self, task_id: str) -> None:
        """Unblock dependents the completer did not (it may have crashed)."""
        for dep in list(self._board.values()):
            if task_id in dep.dependencies and dep.status is TaskStatus.BLOCKED and all(
                (d := self._board.get(x)) is not None and d.status is TaskStatus.COMPLETED
                for x in dep.dependencies
            ):
                self._spawn(self._make_available, dep.id)

    def _cancel_timer(self, task_id: str) -> None:
        handle = self._timers.pop(task_id, None)
        if handle is not None:
            handle.cancel()

    def _spawn(self, fn: Callable[[str], Awaitable[Any]], task_id: str) -> None:
        """Run a watcher action, retrying through bus outages: a lease that
        lapses while the bus is down must still be handed out afterwards."""
        async def guarded() -> None:
            delay = 0.1
            while True:
                try:
                    await fn(task_id)
                    return
                except InfraFabricError:
                    await asyncio.sleep(delay)  # backoff while the bus is unreachable
                    delay = min(delay * 2, 2.0)

        task = asyncio.ensure_future(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _notify(self, operation: str, params: dict[str, Any]) -> None:
        for observer in self.observers:
            await observer(operation, params)
