"""A long-lived coordinator's copy of the board, kept from its watch.

Why not a dict of :class:`Task` objects: a task decoded is a dozen objects
the cyclic garbage collector tracks (the model, its lists, sets and history),
and a full collection walks every one of them. With a 100,000-task board
that is 1.2 million objects and a pause of over a second, landing on
whichever hand-out is running at the time (it did: one served ``next_task``
of 1,036 ms in ``ifctl bench scale`` on etcd). Here each task is kept as the
bytes its record holds with the few fields the watcher decides on, in a tuple
of atoms (which the collector stops tracking), and decoded when asked for
(about 10 µs). Claimed tasks — at most one per working agent, and the ones
leases, guards and ``held_by`` look at — are also kept decoded.

The copy is a moment behind the bus: decide nothing that must be exact from
it (see ``IFCoordinator.live_board``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

from pydantic import ValidationError

from infrafabric.coordinator.leases import needs_lease
from infrafabric.coordinator.models import Task, TaskStatus

__all__ = ["BoardCopy", "Row"]


class Row(NamedTuple):
    """One task as the copy keeps it: its record's bytes and what the watcher
    decides on without decoding them. (Kept as a plain tuple of atoms, which
    the garbage collector untracks; a named tuple it would not.)"""

    raw: bytes
    #: the revision that wrote ``raw``; 0 once an undecodable later write was seen (never swap on it)
    revision: int
    status: str
    owner: str | None
    ready_seq: int
    #: claiming it takes a path lease (:func:`~infrafabric.coordinator.leases.needs_lease`)
    leased: bool


class BoardCopy(Mapping[str, Task]):
    """Task id → task, as last seen on the watch. Reading one task decodes it
    (claimed ones are kept decoded); iterating :meth:`values` decodes them
    all, so the scans a coordinator makes use :meth:`claimed`,
    :meth:`claimed_by` and :meth:`leased_available`, which decode only what
    they return."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[bytes, int, str, str | None, int, bool]] = {}
        self._claimed: dict[str, Task] = {}
        self._leased_available: set[str] = set()

    # -- keeping it --------------------------------------------------------------

    def put(self, task: Task, raw: bytes, revision: int) -> Row | None:
        """Keep ``task`` (decoded from ``raw``, written at ``revision``); the row it replaces."""
        before = self.row(task.id)
        leased = needs_lease(task)
        self._rows[task.id] = (bytes(raw), revision, task.status.value, task.owner, task.ready_seq, leased)
        if task.status is TaskStatus.CLAIMED:
            self._claimed[task.id] = task
        else:
            self._claimed.pop(task.id, None)
        if task.status is TaskStatus.AVAILABLE and leased:
            self._leased_available.add(task.id)
        else:
            self._leased_available.discard(task.id)
        return before

    def unsure(self, task_id: str) -> None:
        """A write to ``task_id`` did not decode: keep the last good copy for
        reading, but its revision is no longer the task's (a claim must not
        compare-and-swap on it)."""
        row = self._rows.get(task_id)
        if row is not None:
            self._rows[task_id] = (row[0], 0, row[2], row[3], row[4], row[5])

    def remove(self, task_id: str) -> None:
        """``task_id`` was deleted."""
        self._rows.pop(task_id, None)
        self._claimed.pop(task_id, None)
        self._leased_available.discard(task_id)

    # -- reading it --------------------------------------------------------------

    def row(self, task_id: str) -> Row | None:
        """What the copy knows of ``task_id`` without decoding it."""
        row = self._rows.get(task_id)
        return None if row is None else Row._make(row)

    def status(self, task_id: str) -> TaskStatus | None:
        row = self._rows.get(task_id)
        return None if row is None else TaskStatus(row[2])

    def revision(self, task_id: str) -> int | None:
        """The revision the copy of ``task_id`` was written at (None: unknown
        or unsure, see :meth:`unsure`)."""
        row = self._rows.get(task_id)
        return row[1] if row is not None and row[1] else None

    def __getitem__(self, task_id: str) -> Task:
        held = self._claimed.get(task_id)
        if held is not None:
            return held
        raw = self._rows[task_id][0]
        try:
            return Task.model_validate_json(raw)
        except ValidationError as exc:  # (only decodable bytes are kept: a model change under us)
            raise KeyError(task_id) from exc

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._rows))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._rows

    def claimed(self) -> dict[str, Task]:
        """The tasks the copy shows claimed (a lapsed lease still shows), by id."""
        return dict(self._claimed)

    def claimed_by(self, swarm_id: str) -> list[Task]:
        """The tasks the copy shows claimed by ``swarm_id`` (not those it
        completed: a completed task keeps its owner, and an agent that has
        done thousands must not have them all read back)."""
        return [t for t in list(self._claimed.values()) if t.owner == swarm_id]

    def leased_available(self) -> list[Task]:
        """The available tasks whose claim would take a path lease."""
        return [self[i] for i in sorted(self._leased_available) if i in self._rows]
