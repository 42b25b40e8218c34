"""Path leases: a claim holds its task's paths (and explicit branch) with it.

A task may declare the files it will touch (:attr:`TaskSpec.paths`, glob
patterns) and the branch its work goes on. Two claims whose patterns could
touch a common file (:func:`~infrafabric.coordinator.paths.overlap`), or
that name the same explicit branch, must never be held at once. The bus has
no transaction across keys, so the protocol that keeps the claim and its
path lease together is this:

1. **The lease first.** One record, ``workspace/leases``
   (:class:`PathLeaseTable`), holds every path lease; adding one is a single
   compare-and-swap that first looks at every entry it overlaps. The entry
   names the claim (``claim_id``) and the task's ``claim_seq`` it is taken at.
2. **Then the claim**, a compare-and-swap on the task that requires
   ``claim_seq`` to be unchanged and sets it to ``seq + 1``.

An entry *holds* only while its claim does (the task is claimed with its
``claim_id`` and the lease has not lapsed): path leases lapse with the claim,
and completing, failing or releasing the task ends them, whether or not the
entry is tidied away. A rival whose paths overlap an entry first only looks:
if any entry it overlaps holds, it is refused and touches nothing. Then it
settles each on its task, with a compare-and-swap there: a claim that landed
and lapsed is **ended** (as a lapse: counted, pushed), so a renewal its
holder had in flight loses its swap and the holder is told, rather than
reviving a claim whose paths have passed on; an entry whose task still has
``claim_seq == seq`` is a claim in flight, or one whose claimant died between
the two steps, and is **voided** by bumping the task's ``claim_seq``, after
which that claim can never land. So:

* a crash between the steps leaves neither: the task is not claimed, and the
  entry holds nothing (the next overlapping claimant voids and replaces it);
* two overlapping claims are never both held: whichever is written to the
  table second sees the first as held (and is refused) or ends or voids it
  (and the first's claim, or its renewal, fails); the last writer to the
  table wins a race, so claimants never void each other in turn forever;
* a claim whose write's outcome is unknown keeps its entry (it may hold);
* entries that hold nothing are swept before a full table refuses a claim.

Leases compare wall-clock times written by different machines: a claimant
whose clock runs ahead of the holder's ends the holder's claim early (the
holder is told at its next renewal); it never lets two hold. Keep clocks in
sync (NTP).

Readers that only look (``next_task`` skipping what is taken, ``--why``,
the guards) count an entry as held only when its claim is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from infrafabric.bus import EventBus
from infrafabric.bus.bounds import MAX_RECORD_BYTES
from infrafabric.bus.layout import WORKSPACE_LEASES
from infrafabric.bus.records import Records
from infrafabric.coordinator.models import PathLease, PathLeaseTable, Task, TaskStatus
from infrafabric.coordinator.paths import covering, first_overlap
from infrafabric.errors import InfraFabricError, InvalidStateError

__all__ = ["Conflict", "Holder", "PathLeases", "needs_lease"]

log = logging.getLogger(__name__)


def needs_lease(task: Task) -> bool:
    """Whether claiming ``task`` takes a path lease: it declares paths or an
    explicit branch (a default ``if/<task-id>`` branch is the task's alone)."""
    return bool(task.paths) or task.branch is not None


@dataclass(frozen=True)
class Conflict:
    """Why a claim's paths are not free: ``lease`` (held by its claim on
    ``task``) overlaps it, ``mine`` against ``theirs`` (both patterns, or both
    the branch), ``example`` a path both cover."""

    lease: PathLease
    task: Task
    mine: str
    theirs: str
    example: str
    now: float

    @property
    def reason(self) -> str:
        left = (self.task.lease_until or self.now) - self.now
        if not self.mine:  # the task's own claim, taken meanwhile
            return f"claimed by {self.lease.swarm_id} (lease {left:.1f} s left)"
        held = f"held by {self.lease.swarm_id} for task {self.lease.task_id}"
        if self.mine == self.theirs == self.example and self.lease.branch == self.mine:
            return f"branch {self.mine} is {held} (lease {left:.0f} s left)"
        if self.mine == self.theirs:
            return f"its path {self.mine} is {held} (e.g. {self.example}; lease {left:.0f} s left)"
        return (f"its path {self.mine} overlaps {self.theirs}, {held} (e.g. {self.example}; "
                f"lease {left:.0f} s left)")


@dataclass(frozen=True)
class Holder:
    """A live claim holding a path or a branch: who, for which task, by which pattern."""

    swarm_id: str
    task_id: str
    claim_id: str
    pattern: str
    branch: str

    def describe(self) -> str:
        return f"{self.swarm_id} (task {self.task_id}, by {self.pattern})"


class _Held(Exception):
    """Raised inside the table's compare-and-swap: an overlapping lease holds."""

    def __init__(self, conflict: Conflict) -> None:
        self.conflict = conflict


#: how many times :meth:`PathLeases._resolve` looks again at a task that keeps changing
RESOLVE_ROUNDS = 20


def _size(leases: dict[str, PathLease]) -> int:
    return len(PathLeaseTable(leases=leases).model_dump_json())


class PathLeases:
    """The path-lease table of one board. ``tasks`` is the coordinator's task
    store (a lease's liveness is its task's claim); ``clock`` its clock;
    ``expire`` ends a lapsed claim of a task (the coordinator's
    ``expire_lease``: one compare-and-swap, then what follows every
    transition), None if it did not apply."""

    def __init__(self, bus: EventBus, tasks: Records[Task], clock: Callable[[], float],
                 expire: Callable[[str], Awaitable[Task | None]]) -> None:
        self.table = Records(bus, WORKSPACE_LEASES, PathLeaseTable)
        self.tasks = tasks
        self.clock = clock
        self.expire = expire

    # -- what a lease is now ----------------------------------------------------------

    def holds(self, lease: PathLease, task: Task | None, now: float | None = None) -> bool:
        """The lease's claim is the task's current, unlapsed claim."""
        now = self.clock() if now is None else now
        return (task is not None and task.status is TaskStatus.CLAIMED and task.claim_id == lease.claim_id
                and (task.lease_until is None or now < task.lease_until))

    @staticmethod
    def clash(paths: Iterable[str], branch: str | None, lease: PathLease) -> tuple[str, str, str] | None:
        """(mine, theirs, example) if a claim of ``paths``/``branch`` overlaps ``lease``."""
        if branch is not None and branch == lease.branch:
            return branch, branch, branch
        return first_overlap(paths, lease.paths)

    @staticmethod
    def tasks_clash(a: Task, b: Task) -> bool:
        """Whether claims of ``a`` and ``b`` could not be held at once."""
        if a.branch is not None and a.branch == b.branch:
            return True
        return first_overlap(a.paths, b.paths) is not None

    # -- the claim's side ---------------------------------------------------------------

    async def take(self, task: Task, swarm_id: str, claim_id: str) -> PathLease | Conflict:
        """Write ``claim_id``'s lease on ``task``'s paths, at the task's current
        ``claim_seq``; or the :class:`Conflict` with a held one (nothing written
        then). The claim must then land with ``claim_seq == lease.seq`` (see
        the module docs); the returned lease's ``seq`` may be past
        ``task.claim_seq`` when this call ended an earlier claim of the task.

        Entries it overlaps are first only looked at: if one holds, the claim
        is refused and nothing is voided. Then each is settled on its task
        (:meth:`_resolve`): a lapsed claim is ended there and then (so its
        holder's renewal cannot revive it), a claim in flight or dead before
        landing is voided. A table that would be too large is swept of every
        entry that holds nothing before the claim is refused as full."""
        taken: PathLease | None = None

        async def step(current: PathLeaseTable | None) -> PathLeaseTable:
            nonlocal taken
            leases = dict(current.leases) if current is not None else {}
            seq = task.claim_seq
            now = self.clock()
            clashing: list[tuple[PathLease, tuple[str, str, str]]] = []
            for other_id, other in leases.items():
                clash = ("", "", "") if other_id == task.id else self.clash(task.paths, task.branch, other)
                if clash is not None:
                    clashing.append((other, clash))
            # look before voiding anything: a claim refused anyway must not cost an in-flight one its turn
            for other, clash in clashing:
                other_task = await self.tasks.read(other.task_id)
                if self.holds(other, other_task, now):
                    assert other_task is not None
                    raise _Held(Conflict(other, other_task, *clash, now))
            for other, clash in clashing:
                state, other_task = await self._resolve(other)
                if state == "held":  # renewed or landed meanwhile
                    assert other_task is not None
                    raise _Held(Conflict(other, other_task, *clash, self.clock()))
                if other.task_id == task.id and other_task is not None:
                    seq = other_task.claim_seq  # ended or voided just now: the claim lands at the new value
                del leases[other.task_id]
            taken = PathLease(task_id=task.id, swarm_id=swarm_id, claim_id=claim_id, seq=seq,
                              paths=list(task.paths), branch=task.branch, taken_at=now)
            leases[task.id] = taken
            if _size(leases) > MAX_RECORD_BYTES:
                for other in [e for e in leases.values() if e.task_id != task.id]:
                    if (await self._resolve(other))[0] == "dead":
                        del leases[other.task_id]  # held nothing: room for the living
            if _size(leases) > MAX_RECORD_BYTES:
                raise InvalidStateError(
                    f"claim {task.id}: the path-lease table is full ({len(leases) - 1} claims hold paths, "
                    f"{MAX_RECORD_BYTES:,} bytes in all)",
                    hint="declare fewer or shorter path patterns per task, or let claims finish")
            return PathLeaseTable(leases=leases)

        # A corrupt table is refused, never replaced: replacing it would forget leases that hold.
        # No turn-taking: ending a lapsed claim inside the step tidies that claim's entry away
        # (a nested update of this record), and a claimant that would lose must hear so at once.
        try:
            await self.table.mutate("", step, take_turns=False)
        except _Held as held:
            return held.conflict
        assert taken is not None
        return taken

    async def _resolve(self, lease: PathLease) -> tuple[str, Task | None]:
        """("held" | "dead", the task as it is now). A lease whose claim
        landed and lapsed is ended on its task (:attr:`expire`: one
        compare-and-swap, so a renewal in flight loses and its holder is told);
        one whose claim is in flight or died before landing is voided (its
        claim can then never land)."""
        task: Task | None = None
        for _ in range(RESOLVE_ROUNDS):
            task = await self.tasks.read(lease.task_id)
            if task is None:
                return "dead", None
            if self.holds(lease, task):
                return "held", task
            if task.status is TaskStatus.CLAIMED and task.claim_id == lease.claim_id:
                ended = await self.expire(task.id)  # lapsed: end it where a heartbeat would see it
                if ended is None:
                    continue  # renewed (or ended) meanwhile: look again
                return "dead", ended
            if task.claim_seq != lease.seq:
                return "dead", task  # its claim landed and ended, or it was voided already
            outcome = "dead"

            def void(current: Task | None) -> Task | None:
                nonlocal outcome
                outcome = "dead"
                if current is not None and current.claim_id == lease.claim_id:
                    outcome = "again"  # it landed meanwhile (and may have lapsed already): look again
                    return None
                if current is None or current.claim_seq != lease.seq:
                    return None
                return current.model_copy(update={"claim_seq": lease.seq + 1})

            written = await self.tasks.mutate(lease.task_id, void)
            if outcome == "again":
                continue
            return "dead", None if written is None else written.value
        # the task kept changing under us: count the lease as held (the claim is refused, never doubled)
        return "held", task

    async def drop(self, task_id: str, claim_id: str | None) -> None:
        """Remove the entry of ``task_id``'s claim ``claim_id`` (any claim of it
        when None). Tidying only: an entry whose claim ended holds nothing.
        Failures are logged, never raised: the transition that ended the claim
        has happened."""
        def step(current: PathLeaseTable | None) -> PathLeaseTable | None:
            if current is None or task_id not in current.leases:
                return None
            if claim_id is not None and current.leases[task_id].claim_id != claim_id:
                return None
            leases = dict(current.leases)
            del leases[task_id]
            return PathLeaseTable(leases=leases)

        try:
            await self.table.mutate("", step)
        except InfraFabricError as exc:
            log.warning("could not tidy the path lease of %s away (it holds nothing now): %s",
                        task_id, exc.message)

    # -- readers ------------------------------------------------------------------------

    async def held(self, board: Mapping[str, Task] | None = None) -> list[tuple[PathLease, Task]]:
        """The leases that hold now, with their tasks. ``board`` (the
        coordinator's live board) saves reading the tasks; without it each
        lease's task is read."""
        table = await self.table.read()
        if table is None:
            return []
        now = self.clock()
        out = []
        for lease in table.leases.values():
            task = board.get(lease.task_id) if board is not None else await self.tasks.read(lease.task_id)
            if task is not None and self.holds(lease, task, now):
                out.append((lease, task))
        return out

    def conflict(self, task: Task, held: list[tuple[PathLease, Task]]) -> Conflict | None:
        """The first lease in ``held`` (another task's) that ``task``'s paths clash with."""
        now = self.clock()
        for lease, other in held:
            if lease.task_id == task.id:
                continue
            clash = self.clash(task.paths, task.branch, lease)
            if clash is not None:
                return Conflict(lease, other, *clash, now)
        return None

    @staticmethod
    def holder_of(path: str, held: list[tuple[PathLease, Task]]) -> Holder | None:
        """The live claim whose paths cover ``path`` (repository-relative), if any."""
        for lease, task in held:
            pattern = covering(lease.paths, path)
            if pattern is not None:
                return Holder(lease.swarm_id, lease.task_id, lease.claim_id, pattern, task.work_branch)
        return None
