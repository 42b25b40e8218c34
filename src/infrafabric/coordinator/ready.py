"""The ready index: what ``next_task`` reads instead of the whole board.

A hand-out that lists the board costs more with every task on it. The index
keeps, per *lane* (a task's exact set of required capabilities), a FIFO queue
per *band* (critical path before filler, then priority) of the tasks that
became available, so a hand-out reads the lanes (as many as there are
distinct capability sets, not tasks) and a window of :data:`WINDOW` slots at
the head of the best band a swarm can take. The compare-and-swap on the task
still decides every claim: the index only says where to look.

Records (see :mod:`infrafabric.bus.layout`):

* ``ready/directory`` — a :class:`Directory`: every lane and its capabilities
  (a lane is listed there before it is first written, and never removed).
* ``ready/lanes/<lane>`` — a :class:`Lane`: its capabilities, and per band the
  ``head`` (first slot that may be live) and ``tail`` (next slot to allocate).
* ``ready/slots/<lane>/<band>/<n>`` — a :class:`Slot`: task ``task_id`` became
  available for the ``seq``-th time (:attr:`Task.ready_seq`).

How it is kept consistent with the board without a transaction across keys:

1. **Offer before the transition.** Whatever makes a task available (creation,
   release, a lapse, a retry, reopening, its dependencies completing) first
   allocates slots (one compare-and-swap on the lane per lane) and creates them,
   naming the task's next ``ready_seq``; then the task's own compare-and-swap
   sets that ``ready_seq`` with the status. A crash between the two leaves a
   slot for a task that did not become available — harmless — never an
   available task without a slot.
2. **A slot is live** while its task is available with that ``ready_seq``
   (or claimed with it and lapsed). A task that moved on (claimed, completed,
   failed, deleted) or became available again later (a newer ``ready_seq``,
   with its own slot) has left the slot *dead*: whoever sees so marks it
   dead, and the head moves past dead slots. Slots are written once and only
   go from live to dead, so marking one dead can never hide a live task.
3. **A slot ahead of its task** (``ready_seq`` still below the slot's) is an
   offer in flight, or one whose writer died or whose transition did not
   apply. After :data:`GRACE` seconds the coordinator *voids* it — it raises
   the task's ``ready_seq`` to the slot's with a compare-and-swap, so the
   transition it was written for can no longer land (its writer, if alive,
   retries and offers again) — and then marks it dead.
4. **A slot allocated but never written** (its writer died between the lane's
   compare-and-swap and the slot's creation) is closed after :data:`GRACE`
   seconds with a tombstone *created* in its place; a writer that comes back
   finds its slot taken and offers again. Those tombstones are never deleted,
   so the position can never be written late.

Positions are never reused (a band, once made, stays in its lane), and slots
behind the head are deleted by whoever moved it. Hand-out order is kept
between bands exactly and within a band's window loosely: agents start at
different places in the window (``spread``) so a thousand of them do not all
race for the same task.

Hand-outs of one process (an ``ifctl mcp`` server's agents, a drain worker's)
share what they learn instead of racing each other, as ``SKIP LOCKED`` lets
database workers do: a slot once read is not read again (it is written once;
whether it is live is decided by its task, which the claim attempt reads); a
slot found claimed is passed over until that claim's lease could lapse; a
task a neighbour is trying is passed over while it does (the coordinator
keeps those); reads of a lane asked for while one is in flight share the next
one; one head move per band is in flight at a time. None of it is trusted for
a claim: the compare-and-swap on the task still decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence, Set
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from infrafabric.bus import EventBus
from infrafabric.bus.layout import READY_DIRECTORY, READY_LANES, READY_SLOTS, READY_WHOLE, TASKS
from infrafabric.bus.records import Mirrored, Records, Versioned, encode
from infrafabric.coordinator.models import Capability, Task, TaskId, TaskKind, TaskStatus, coverage
from infrafabric.errors import InfraFabricError, is_transient

__all__ = ["GRACE", "WINDOW", "Band", "Directory", "Lane", "Offer", "ReadyIndex", "Slot", "Whole", "band_of",
           "lane_of"]

log = logging.getLogger(__name__)

#: slots a hand-out reads at the head of a band at once, once it is spreading out
WINDOW = 16
#: slots it reads first, at the head (the head is usually live: claims mark theirs dead)
FIRST_WINDOW = 3
#: windows a hand-out reads per band before giving up on it for this call (a
#: pathological run of dead slots is skipped by the head moving, not read forever)
MAX_WINDOWS = 32
#: seconds after which an offer whose task never caught up is voided, and an
#: allocated slot never written is closed
GRACE = 30.0
#: the head of a band is moved when at least this many dead slots lead it (fewer are
#: cheap to skip; moving is a write on a record every creator writes, made after the hand-out)
MOVE_AT = 2
#: seconds after which a slot passed over because its task was claimed is read again
REREAD_AFTER = 2.0
#: slot writes an offer keeps in flight at once
CONCURRENCY = 256
#: the longest lane id made from capability names; longer sets are hashed
MAX_LANE_ID = 200
ANY_LANE = "_any"


@dataclass
class _Held:
    """The tidying a hand-out holds back (see ReadyIndex.holding)."""

    jobs: list[Coroutine[Any, Any, None]]
    #: False once the hand-out ended: a task it started that asks later (a shielded claim
    #: attempt outliving a cancelled hand-out) has its tidying started at once
    open: bool = True


_HELD: ContextVar[_Held | None] = ContextVar("if_ready_held", default=None)


class Band(BaseModel):
    """One band's queue in a lane: slots ``head`` (inclusive) to ``tail``
    (exclusive) may be live; ``at`` is when the last slot was allocated."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    head: int = Field(default=0, ge=0)
    tail: int = Field(default=0, ge=0)
    at: float = Field(default=0.0, allow_inf_nan=False)


class Lane(BaseModel):
    """The tasks that need exactly ``capabilities``, by band."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    capabilities: list[Capability] = Field(default_factory=list, max_length=1000)
    bands: dict[Annotated[str, Field(pattern=r"^[cf]-?[0-9]{1,10}$")], Band] = Field(default_factory=dict)


class Directory(BaseModel):
    """Every lane of the index (lane id → its capabilities)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    lanes: dict[Annotated[str, Field(max_length=MAX_LANE_ID + 2)], list[Capability]] = Field(
        default_factory=dict)


class Slot(BaseModel):
    """Task ``task_id`` became available for the ``seq``-th time at ``at``;
    ``dead`` once it moved on. A tombstone closing a slot never written has
    no task."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    task_id: TaskId | None = None
    seq: int = Field(default=0, ge=0)
    at: float = Field(default=0.0, allow_inf_nan=False)
    dead: bool = False


class Whole(BaseModel):
    """``ready/whole``: a re-index found every available task named by a live
    slot (or offered it) at ``at``. Every path that makes a task available
    offers it first, so that stays true; a watcher that finds this record
    need not read every slot again when it starts. Removed by whatever
    could break it (``ifctl doctor --repair`` moving an index record aside)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    at: float = Field(allow_inf_nan=False)


@dataclass(frozen=True)
class Offer:
    """A live slot a hand-out found: try to claim ``task_id``."""

    lane: str
    band: str
    position: int
    slot: Slot

    @property
    def task_id(self) -> str:
        assert self.slot.task_id is not None
        return self.slot.task_id


def lane_of(capabilities: Iterable[str]) -> str:
    """The lane id of a set of required capabilities."""
    caps = sorted(set(capabilities))
    if not caps:
        return ANY_LANE
    joined = "+".join(caps)
    if len(joined) <= MAX_LANE_ID:
        return joined
    return "_h" + hashlib.sha256(joined.encode()).hexdigest()[:40]


def band_of(task: Task) -> str:
    """The band id of a task: ``c`` (critical) or ``f`` (filler), then its priority."""
    return f"{'c' if task.kind is TaskKind.CRITICAL else 'f'}{task.priority}"


def _band_order(band: str) -> tuple[int, int]:
    return (0 if band[0] == "c" else 1, -int(band[1:]))


def is_live(slot: Slot, task: Task | None, lapsed: Callable[[Task], bool]) -> bool | None:
    """Whether ``slot`` is live given its task as it is now: True (hand it
    out), False (dead: the task moved on), None (the offer is in flight: the
    task has not caught up with the slot)."""
    if slot.dead or slot.task_id is None or task is None:
        return False
    if task.ready_seq < slot.seq:
        return None
    if task.ready_seq > slot.seq:
        return False
    return task.status is TaskStatus.AVAILABLE or (task.status is TaskStatus.CLAIMED and lapsed(task))


def _cancelling() -> bool:
    """Whether the running task has been asked to stop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class ReadyIndex:
    """The ready index of one board (see the module docs). ``clock`` is the
    coordinator's clock."""

    def __init__(self, bus: EventBus, clock: Callable[[], float]) -> None:
        self.bus = bus
        #: kept by a watch in a long-lived coordinator (see follow()): a lane is listed before its
        #: first slot is written, and a lane seen a moment late costs only that moment
        self.directory = Mirrored(bus, READY_DIRECTORY, Directory)
        #: kept by a watch too in a long-lived coordinator: its first look reads no lane from the bus
        #: (a lane a moment behind misses only an offer made that moment; the look that must not miss
        #: one, before an agent waits for pushes, reads them from the bus: ``fresh``)
        self.lanes = Mirrored(bus, READY_LANES, Lane)
        self.slots = Records(bus, READY_SLOTS, Slot)
        self.whole = Records(bus, READY_WHOLE, Whole)
        self.clock = clock
        self._listed: set[str] = set()  # lanes seen in the directory (never removed from it)
        #: tidying left out of a hand-out's way (slots marked dead, passed slots deleted)
        self._tidying: set[asyncio.Task[None]] = set()
        #: what this process learnt of slots, so many hand-outs of one process do not re-read (and
        #: re-try) the same head: (lane, band) → position → the slot as read (written once; only its
        #: task says whether it is live now) and until when it is not live (inf: dead for good; a
        #: claim's lease expiry: it is live again if that claim lapses)
        self._known: dict[tuple[str, str], dict[int, tuple[Slot, float]]] = {}
        #: lane reads in flight, and the next one, shared by this process's hand-outs (see _read_lane)
        self._lane_reading: dict[str, asyncio.Future[Versioned[Lane] | None]] = {}
        self._lane_next: dict[str, asyncio.Future[Versioned[Lane] | None]] = {}
        #: (lane, band) whose head a hand-out of this process is moving now: one at a time
        self._moving: set[tuple[str, str]] = set()
        #: slot reads in flight, shared by this process's hand-outs (see _read_slot)
        self._reading: dict[str, asyncio.Future[Slot | None]] = {}

    async def follow(self) -> None:
        """Keep the directory and the lanes live by watches (a long-lived
        coordinator): a hand-out then starts at the slots; and read slots
        ahead of the hand-outs, after them."""
        await self.directory.follow()
        await self.lanes.follow()

    async def unfollow(self) -> None:
        await self.lanes.stop()
        await self.directory.stop()

    @staticmethod
    def slot_id(lane: str, band: str, position: int) -> str:
        return f"{lane}/{band}/{position}"

    # -- offering --------------------------------------------------------------------

    async def offer(self, tasks: Sequence[Task]) -> None:
        """Index ``tasks`` (about to become available, each with the
        ``ready_seq`` it will have): allocate their slots, one
        compare-and-swap per lane, and create them. Call before the tasks'
        own writes (see the module docs)."""
        if not tasks:
            return
        by_lane: dict[str, list[Task]] = {}
        for task in tasks:
            by_lane.setdefault(lane_of(task.capabilities), []).append(task)
        await asyncio.gather(*(self._offer_lane(lane, group) for lane, group in by_lane.items()))

    async def _offer_lane(self, lane: str, tasks: list[Task]) -> None:
        if lane not in self._listed:  # listed before it is first written: readers find lanes there
            capabilities = sorted(set(tasks[0].capabilities))

            founding = False

            def add(current: Directory | None) -> Directory | None:
                nonlocal founding
                founding = current is None
                current = current or Directory()
                if lane in current.lanes:
                    return None
                return current.model_copy(update={"lanes": {**current.lanes, lane: capabilities}})

            listed = await self.directory.mutate("", add)
            self._listed.update(listed.value.lanes if listed is not None else ())
            if founding and listed is not None:
                await self._found_whole()
        gate = asyncio.Semaphore(CONCURRENCY)
        size = self.bus.batch_limit

        async def write(group: list[tuple[Task, str, int]], now: float) -> list[Task]:
            async with gate:
                made = await self.slots.create_many([
                    (self.slot_id(lane, band, position), Slot(task_id=task.id, seq=task.ready_seq, at=now))
                    for task, band, position in group])
            # a slot that exists was closed meanwhile (we were too slow): that task again
            return [task for (task, _, _), got in zip(group, made, strict=True) if got is None]

        pending = tasks
        while pending:
            placed = await self._allocate(lane, pending)
            now = self.clock()
            lost = await asyncio.gather(*(write(placed[i:i + size], now)
                                          for i in range(0, len(placed), size)))
            pending = [t for group in lost for t in group]

    async def _found_whole(self) -> None:
        """This process made the index (its directory). Any task already on the
        board then predates it (whoever makes a task available offers it
        first, and so would have made the directory): with none, the index
        names every available task from the start, and no watcher need read
        every slot to check (see :class:`Whole`)."""
        async with contextlib.aclosing(self.bus.scan(TASKS, batch=1)) as board:
            async for _ in board:
                return  # tasks from before the index: the first watcher re-indexes them
        await self.whole.create("", Whole(at=self.clock()))

    async def _allocate(self, lane: str, tasks: list[Task]) -> list[tuple[Task, str, int]]:
        placed: list[tuple[Task, str, int]] = []

        def allocate(current: Lane | None) -> Lane:
            placed.clear()
            base = current or Lane(capabilities=sorted(set(tasks[0].capabilities)))
            bands = dict(base.bands)
            now = self.clock()
            for task in tasks:
                band = band_of(task)
                was = bands.get(band) or Band()
                placed.append((task, band, was.tail))
                bands[band] = was.model_copy(update={"tail": was.tail + 1, "at": now})
            return base.model_copy(update={"bands": bands})

        await self.lanes.mutate(lane, allocate)
        return placed

    # -- handing out -----------------------------------------------------------------

    async def candidates(self, capabilities: Sequence[str], threshold: float, *, spread: str = "",
                         skip: Set[tuple[str, str, int]] = frozenset(), fresh: bool = False) -> list[Offer]:
        """The live-looking slots at the head of the best band ``capabilities``
        can take (coverage at least ``threshold``), in the order to try them:
        starting at a place ``spread`` picks; slots in ``skip`` (lane, band,
        position) are passed over. Empty when no band it can take has one.
        Reads the lanes (from the watched copy if kept, unless ``fresh``) and
        a bounded number of slots; moves heads past dead slots on the way."""
        directory = await self.directory.read()
        usable = [lane for lane, caps in (directory.lanes if directory is not None else {}).items()
                  if coverage(caps, list(capabilities)) >= threshold]
        read = await asyncio.gather(*(self._read_lane(lane, fresh) for lane in usable))
        lanes = [v for v in read if v is not None]
        bands: dict[str, list[tuple[Versioned[Lane], Band]]] = {}
        for lane in lanes:
            for band, queue in lane.value.bands.items():
                if queue.head < queue.tail:
                    bands.setdefault(band, []).append((lane, queue))
        width = WINDOW if spread else FIRST_WINDOW
        for band in sorted(bands, key=_band_order):
            found: list[Offer] = []
            for lane, queue in bands[band]:
                found += await self._live_in(lane, band, queue, skip, width)
            if found:
                start = int(hashlib.sha256(spread.encode()).hexdigest()[:8], 16) % len(found) if spread else 0
                return found[start:] + found[:start]
        return []

    async def _live_in(self, seen: Versioned[Lane], band: str, queue: Band, skip: Set[tuple[str, str, int]],
                       width: int) -> list[Offer]:
        """The live-looking slots of one band's queue, a window at a time from
        its head until some are found (or :data:`MAX_WINDOWS` were read); the
        first window is ``width`` slots, each next one twice the last, up to
        :data:`WINDOW`."""
        lane = self.lanes.id_of(seen.key)
        position = queue.head
        known = self._known.setdefault((lane, band), {})
        for passed in [p for p in known if p < queue.head]:  # behind the head: never read again
            del known[passed]
        now = self.clock()
        leading_dead = 0  # dead slots from the head on, before the first one that is not
        closed: set[int] = set()  # tombstones of slots never written: never deleted (see the module docs)
        found: list[Offer] = []
        for _ in range(MAX_WINDOWS):
            if position >= queue.tail:
                break
            end = min(position + width, queue.tail)
            width = min(WINDOW, width * 2)  # (dead slots ahead: read further, a bigger window each time)
            for p in range(position, end):
                if 0.0 < known.get(p, (None, 0.0))[1] <= now:
                    del known[p]  # passed over for a claim a while ago: read again (see not_live)
            wanted = [p for p in range(position, end) if p not in known and (lane, band, p) not in skip]
            if wanted:  # (a window known already, or all being tried, costs no task per slot)
                await asyncio.gather(*(self._look(lane, band, p, queue, known, skip) for p in wanted))
            for p in range(position, end):
                if p not in known:
                    continue
                slot, until = known[p]
                if slot.task_id is None:
                    closed.add(p)
                if until == math.inf and leading_dead == p - queue.head:
                    leading_dead += 1
                if until <= now and (lane, band, p) not in skip:
                    found.append(Offer(lane, band, p, slot))
            position = end
            if found:
                break
        if leading_dead >= MOVE_AT or (leading_dead and not found):
            # tidying: the next hand-out reads less for it, this one need not wait for it
            self.later(self._move_head(seen, band, queue.head + leading_dead, closed))
        if self.lanes.following and len(found) < 2 and position < queue.tail:
            # a long-lived process's next hand-out finds the slots after these read already
            ahead = range(position, min(position + FIRST_WINDOW, queue.tail))
            self.later(self._read_ahead(lane, band, ahead, queue, known))
        return found

    async def _read_ahead(self, lane: str, band: str, positions: range, queue: Band,
                          known: dict[int, tuple[Slot, float]]) -> None:
        try:
            await asyncio.gather(*(self._look(lane, band, p, queue, known, frozenset()) for p in positions))
        except InfraFabricError as exc:  # only a read ahead: the hand-out that needs them reads them
            log.debug("could not read ahead in %s/%s: %s", lane, band, exc)

    async def _look(self, lane: str, band: str, position: int, queue: Band,
                    known: dict[int, tuple[Slot, float]], skip: Set[tuple[str, str, int]]) -> None:
        """Read one slot into ``known``, unless known already (what a
        neighbour read a moment ago counts: a slot is written once) or being
        tried (in ``skip``); close it if allocated but never written."""
        if position in known or (lane, band, position) in skip:
            return
        slot = await self._read_slot(self.slot_id(lane, band, position))
        if slot is None and self.clock() - queue.at > GRACE:
            try:
                slot = await self._close(lane, band, position)  # allocated, never written?
            except InfraFabricError as exc:
                if not is_transient(exc):
                    raise
                # tidying the hand-out can do without this time: the slot stays unknown and is
                # read again by the next hand-out (an agent's next_task must not fail for it)
                log.debug("could not close %s/%s/%s: %s", lane, band, position, exc)
                return
        if slot is not None and position not in known:
            known[position] = (slot, math.inf if slot.dead or slot.task_id is None else 0.0)

    async def _read_lane(self, lane: str, fresh: bool) -> Versioned[Lane] | None:
        """A lane from the watched copy if kept (and not ``fresh``); else read,
        sharing the read with this process's other hand-outs that ask
        meanwhile: a read already in flight may be older than the ask (a task
        offered since would be missed), so those who ask while one is in
        flight share the next one, sent once it is back."""
        if self.lanes.following and not fresh:
            return await self.lanes.get(lane)
        batch = self._lane_next.get(lane)
        if batch is None:
            batch = self._lane_next[lane] = asyncio.get_running_loop().create_future()
            self._start(self._lane_batch(lane, batch))  # (awaited just below: never held back)
        await asyncio.wait([batch])
        return batch.result()

    async def _lane_batch(self, lane: str, batch: asyncio.Future[Versioned[Lane] | None]) -> None:
        before = self._lane_reading.get(lane)
        if before is not None:
            await asyncio.wait([before])
        if self._lane_next.get(lane) is batch:  # who asks from now on waits for the next one
            del self._lane_next[lane]
        self._lane_reading[lane] = batch
        try:
            batch.set_result(await self.lanes.get_exact(lane))
        except BaseException as exc:
            batch.set_exception(exc)
            batch.exception()  # retrieved: the askers raise it themselves
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if self._lane_reading.get(lane) is batch:
                del self._lane_reading[lane]

    async def _read_slot(self, slot_id: str) -> Slot | None:
        """Read a slot, sharing a read of it already in flight in this process
        when that finds it (a slot is written once: what any read finds is
        what a fresh one would, but for being marked dead since, which the
        claim attempt sees on the task). A shared read that finds nothing is
        not trusted (the slot may have been written since it was sent): this
        caller reads again."""
        shared = self._reading.get(slot_id)
        if shared is not None:
            try:  # (awaited bare: a wrapper per joiner costs more than the read; see below)
                slot = await shared
            except asyncio.CancelledError:
                if shared.cancelled() and not _cancelling():
                    slot = None  # the reader (or a joiner) was cancelled, not this caller
                else:
                    raise
            except Exception:  # the reader's failure is the reader's: read again
                slot = None
            if slot is not None:
                return slot
        mine: asyncio.Future[Slot | None] = asyncio.get_running_loop().create_future()
        self._reading[slot_id] = mine
        try:
            got = await self.slots.get(slot_id)
            value = got.value if got is not None else None
        except asyncio.CancelledError:
            if not mine.done():
                mine.cancel()
            raise
        except BaseException as exc:
            if not mine.done():  # (a joiner cancelled while it waited cancels the future itself)
                mine.set_exception(exc)
                mine.exception()  # retrieved: a joiner may never look
            raise
        finally:
            if self._reading.get(slot_id) is mine:
                del self._reading[slot_id]
        if not mine.done():
            mine.set_result(value)
        return value

    async def _close(self, lane: str, band: str, position: int) -> Slot | None:
        """Close an allocated slot its writer never wrote (a tombstone, created
        only if still absent); what is there if the writer got there first.
        A slot missing because a head moved past it (whoever moved it deleted
        it; this process's copy of the lane was behind) is dead, not
        unwritten: nothing is written there (a tombstone is never deleted)."""
        tomb = Slot(at=self.clock(), dead=True)
        current = await self.lanes.get_exact(lane)
        queue = current.value.bands.get(band) if current is not None else None
        if queue is not None and position < queue.head:
            return tomb  # (kept in this process only: the position is passed, and deleted)
        made = await self.slots.create(self.slot_id(lane, band, position), tomb)
        return tomb if made is not None else await self.slots.read(self.slot_id(lane, band, position))

    async def _move_head(self, read: Versioned[Lane], band: str, to: int, closed: Set[int]) -> None:
        """Move a band's head to ``to`` with one compare-and-swap on the lane
        as ``read`` (a lost one is left: whoever won moved it or allocated,
        and the next hand-out moves it), then delete the slots passed, except
        the ``closed`` ones (tombstones of slots never written)."""
        lane, queue = self.lanes.id_of(read.key), read.value.bands[band]
        if (lane, band) in self._moving:
            return  # another hand-out of this process is at it: one compare-and-swap is enough
        head = queue.head
        bands = {**read.value.bands, band: queue.model_copy(update={"head": to})}
        body = encode(read.value.model_copy(update={"bands": bands}), read.key)
        self._moving.add((lane, band))
        try:
            if await self.lanes.bus.update(read.key, body, read.revision) is None:
                return
        except InfraFabricError as exc:  # tidying: the next hand-out tries again
            log.debug("could not move the head of %s/%s: %s", lane, band, exc)
            return
        finally:
            self._moving.discard((lane, band))
        self.later(self._delete_slots([self.slot_id(lane, band, p) for p in range(head, to)
                                       if p not in closed]))

    async def _delete_slots(self, slot_ids: list[str]) -> None:
        try:
            await asyncio.gather(*(self.slots.delete(i) for i in slot_ids))
        except InfraFabricError as exc:  # behind the head: read by nobody, only not yet tidied
            log.debug("could not delete %d passed slots: %s", len(slot_ids), exc)

    def later(self, tidy: Coroutine[Any, Any, None]) -> None:
        """Run ``tidy`` without making the hand-out wait for it (what it does
        only spares later readers work); :meth:`settle` awaits it. Inside
        :meth:`holding`, it starts when the block ends."""
        held = _HELD.get()
        if held is not None and held.open:
            held.jobs.append(tidy)
        else:
            self._start(tidy)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Hold back the tidying asked for in this block (in this task) until
        it ends: a hand-out's claim goes first. An engine commits writes in
        turn, so a head move or a slot deletion sent just before the claim's
        compare-and-swap made the claim wait for it (a served hand-out on
        etcd took 2.1 ms for its swap against 1.2 ms for the engine's)."""
        held = _Held([])
        token = _HELD.set(held)
        try:
            yield
        finally:
            _HELD.reset(token)
            held.open = False
            for tidy in held.jobs:
                self._start(tidy)

    def _start(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(job)
        self._tidying.add(task)
        task.add_done_callback(self._tidying.discard)

    async def settle(self, within: float) -> None:
        """Let the tidying under way finish (at most ``within`` seconds): a
        process that ends leaves no passed slot undeleted if it can help it."""
        if self._tidying:
            await asyncio.wait(set(self._tidying), timeout=within)

    def not_live(self, offer: Offer, until: float = math.inf) -> None:
        """Note that ``offer``'s slot is not live until ``until`` (by default
        for good): this process's hand-outs pass over it meanwhile without
        reading it. Only a claim attempt's view of the task says so; the
        claim's lease expiry is when a lapse could make it live again. A slot
        passed over for a claim is read again after :data:`REREAD_AFTER`
        seconds at most: its winner will have marked it dead, and the head can
        move past it (else slots claimed by other processes would pile up in
        front of this one's hand-outs until they found nothing within
        :data:`MAX_WINDOWS`)."""
        if until != math.inf:  # claimed: its winner marks it dead in a moment; read it again then
            until = min(until, self.clock() + REREAD_AFTER)
        known = self._known.setdefault((offer.lane, offer.band), {})
        was = known.get(offer.position, (offer.slot, 0.0))[1]
        known[offer.position] = (offer.slot, max(was, until))

    def bury_later(self, offer: Offer) -> None:
        """:meth:`bury` without waiting for the write (this process's other
        hand-outs pass over the slot at once)."""
        self.not_live(offer)
        self.later(self.bury(offer))

    async def bury(self, offer: Offer) -> None:
        """Mark ``offer``'s slot dead: its task moved on (claimed from it,
        completed, failed, deleted, or offered again since)."""
        self.not_live(offer)
        try:
            await self.slots.put(self.slot_id(offer.lane, offer.band, offer.position),
                                 offer.slot.model_copy(update={"dead": True}))
        except InfraFabricError as exc:  # only the next hand-out's read is the dearer for it
            log.debug("could not mark %s/%s/%s dead: %s", offer.lane, offer.band, offer.position, exc)

    # -- checking ----------------------------------------------------------------------

    async def unindexed(self, board: Iterable[Task]) -> list[Task]:
        """The available tasks of ``board`` with no live slot at or after its
        band's head, in a listed lane, naming their ``ready_seq`` (with no
        transition in flight, none). Reads every lane and slot: for repairs and checks, never the
        hand-out."""
        live: set[tuple[str, int]] = set()
        directory = await self.directory.read() or Directory()
        lanes = {self.lanes.id_of(v.key): v.value for v in await self.lanes.list_exact()
                 if self.lanes.id_of(v.key) in directory.lanes}  # a lane not listed is not read
        for v in await self.slots.list():
            lane, band, position = self.slots.id_of(v.key).rsplit("/", 2)
            queue = lanes.get(lane, Lane()).bands.get(band)
            if queue is not None and queue.head <= int(position) < queue.tail and not v.value.dead \
                    and v.value.task_id is not None:
                live.add((v.value.task_id, v.value.seq))
        return [t for t in board if t.status is TaskStatus.AVAILABLE and (t.id, t.ready_seq) not in live]
